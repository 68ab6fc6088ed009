"""The event registry: which dataclass is which ``(event_type, event_version)``.

```python
registry = EventRegistry()

@registry.register                                  # OrderCreated, version 1
@dataclass(frozen=True)
class OrderCreated:
    order_id: str

registry.register(OrderCreatedV2, event_type="OrderCreated", event_version=2)
registry.register_upcaster("OrderCreated", 1, upcast_order_created_v1_to_v2)

events = registry.to_events("Shop", "Order", "o-1", [OrderCreatedV2("o-1", "EUR")])
domain = registry.from_events(stream)               # each as its stored version
newest = registry.from_events(stream, latest=True)  # old versions upcast to the newest
```
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, overload

from .. import es
from ..errors import EventMappingError
from . import codec
from .upcasting import Upcaster, UpcasterChain

__all__ = ["DecodeProblem", "EventRegistry", "EventSpec"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One registered event class.

    Attributes:
        event_type: The stored event type, by default the class name.
        event_version: The stored schema version, 1 or more.
        cls: The dataclass whose instances are this event.
    """

    event_type: str
    event_version: int
    cls: type[Any]


@dataclass(frozen=True, slots=True)
class DecodeProblem:
    """A stored ``(event_type, event_version)`` pair that a registry cannot decode.

    Attributes:
        event_type: The stored event type.
        event_version: The stored version.
        reason: Why it cannot be decoded, in one sentence.
    """

    event_type: str
    event_version: int
    reason: str

    def __str__(self) -> str:
        return f"{self.event_type} v{self.event_version}: {self.reason}"


