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

An aggregate with a long history can opt in to snapshots by subclassing
:class:`SnapshotAggregate` with a state dataclass; the repository then restores the newest
snapshot and replays only the events after it, and with ``snapshot_every=N`` takes a new
snapshot in the transaction of the save that brings N events past the last one::

    @dataclass(frozen=True)
    class OrderState:
        status: str

    class Order(SnapshotAggregate[OrderState]):
        bounded_context = "Shop"
        snapshot_schema_version = 1     # bump it when the state's meaning changes

        def snapshot_state(self) -> OrderState:
            return OrderState(self.status)

        def restore_snapshot(self, state: OrderState) -> None:
            self.status = state.status

    orders = AggregateRepository(db.store, registry, Order, snapshot_every=100)
"""

from __future__ import annotations

import typing
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar, cast

from .. import es
from ..log import get_logger
from ..snapshots import Snapshot, SnapshotStore, check_schema_version
from ..store import EventStore
from . import codec
from ._naming import snake_case
from .registry import EventRegistry

__all__ = ["AggregateRepository", "AggregateRoot", "SnapshotAggregate"]


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


S = TypeVar("S")


class SnapshotAggregate(AggregateRoot, Generic[S]):
    """An aggregate whose state can be stored as a snapshot and restored from one.

    Name the state dataclass as the type argument (``SnapshotAggregate[OrderState]``) and
    define :meth:`snapshot_state` and :meth:`restore_snapshot`. The state is stored as
    JSON by the event codec, so it takes the field types an event takes; the class is
    checked when the aggregate class is defined.

    Evolving the state: a field added with a default reads old snapshots, taking the
    default. Whenever a snapshot written by the old code would restore a different state
    than replaying the events gives under the new code (a new field derived from past
    events, a field whose meaning changed, an ``apply`` method that now does more), bump
    :attr:`snapshot_schema_version`: snapshots of other versions are ignored and the
    aggregate is rebuilt from its events, then snapshotted anew. A snapshot is never
    converted from an older version, since the old state may lack what only the events
    hold.

    Attributes:
        snapshot_class: The state dataclass; the type argument unless set.
        snapshot_type: Stored with each snapshot, and checked on loading; the state
            class's name unless set.
        snapshot_schema_version: The state format this class writes, and the only one it
            reads; 1 unless set.
    """

    snapshot_class: ClassVar[type[Any]]
    snapshot_type: ClassVar[str]
    snapshot_schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        state = cls.__dict__.get("snapshot_class") or _state_argument(cls)
        if state is not None:
            if not isinstance(state, type):
                raise TypeError(f"{cls.__name__}.snapshot_class must be a dataclass, got {state!r}")
            try:
                codec.check_event_class(state)
            except TypeError as err:
                raise TypeError(f"{cls.__name__} cannot snapshot its state: {err}") from None
            cls.snapshot_class = state
            if "snapshot_type" not in cls.__dict__:
                cls.snapshot_type = state.__name__
        if "snapshot_type" in cls.__dict__:
            name = cls.snapshot_type
            if not isinstance(name, str) or not name or len(name) > es.MAX_TEXT_LENGTH:
                raise TypeError(
                    f"{cls.__name__}.snapshot_type must be a non-empty string of at most "
                    f"{es.MAX_TEXT_LENGTH} characters, got {name!r}"
                )
        check_schema_version(cls.snapshot_schema_version, f"{cls.__name__}.snapshot_schema_version")

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self._snapshot_version = 0

    @property
    def snapshot_version(self) -> int:
        """The version of the snapshot the aggregate was loaded from or last saved with;
        0 when there is none."""
        return self._snapshot_version

    def snapshot_state(self) -> S:
        """The current state, as an instance of :attr:`snapshot_class`."""
        raise NotImplementedError(f"{type(self).__name__} must define snapshot_state()")

    def restore_snapshot(self, state: S) -> None:
        """Take ``state`` (what :meth:`snapshot_state` returned) as the current state.

        It is called on a new instance, right after ``__init__``; the repository then
        applies the events stored after the snapshot.
        """
        raise NotImplementedError(f"{type(self).__name__} must define restore_snapshot()")


def _state_argument(cls: type[Any]) -> type[Any] | None:
    """The state class given as the type argument of ``SnapshotAggregate[...]``, if any."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = typing.get_origin(base)
        if isinstance(origin, type) and issubclass(origin, SnapshotAggregate):
            arguments = typing.get_args(base)
            if arguments and not isinstance(arguments[0], TypeVar):
                state: type[Any] = arguments[0]
                return state
    return None


A = TypeVar("A", bound=AggregateRoot)


