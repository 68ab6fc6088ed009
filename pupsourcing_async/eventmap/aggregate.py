"""Aggregate roots that record typed events, and a repository that stores them.

```python
class Order(AggregateRoot):
    bounded_context = "Shop"            # aggregate_type defaults to the class name

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = "new"

    def pay(self, amount: Decimal) -> None:            # a command: check, then record
        if self.status != "created":
            raise ValueError("only a created order can be paid")
        self.record(OrderPaid(amount=amount))

    def apply_order_created(self, event: OrderCreated) -> None:   # apply_<snake type>
        self.status = "created"

    def apply_order_paid(self, event: OrderPaid) -> None:
        self.status = "paid"

orders = AggregateRepository(db.store, registry, Order)
async with db.transaction() as tx:
    order = await orders.load(tx, "order-1")
    order.pay(Decimal("9.90"))
    await orders.save(tx, order)        # appends at Exact(version as loaded)
```

Instead of ``apply_<snake_type>`` methods an aggregate may override :meth:`AggregateRoot.apply`
and ``match`` on the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

from .. import es
from ..store import EventStore
from ._naming import snake_case
from .registry import EventRegistry

__all__ = ["AggregateRepository", "AggregateRoot"]


class AggregateRoot:
    """The base of an event-sourced aggregate: state changes only by applying events.

    Commands check the current state and call :meth:`record`; :meth:`apply` changes the
    state and is also what replaying the stored events runs, so the two never disagree.

    Attributes:
        bounded_context: The aggregate's bounded context; every subclass sets it.
        aggregate_type: The stored aggregate type; the class name unless set.
    """

    bounded_context: ClassVar[str]
    aggregate_type: ClassVar[str]

    # Event class -> name of the method that applies it, per aggregate class.
    _appliers: ClassVar[dict[type[Any], str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "aggregate_type" not in cls.__dict__:
            cls.aggregate_type = cls.__name__
        cls._appliers = {}

    def __init__(self, aggregate_id: str) -> None:
        if not isinstance(aggregate_id, str) or not aggregate_id:
            raise ValueError(f"aggregate_id must be a non-empty string, got {aggregate_id!r}")
        self._aggregate_id = aggregate_id
        self._version = 0
        self._pending: list[object] = []

    @property
    def aggregate_id(self) -> str:
        """The aggregate's id."""
        return self._aggregate_id

    @property
    def version(self) -> int:
        """The version of the last stored event applied: 0 for a new aggregate."""
        return self._version

    @property
    def pending_events(self) -> tuple[object, ...]:
        """The events recorded since the aggregate was loaded or saved, oldest first."""
        return tuple(self._pending)

    def record(self, event: object) -> None:
        """Apply a new event and keep it for the next save."""
        self.apply(event)
        self._pending.append(event)

    def apply(self, event: object) -> None:
        """Change the state by one event: calls ``apply_<snake_case(class name)>(event)``.

        Override it to ``match`` on the event instead.

        Raises:
            TypeError: the aggregate has no method for the event's class.
        """
        cls = type(event)
        name = self._appliers.get(cls)
        if name is None:
            name = f"apply_{snake_case(cls.__name__)}"
            if not callable(getattr(self, name, None)):
                raise TypeError(
                    f"{type(self).__name__} cannot apply {cls.__name__}: define {name}(event) "
                    "or override apply()"
                )
            self._appliers[cls] = name
        getattr(self, name)(event)

    def replay(self, events: Iterable[object], *, version: int) -> None:
        """Apply stored events, then take ``version`` as the stored version.

        Repositories call this when loading; it records nothing.
        """
        for event in events:
            self.apply(event)
        self._version = version

    def mark_saved(self, version: int) -> None:
        """Forget the pending events, now stored, and take the version the store gave."""
        self._pending.clear()
        self._version = version

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._aggregate_id} v{self._version}>"


A = TypeVar("A", bound=AggregateRoot)


class AggregateRepository(Generic[A]):
    """Loads aggregates by replaying their streams and saves their new events.

    Saving appends with ``Exact(version as loaded)``: if another writer appended since,
    the store raises ``OptimisticConcurrencyError`` and nothing is written; roll back,
    load again and retry the command.

    Args:
        store: The event store (``db.store``).
        registry: Maps the aggregate's event classes.
        aggregate_class: The aggregate; it is built as ``aggregate_class(aggregate_id)``.
        latest: Replay old event versions upcast to the newest (the default), so the
            aggregate only needs ``apply`` methods for the newest classes.
    """

    def __init__(
        self,
        store: EventStore[Any],
        registry: EventRegistry,
        aggregate_class: type[A],
        *,
        latest: bool = True,
    ) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, AggregateRoot)):
            raise TypeError(f"aggregate_class must subclass AggregateRoot, got {aggregate_class!r}")
        if not isinstance(getattr(aggregate_class, "bounded_context", None), str):
            raise TypeError(f"{aggregate_class.__name__} must set the bounded_context attribute")
        self._store = store
        self._registry = registry
        self._aggregate_class = aggregate_class
        self._latest = latest

    async def load(self, tx: Any, aggregate_id: str) -> A:
        """The aggregate as its stored events leave it; a new one (version 0) if none.

        Raises:
            EventMappingError: a stored event cannot be decoded.
        """
        cls = self._aggregate_class
        aggregate = cls(aggregate_id)
        stream = await self._store.read_aggregate_stream(
            tx, cls.bounded_context, cls.aggregate_type, aggregate_id
        )
        events = self._registry.from_events(stream.events, latest=self._latest)
        aggregate.replay(events, version=stream.version)
        return aggregate

    async def save(
        self,
        tx: Any,
        aggregate: A,
        *,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        metadata: bytes | Mapping[str, Any] | None = None,
        event_ids: Iterable[uuid.UUID] | None = None,
        created_at: datetime | None = None,
    ) -> es.AppendResult | None:
        """Append the aggregate's pending events at ``Exact(aggregate.version)``.

        Returns the append's result, or ``None`` when nothing was pending.

        The aggregate counts as saved once the append returns: if the transaction rolls
        back afterwards, load the aggregate again.

        Raises:
            OptimisticConcurrencyError: another writer appended since the aggregate was
                loaded; the pending events are kept.
        """
        if not aggregate.pending_events:
            return None
        events = self._registry.to_events(
            aggregate.bounded_context,
            aggregate.aggregate_type,
            aggregate.aggregate_id,
            aggregate.pending_events,
            causation_id=causation_id,
            correlation_id=correlation_id,
            trace_id=trace_id,
            metadata=metadata,
            event_ids=event_ids,
            created_at=created_at,
        )
        result = await self._store.append(tx, es.Exact(aggregate.version), events)
        aggregate.mark_saved(result.to_version)
        return result