class EventRegistry:
    """Maps event dataclasses to ``es.Event`` values and back.

    Register each class with its event type (default: the class name) and version
    (default 1). Payloads are JSON (see :mod:`pupsourcing_async.eventmap.codec`); a class is
    checked when it is registered, so an unsupported field type fails at import time, not
    at the first write.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, int], EventSpec] = {}
        self._by_class: dict[type[Any], EventSpec] = {}
        self._latest: dict[str, int] = {}
        self._upcasters = UpcasterChain()

    # --- registration ---------------------------------------------------------------

    @overload
    def register(
        self, cls: type[T], /, *, event_type: str | None = None, event_version: int = 1
    ) -> type[T]: ...

    @overload
    def register(
        self, cls: None = None, /, *, event_type: str | None = None, event_version: int = 1
    ) -> Callable[[type[T]], type[T]]: ...

    def register(
        self,
        cls: type[T] | None = None,
        /,
        *,
        event_type: str | None = None,
        event_version: int = 1,
    ) -> type[T] | Callable[[type[T]], type[T]]:
        """Register dataclass ``cls`` as ``(event_type, event_version)``; returns ``cls``.

        Use it as a call, a bare decorator or a decorator with arguments
        (``@registry.register(event_version=2)``).

        Raises:
            TypeError: ``cls`` is not a dataclass, or a field's type cannot be stored as JSON.
            ValueError: ``event_type`` is empty, ``event_version`` is below 1, the pair is
                registered to another class, or ``cls`` is registered under another pair.
        """
        if cls is None:

            def decorator(target: type[T]) -> type[T]:
                return self.register(target, event_type=event_type, event_version=event_version)

            return decorator
        if not isinstance(cls, type):
            raise TypeError(f"register() takes a dataclass, got {cls!r}")
        name = cls.__name__ if event_type is None else event_type
        if not isinstance(name, str) or not name or name != name.strip():
            raise ValueError(f"event_type must be a non-empty string, got {name!r}")
        if type(event_version) is not int or not 1 <= event_version <= es.MAX_EVENT_VERSION:
            raise ValueError(
                f"event_version must be an int from 1 to {es.MAX_EVENT_VERSION}, "
                f"got {event_version!r}"
            )
        codec.check_event_class(cls)
        spec = EventSpec(name, event_version, cls)
        taken = self._by_key.get((name, event_version))
        if taken is not None and taken.cls is not cls:
            raise ValueError(
                f"{name} v{event_version} is already registered to {_qualified(taken.cls)}; "
                f"cannot register {_qualified(cls)} too"
            )
        known = self._by_class.get(cls)
        if known is not None and known != spec:
            raise ValueError(
                f"{_qualified(cls)} is already registered as {known.event_type} "
                f"v{known.event_version}; a class maps to one (type, version)"
            )
        self._by_key[(name, event_version)] = spec
        self._by_class[cls] = spec
        self._latest[name] = max(event_version, self._latest.get(name, 0))
        return cls

    @overload
    def register_upcaster(
        self, event_type: str, from_version: int, upcaster: Upcaster
    ) -> Upcaster: ...

    @overload
    def register_upcaster(
        self, event_type: str, from_version: int, upcaster: None = None
    ) -> Callable[[Upcaster], Upcaster]: ...

    def register_upcaster(
        self, event_type: str, from_version: int, upcaster: Upcaster | None = None
    ) -> Upcaster | Callable[[Upcaster], Upcaster]:
        """Register the upcaster from ``event_type`` v``from_version`` to the next version.

        Use it as a call or, without ``upcaster``, as a decorator. Returns the upcaster.

        Raises:
            ValueError: ``from_version`` is below 1, or that step already has an upcaster.
            TypeError: ``upcaster`` is not callable.
        """
        if upcaster is None:

            def decorator(target: Upcaster) -> Upcaster:
                return self.register_upcaster(event_type, from_version, target)

            return decorator
        self._upcasters.add(event_type, from_version, upcaster)
        return upcaster

    # --- what is registered ---------------------------------------------------------

    @property
    def specs(self) -> tuple[EventSpec, ...]:
        """Every registered class, sorted by event type and version."""
        return tuple(self._by_key[key] for key in sorted(self._by_key))

    @property
    def upcasters(self) -> UpcasterChain:
        """The registered upcasters."""
        return self._upcasters

    def __contains__(self, key: object) -> bool:
        """Whether ``(event_type, event_version)`` has a registered class."""
        return key in self._by_key

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self._by_key)

    def spec_of(self, event: object) -> EventSpec:
        """The registration of an event instance (or of an event class).

        Raises:
            EventMappingError: its class is not registered.
        """
        cls = event if isinstance(event, type) else type(event)
        spec = self._by_class.get(cls)
        if spec is None:
            raise EventMappingError(
                f"{_qualified(cls)} is not a registered event class: register it with "
                "EventRegistry.register()",
                event_type=cls.__name__,
                event_version=None,
            )
        return spec

    def event_type_of(self, event: object) -> str:
        """The event type an event instance is stored as.

        Raises:
            EventMappingError: its class is not registered.
        """
        return self.spec_of(event).event_type

    def latest_version(self, event_type: str) -> int:
        """The newest registered version of ``event_type``.

        Raises:
            EventMappingError: no class is registered for ``event_type``.
        """
        latest = self._latest.get(event_type)
        if latest is None:
            raise self._unknown_type(event_type, None)
        return latest

    # --- encoding -------------------------------------------------------------------

    def to_event(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        event: object,
        *,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        metadata: bytes | Mapping[str, Any] | None = None,
        event_id: uuid.UUID | None = None,
        created_at: datetime | None = None,
    ) -> es.Event:
        """An ``es.Event`` for one domain event: JSON payload, its registered type and
        version, a new event id and the current time unless given.

        Args:
            bounded_context: The aggregate's bounded context.
            aggregate_type: The aggregate's type.
            aggregate_id: The aggregate's id.
            event: An instance of a registered dataclass.
            causation_id: Id of the command or event that caused this one.
            correlation_id: Id shared by every event of one business flow.
            trace_id: Distributed-tracing id.
            metadata: JSON bytes, or a mapping that is encoded as JSON with sorted keys.
            event_id: The event's id; a new UUID 4 when omitted.
            created_at: When it happened (timezone-aware); now, in UTC, when omitted.

        Raises:
            EventMappingError: the event's class is not registered.
            TypeError: a field holds a value of the wrong type.
            ValueError: a value has no JSON form (a naive datetime, NaN).
        """
        return self.to_events(
            bounded_context,
            aggregate_type,
            aggregate_id,
            [event],
            causation_id=causation_id,
            correlation_id=correlation_id,
            trace_id=trace_id,
            metadata=metadata,
            event_ids=None if event_id is None else [event_id],
            created_at=created_at,
        )[0]

    def to_events(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        events: Iterable[object],
        *,
        causation_id: str | None = None,
        correlation_id: str | None = None,
        trace_id: str | None = None,
        metadata: bytes | Mapping[str, Any] | None = None,
        event_ids: Iterable[uuid.UUID] | None = None,
        created_at: datetime | None = None,
    ) -> list[es.Event]:
        """``es.Event`` values for domain events of one aggregate, in order.

        The events share the ids and metadata given and one creation time (now, in UTC,
        unless ``created_at`` is given); each gets a new event id unless ``event_ids``
        supplies them, one per event. See :meth:`to_event` for the arguments.

        Raises:
            EventMappingError: an event's class is not registered.
            TypeError: a field holds a value of the wrong type.
            ValueError: a value has no JSON form, or ``event_ids`` has the wrong length.
        """
        if isinstance(metadata, Mapping):
            metadata = json.dumps(
                metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
        when = datetime.now(UTC) if created_at is None else created_at
        items = list(events)
        ids = [uuid.uuid4() for _ in items] if event_ids is None else list(event_ids)
        if len(ids) != len(items):
            raise ValueError(f"got {len(ids)} event ids for {len(items)} events")
        out = []
        for item, event_id in zip(items, ids, strict=True):
            spec = self.spec_of(item)
            out.append(
                es.Event(
                    bounded_context,
                    aggregate_type,
                    aggregate_id,
                    spec.event_type,
                    codec.encode_payload(item),
                    event_id=event_id,
                    event_version=spec.event_version,
                    metadata=metadata,
                    trace_id=trace_id,
                    correlation_id=correlation_id,
                    causation_id=causation_id,
                    created_at=when,
                )
            )
        return out

    # --- decoding -------------------------------------------------------------------

    def from_event(self, event: es.Event, *, latest: bool = False) -> object:
        """The domain event an ``es.Event`` (or ``es.PersistedEvent``) holds.

        Args:
            event: A stored (or about to be stored) event.
            latest: Read it as the newest registered version of its type, running the
                upcasters from its stored version; otherwise decode it as the class
                registered for its stored version.

        Raises:
            EventMappingError: its type or version is unknown, an upcaster is missing or
                failed, or the payload does not fit the class (``__cause__`` says where).
        """
        event_type, version = event.event_type, event.event_version
        if not latest:
            spec = self._by_key.get((event_type, version))
            if spec is None:
                raise self._unknown(event_type, version)
            return self._decode(spec, event.payload)
        newest = self._latest.get(event_type)
        if newest is None:
            raise self._unknown_type(event_type, version)
        if version == newest:
            return self._decode(self._by_key[(event_type, version)], event.payload)
        if version > newest:
            raise self._unknown(event_type, version)
        try:
            data = codec.parse_payload(event.payload)
        except ValueError as err:
            raise self._undecodable(event_type, version, err) from err
        data = self._upcasters.upcast(event_type, version, newest, data)
        spec = self._by_key[(event_type, newest)]
        try:
            return codec.decode_data(spec.cls, data)
        except ValueError as err:
            raise EventMappingError(
                f"{event_type} v{version} upcast to v{newest} does not fit "
                f"{_qualified(spec.cls)}: {err}",
                event_type=event_type,
                event_version=version,
            ) from err

    def from_events(self, events: Iterable[es.Event], *, latest: bool = False) -> list[object]:
        """The domain events of many ``es.Event`` values, in order; see :meth:`from_event`."""
        return [self.from_event(event, latest=latest) for event in events]

    def from_event_as(self, event: es.Event, cls: type[T]) -> T:
        """Decode an event that must be stored as the type and version of class ``cls``.

        Raises:
            EventMappingError: ``cls`` is not registered, the event is stored as another
                type or version, or its payload does not fit ``cls``.
        """
        spec = self.spec_of(cls)
        if (event.event_type, event.event_version) != (spec.event_type, spec.event_version):
            raise EventMappingError(
                f"expected {spec.event_type} v{spec.event_version} for {_qualified(cls)}, "
                f"got {event.event_type} v{event.event_version}",
                event_type=event.event_type,
                event_version=event.event_version,
            )
        decoded: T = self._decode(spec, event.payload)
        return decoded

    def problem(self, event_type: str, event_version: int, *, latest: bool = True) -> str | None:
        """Why a stored ``(event_type, event_version)`` cannot be decoded, or ``None``.

        With ``latest`` (the default) the pair must be readable as the newest version of
        its type (its own class when it is the newest, else a complete upcaster path);
        without it, the pair needs a class of its own.
        """
        newest = self._latest.get(event_type)
        if newest is None:
            return "unknown event type"
        if not latest:
            if (event_type, event_version) in self._by_key:
                return None
            return f"unknown version (registered: {self._versions(event_type)})"
        if event_version > newest:
            return f"unknown version (newest registered is v{newest})"
        gaps = self._upcasters.missing(event_type, event_version, newest)
        if gaps:
            steps = ", ".join(f"v{gap} -> v{gap + 1}" for gap in gaps)
            return f"no upcaster path to v{newest} (missing {steps})"
        return None

    def problems(
        self, stored: Iterable[tuple[str, int]], *, latest: bool = True
    ) -> list[DecodeProblem]:
        """The stored ``(event_type, event_version)`` pairs this registry cannot decode.

        Feed it ``store.event_types(tx)`` to check a registry against a database before
        deploying; see :meth:`problem` for what ``latest`` asks.
        """
        found = []
        for event_type, event_version in sorted(set(stored)):
            reason = self.problem(event_type, event_version, latest=latest)
            if reason is not None:
                found.append(DecodeProblem(event_type, event_version, reason))
        return found

    # --- helpers --------------------------------------------------------------------

    def _decode(self, spec: EventSpec, payload: bytes) -> Any:
        try:
            return codec.decode_payload(spec.cls, payload)
        except ValueError as err:
            raise self._undecodable(spec.event_type, spec.event_version, err) from err

    def _versions(self, event_type: str) -> str:
        versions = sorted(v for (name, v) in self._by_key if name == event_type)
        return ", ".join(f"v{v}" for v in versions)

    def _unknown(self, event_type: str, version: int) -> EventMappingError:
        if event_type not in self._latest:
            return self._unknown_type(event_type, version)
        hint = ""
        if version < self._latest[event_type]:
            hint = "; read it with latest=True to upcast it"
        return EventMappingError(
            f"unknown event version: {event_type} v{version} has no registered class "
            f"(registered: {self._versions(event_type)}){hint}",
            event_type=event_type,
            event_version=version,
        )

    @staticmethod
    def _unknown_type(event_type: str, version: int | None) -> EventMappingError:
        which = event_type if version is None else f"{event_type} v{version}"
        return EventMappingError(
            f"unknown event type: {which} has no registered class",
            event_type=event_type,
            event_version=version,
        )

    @staticmethod
    def _undecodable(event_type: str, version: int, err: ValueError) -> EventMappingError:
        return EventMappingError(
            f"cannot decode {event_type} v{version}: {err}",
            event_type=event_type,
            event_version=version,
        )


def _qualified(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