class AggregateRepository(Generic[A]):
    """Loads aggregates by replaying their streams and saves their new events.

    Saving appends with ``Exact(version as loaded)``: if another writer appended since,
    the store raises ``OptimisticConcurrencyError`` and nothing is written; roll back,
    load again and retry the command.

    For a :class:`SnapshotAggregate`, loading restores the aggregate's snapshot of its
    ``snapshot_schema_version`` and replays only the events after it. A snapshot of
    another type, or one that cannot be decoded or restored, is ignored (with a log
    line) and every event is replayed: a snapshot can make a load faster, never wrong.

    With ``snapshot_every=N`` a save also writes a snapshot, in the save's transaction,
    once the aggregate is N or more events past its last snapshot: it commits or rolls
    back with the events it follows, so a snapshot never holds a state the log does not
    (one written afterwards could outlive a rolled-back append). The price is one more
    statement in the saves that take one, and the state is encoded before anything is
    written, so a state that cannot be encoded fails the save with nothing written.

    Args:
        store: The event store (``db.store``).
        registry: Maps the aggregate's event classes.
        aggregate_class: The aggregate; it is built as ``aggregate_class(aggregate_id)``.
        latest: Replay old event versions upcast to the newest (the default), so the
            aggregate only needs ``apply`` methods for the newest classes.
        snapshot_every: Take a snapshot when a save brings the aggregate this many events
            (1 or more) past its last snapshot; ``None`` (the default) takes none, but
            loads still use the snapshots there are.
        snapshots: Where snapshots are kept; ``store.snapshots`` unless given.

    Raises:
        TypeError: ``aggregate_class`` is not an aggregate, or asks for snapshots it
            cannot take; ``snapshot_every`` is not an int.
        ValueError: ``snapshot_every`` is below 1.
    """

    def __init__(
        self,
        store: EventStore[Any],
        registry: EventRegistry,
        aggregate_class: type[A],
        *,
        latest: bool = True,
        snapshot_every: int | None = None,
        snapshots: SnapshotStore[Any] | None = None,
    ) -> None:
        if not (isinstance(aggregate_class, type) and issubclass(aggregate_class, AggregateRoot)):
            raise TypeError(f"aggregate_class must subclass AggregateRoot, got {aggregate_class!r}")
        if not isinstance(getattr(aggregate_class, "bounded_context", None), str):
            raise TypeError(f"{aggregate_class.__name__} must set the bounded_context attribute")
        if snapshot_every is not None:
            if type(snapshot_every) is not int:
                raise TypeError(
                    f"snapshot_every must be an int or None, got {type(snapshot_every).__name__}"
                )
            if snapshot_every < 1:
                raise ValueError(
                    "snapshot_every must be 1 or more (events between snapshots), "
                    f"got {snapshot_every}"
                )
        self._store = store
        self._registry = registry
        self._aggregate_class = aggregate_class
        self._latest = latest
        self._snapshot_every = snapshot_every
        self._snapshots: SnapshotStore[Any] | None = None
        config = getattr(store, "config", None)
        self._log = get_logger(getattr(config, "logger", None), "pupsourcing_async.eventmap")
        if issubclass(aggregate_class, SnapshotAggregate):
            _check_snapshot_class(aggregate_class)
            found = snapshots if snapshots is not None else getattr(store, "snapshots", None)
            if found is None:
                raise TypeError(
                    f"{type(store).__name__} keeps no snapshots (no store.snapshots): pass "
                    "snapshots=, or use a store made by this library"
                )
            self._snapshots = found
        elif snapshot_every is not None or snapshots is not None:
            raise TypeError(
                f"{aggregate_class.__name__} takes no snapshots: subclass SnapshotAggregate "
                "to use snapshot_every or snapshots"
            )

    async def load(self, tx: Any, aggregate_id: str, *, use_snapshot: bool = True) -> A:
        """The aggregate as its stored events leave it; a new one (version 0) if none.

        Args:
            tx: The transaction to read in.
            aggregate_id: The aggregate's id.
            use_snapshot: Start from the aggregate's snapshot, if it has a usable one;
                with ``False`` every event is replayed (to check a snapshot, say).

        Raises:
            EventMappingError: a stored event cannot be decoded.
        """
        cls = self._aggregate_class
        aggregate = cls(aggregate_id)
        start = 0
        if use_snapshot and self._snapshots is not None:
            restored = await self._restore(tx, self._snapshots, aggregate_id)
            if restored is not None:
                aggregate, start = restored
        # The snapshot is read first: the events read next, in a statement that sees at
        # least what that one saw, include every version after it.
        stream = await self._store.read_aggregate_stream(
            tx,
            cls.bounded_context,
            cls.aggregate_type,
            aggregate_id,
            from_version=start + 1 if start else None,
        )
        events = self._registry.from_events(stream.events, latest=self._latest)
        aggregate.replay(events, version=stream.version if stream.events else start)
        if isinstance(aggregate, SnapshotAggregate):
            aggregate._snapshot_version = start
        return aggregate

    async def _restore(
        self, tx: Any, snapshots: SnapshotStore[Any], aggregate_id: str
    ) -> tuple[A, int] | None:
        """A new aggregate with the state of its usable snapshot, and that snapshot's
        version; ``None`` when there is none."""
        cls = cast("type[SnapshotAggregate[Any]]", self._aggregate_class)
        where = f"{cls.bounded_context}/{cls.aggregate_type}/{aggregate_id}"
        snapshot = await snapshots.load(
            tx, cls.bounded_context, cls.aggregate_type, aggregate_id, cls.snapshot_schema_version
        )
        if snapshot is None:
            return None
        if snapshot.snapshot_type != cls.snapshot_type:
            self._log.info(
                "ignoring a snapshot of another type; replaying every event",
                aggregate=where,
                snapshot_type=snapshot.snapshot_type,
                expected=cls.snapshot_type,
            )
            return None
        aggregate = cls(aggregate_id)
        try:
            aggregate.restore_snapshot(codec.decode_payload(cls.snapshot_class, snapshot.payload))
        except Exception as err:  # the events are the truth: fall back to them
            self._log.error(
                "ignoring a snapshot that cannot be restored; replaying every event",
                aggregate=where,
                aggregate_version=snapshot.aggregate_version,
                schema_version=snapshot.schema_version,
                error=f"{type(err).__name__}: {err}",
            )
            return None
        return cast("A", aggregate), snapshot.aggregate_version

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
        """Append the aggregate's pending events at ``Exact(aggregate.version)``, and take
        a snapshot if one is due (see ``snapshot_every``).

        Returns the append's result, or ``None`` when nothing was pending.

        The aggregate counts as saved once this returns: if the transaction rolls back
        afterwards, load the aggregate again. If it raises, the pending events are kept;
        roll the transaction back.

        Raises:
            OptimisticConcurrencyError: another writer appended since the aggregate was
                loaded.
            TypeError: ``aggregate`` is not of this repository's class, or its
                ``snapshot_state()`` returned something else than its state class.
            ValueError: the state has a value with no JSON form (a naive datetime).
        """
        if not isinstance(aggregate, self._aggregate_class):
            raise TypeError(
                f"this repository saves {self._aggregate_class.__name__} aggregates, "
                f"got {type(aggregate).__name__}"
            )
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
        state = self._due_state(aggregate, aggregate.version + len(events))
        result = await self._store.append(tx, es.Exact(aggregate.version), events)
        if state is not None and self._snapshots is not None:
            cls = cast("type[SnapshotAggregate[Any]]", type(aggregate))
            await self._snapshots.save(
                tx,
                Snapshot(
                    aggregate.bounded_context,
                    aggregate.aggregate_type,
                    aggregate.aggregate_id,
                    result.to_version,
                    cls.snapshot_type,
                    cls.snapshot_schema_version,
                    state,
                ),
            )
        aggregate.mark_saved(result.to_version)
        if state is not None and isinstance(aggregate, SnapshotAggregate):
            aggregate._snapshot_version = result.to_version
        return result

    def _due_state(self, aggregate: A, version: int) -> bytes | None:
        """The encoded state if a snapshot is due at ``version``, else ``None``."""
        every = self._snapshot_every
        if every is None or not isinstance(aggregate, SnapshotAggregate):
            return None
        if version - aggregate.snapshot_version < every:
            return None
        state = aggregate.snapshot_state()
        expected = type(aggregate).snapshot_class
        if type(state) is not expected:
            raise TypeError(
                f"{type(aggregate).__name__}.snapshot_state() must return a "
                f"{expected.__name__}, got {type(state).__name__}"
            )
        return codec.encode_payload(state)


def _check_snapshot_class(cls: type[SnapshotAggregate[Any]]) -> None:
    if getattr(cls, "snapshot_class", None) is None:
        raise TypeError(
            f"{cls.__name__} names no state class: subclass SnapshotAggregate[YourState] "
            "or set snapshot_class"
        )
    for method in ("snapshot_state", "restore_snapshot"):
        if getattr(cls, method) is getattr(SnapshotAggregate, method):
            raise TypeError(f"{cls.__name__} must define {method}() to take snapshots")
