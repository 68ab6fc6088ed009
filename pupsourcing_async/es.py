"""Core value types: events, streams, append results and expected versions.

Users write ``from pupsourcing_async import es`` and build :class:`es.Event` values;
the store returns :class:`es.PersistedEvent` values that carry the positions the
database assigned. Every type here is a frozen, slotted dataclass and compares by value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any as _AnyType
from typing import TypeAlias

from ._metadata import metadata_problem
from .errors import InvalidEventError, NoEventsError

__all__ = [
    "Any",
    "AppendResult",
    "Event",
    "Exact",
    "ExpectedVersion",
    "NoStream",
    "PersistedEvent",
    "Stream",
    "StreamExists",
]

#: The longest text an identifying field may hold. MySQL stores these columns as
#: VARCHAR(255); enforcing the bound everywhere keeps a switch of database safe.
MAX_TEXT_LENGTH = 255
#: Event versions are stored in a 32-bit INT column on every database.
MAX_EVENT_VERSION = 2**31 - 1
#: Positions and aggregate versions are 64-bit signed integers on every database.
MAX_POSITION = 2**63 - 1
#: The instants every database stores (MySQL's DATETIME and SQLite's four-digit years
#: start at year 1000). The very last microsecond of 9999 is left out: PostgreSQL's
#: driver takes it for ``infinity``.
MIN_CREATED_AT = datetime(1000, 1, 1, tzinfo=UTC)
MAX_CREATED_AT = datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)
#: ``required_version`` for ``StreamExists()``.
STREAM_EXISTS = -1


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """An event to append: what happened to one aggregate, not yet stored.

    Attributes:
        bounded_context: The domain boundary the aggregate lives in, e.g. ``"Identity"``.
        aggregate_type: The kind of aggregate, e.g. ``"User"``.
        aggregate_id: The aggregate's identity, any non-empty string.
        event_type: What happened, e.g. ``"UserCreated"``.
        payload: The serialized event body; the store never looks inside it.
        event_id: A unique id; appending the same id twice raises ``DuplicateEventError``.
        event_version: The schema version of the payload, starting at 1.
        metadata: ``None`` or UTF-8 encoded JSON. It is stored as JSON, so it reads back
            equal as JSON (key order and whitespace may change on PostgreSQL).
        trace_id: Optional distributed-tracing id.
        correlation_id: Optional id shared by every event of one business flow.
        causation_id: Optional id of the event or command that caused this one.
        created_at: When the event happened; timezone-aware, defaults to now in UTC.
    """

    bounded_context: str
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: bytes
    event_id: uuid.UUID = field(default_factory=uuid.uuid4, kw_only=True)
    event_version: int = field(default=1, kw_only=True)
    metadata: bytes | None = field(default=None, kw_only=True)
    trace_id: str | None = field(default=None, kw_only=True)
    correlation_id: str | None = field(default=None, kw_only=True)
    causation_id: str | None = field(default=None, kw_only=True)
    created_at: datetime = field(default_factory=_utc_now, kw_only=True)


@dataclass(frozen=True, slots=True)
class PersistedEvent(Event):
    """An event as stored: every :class:`Event` field plus the positions it was given.

    Attributes:
        global_position: The event's place in the global log, unique and ascending.
        aggregate_version: The event's place in its aggregate's stream, starting at 1.
    """

    global_position: int = field(kw_only=True)
    aggregate_version: int = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class Stream:
    """The events of one aggregate, in version order.

    Attributes:
        bounded_context: The aggregate's bounded context.
        aggregate_type: The aggregate's type.
        aggregate_id: The aggregate's id.
        events: The events read, ascending by ``aggregate_version``.
    """

    bounded_context: str
    aggregate_type: str
    aggregate_id: str
    events: list[PersistedEvent]

    @property
    def version(self) -> int:
        """The version of the last event read, or 0 when the stream is empty."""
        return self.events[-1].aggregate_version if self.events else 0

    @property
    def is_empty(self) -> bool:
        """Whether no event was read."""
        return not self.events

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[PersistedEvent]:
        return iter(self.events)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append stored.

    Attributes:
        events: The persisted events, in the order they were given.
        global_positions: Their global positions, ascending.
    """

    events: list[PersistedEvent]
    global_positions: list[int]

    @property
    def from_version(self) -> int:
        """The aggregate's version before the append (first new version minus one)."""
        return self.events[0].aggregate_version - 1 if self.events else 0

    @property
    def to_version(self) -> int:
        """The aggregate's version after the append (the last new version)."""
        return self.events[-1].aggregate_version if self.events else 0


@dataclass(frozen=True, slots=True)
class Any:
    """Expected version: append whatever the aggregate's current version is."""

    def __str__(self) -> str:
        return "Any"


@dataclass(frozen=True, slots=True, eq=False)
class NoStream:
    """Expected version: the aggregate must not exist yet. Equal to ``Exact(0)``."""

    def __eq__(self, other: object) -> bool:
        return _as_version(other) == 0

    def __hash__(self) -> int:
        return hash(("ExpectedVersion", 0))

    def __str__(self) -> str:
        return "NoStream"


@dataclass(frozen=True, slots=True)
class StreamExists:
    """Expected version: the aggregate must have at least one event, whatever its version."""

    def __str__(self) -> str:
        return "StreamExists"


@dataclass(frozen=True, slots=True, eq=False)
class Exact:
    """Expected version: the aggregate must be at exactly ``version``.

    ``Exact(0)`` means the aggregate must not exist and equals ``NoStream()``.

    Attributes:
        version: The version the aggregate must have, 0 or more.
    """

    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or isinstance(self.version, bool):
            raise ValueError(f"Exact version must be an int, got {type(self.version).__name__}")
        if self.version < 0:
            raise ValueError(f"Exact version must be 0 or more, got {self.version}")

    def __eq__(self, other: object) -> bool:
        return _as_version(other) == self.version

    def __hash__(self) -> int:
        return hash(("ExpectedVersion", self.version))

    def __str__(self) -> str:
        return f"Exact({self.version})"


def _as_version(value: object) -> int | None:
    if isinstance(value, NoStream):
        return 0
    if isinstance(value, Exact):
        return value.version
    return None


#: One of ``Any()``, ``NoStream()``, ``StreamExists()`` or ``Exact(n)``.
ExpectedVersion: TypeAlias = Any | NoStream | StreamExists | Exact


def required_version(expected: ExpectedVersion) -> int | None:
    """The version the aggregate must be at: ``None`` for ``Any()``, ``STREAM_EXISTS``
    (-1) for ``StreamExists()``, else the exact version (0 for ``NoStream()``).

    Raises:
        TypeError: ``expected`` is not an expected version.
    """
    if isinstance(expected, Any):
        return None
    if isinstance(expected, StreamExists):
        return STREAM_EXISTS
    version = _as_version(expected)
    if version is None:
        raise TypeError(
            "expected version must be es.Any(), es.NoStream(), es.StreamExists() or "
            f"es.Exact(n), got {expected!r}"
        )
    return version


def _check_text(index: int, name: str, value: object, *, optional: bool = False) -> None:
    # The common case first, in one expression: this runs for every field of every event.
    if type(value) is str and 0 < len(value) <= MAX_TEXT_LENGTH and value.isascii():
        if "\x00" not in value:
            return
    elif value is None and optional:
        return
    what = "None or a non-empty string" if optional else "a non-empty string"
    if not isinstance(value, str):
        raise InvalidEventError(index, name, f"must be {what}, got {type(value).__name__}")
    if not value:
        raise InvalidEventError(index, name, f"must be {what}, got an empty string")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidEventError(
            index, name, f"must be at most {MAX_TEXT_LENGTH} characters, got {len(value)}"
        )
    if "\x00" in value:
        raise InvalidEventError(index, name, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEventError(index, name, "must be encodable as UTF-8") from None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for payloads (the event mapping's): building a decoder per call costs more
# than the parse.
_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _check_metadata(index: int, metadata: object) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, bytes):
        raise InvalidEventError(
            index, "metadata", f"must be None or UTF-8 JSON bytes, got {type(metadata).__name__}"
        )
    problem = metadata_problem(metadata)
    if problem is not None:
        raise InvalidEventError(index, "metadata", problem)


def _check_created_at(index: int, created_at: object) -> None:
    if not isinstance(created_at, datetime):
        raise InvalidEventError(
            index, "created_at", f"must be a datetime, got {type(created_at).__name__}"
        )
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise InvalidEventError(index, "created_at", "must be timezone-aware")
    if created_at.tzinfo is not UTC:
        try:
            created_at = created_at.astimezone(UTC)
        except OverflowError:
            created_at = MIN_CREATED_AT - timedelta(1)  # out of range either way
    if not MIN_CREATED_AT <= created_at <= MAX_CREATED_AT:
        raise InvalidEventError(
            index,
            "created_at",
            f"must lie between {MIN_CREATED_AT:%Y-%m-%d} and {MAX_CREATED_AT:%Y-%m-%d} UTC, "
            "the range every database stores",
        )


_AGGREGATE_FIELDS = ("bounded_context", "aggregate_type", "aggregate_id")


def validate_event(index: int, event: object, first: Event | None = None) -> Event:
    """Check one event's fields; ``index`` names it in the error.

    With ``first`` (the append's first event, already checked) the event must also belong
    to the same aggregate.

    Raises:
        InvalidEventError: a field is missing, of the wrong type or out of range.
    """
    if not isinstance(event, Event):
        raise InvalidEventError(index, "event", f"must be an es.Event, got {type(event).__name__}")
    if first is None:
        _check_text(index, "bounded_context", event.bounded_context)
        _check_text(index, "aggregate_type", event.aggregate_type)
        _check_text(index, "aggregate_id", event.aggregate_id)
    elif (
        event.aggregate_id != first.aggregate_id
        or event.aggregate_type != first.aggregate_type
        or event.bounded_context != first.bounded_context
    ):
        for name in _AGGREGATE_FIELDS:
            value, wanted = getattr(event, name), getattr(first, name)
            if value != wanted:
                _check_text(index, name, value)
                raise InvalidEventError(
                    index,
                    name,
                    f"must match event 0 ({wanted!r}): one append writes to one aggregate, "
                    f"got {value!r}",
                )
    _check_text(index, "event_type", event.event_type)
    if type(event.payload) is not bytes:
        raise InvalidEventError(
            index, "payload", f"must be bytes, got {type(event.payload).__name__}"
        )
    if not isinstance(event.event_id, uuid.UUID):
        raise InvalidEventError(
            index, "event_id", f"must be a uuid.UUID, got {type(event.event_id).__name__}"
        )
    version = event.event_version
    if type(version) is not int:
        raise InvalidEventError(
            index, "event_version", f"must be an int, got {type(version).__name__}"
        )
    if not 1 <= version <= MAX_EVENT_VERSION:
        raise InvalidEventError(
            index, "event_version", f"must be between 1 and {MAX_EVENT_VERSION}, got {version}"
        )
    metadata = event.metadata
    # The events of one append often share their metadata: check it once.
    if metadata is not None and (first is None or metadata != first.metadata):
        _check_metadata(index, metadata)
    _check_text(index, "trace_id", event.trace_id, optional=True)
    _check_text(index, "correlation_id", event.correlation_id, optional=True)
    _check_text(index, "causation_id", event.causation_id, optional=True)
    created_at = event.created_at
    # Events of one command usually share their timestamp: check it once.
    if first is None or created_at != first.created_at or created_at.tzinfo is not UTC:
        _check_created_at(index, created_at)
    return event


def validate_append(expected: ExpectedVersion, events: Sequence[Event]) -> int | None:
    """Check an append's input before any SQL runs.

    Returns:
        The version the aggregate must be at, or ``None`` for ``Any()``.

    Raises:
        NoEventsError: ``events`` is empty.
        InvalidEventError: an event is invalid, or the events do not all share one
            aggregate; the error names the event's index and the field.
        TypeError: ``expected`` is not an expected version.
    """
    required = required_version(expected)
    if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):  # type: ignore[unreachable]
        raise TypeError(f"events must be a sequence of es.Event, got {type(events).__name__}")
    if not events:
        raise NoEventsError("append needs at least one event")
    first = validate_event(0, events[0])
    if required is not None and required + len(events) > MAX_POSITION:
        raise InvalidEventError(
            0,
            "expected_version",
            f"{expected} leaves no room for {len(events)} more version(s) below 2**63",
        )
    if len(events) == 1:
        return required
    seen_ids = {first.event_id: 0}
    for index in range(1, len(events)):
        event = validate_event(index, events[index], first)
        earlier = seen_ids.setdefault(event.event_id, index)
        if earlier != index:
            raise InvalidEventError(
                index, "event_id", f"repeats the event_id of event {earlier} ({event.event_id})"
            )
    return required


def _slot_setters() -> tuple[_AnyType, ...]:
    order = (
        "bounded_context",
        "aggregate_type",
        "aggregate_id",
        "event_type",
        "payload",
        "event_id",
        "event_version",
        "metadata",
        "trace_id",
        "correlation_id",
        "causation_id",
        "created_at",
        "global_position",
        "aggregate_version",
    )
    found = {}
    for klass in reversed(PersistedEvent.__mro__):
        found.update({name: value.__set__ for name, value in vars(klass).items() if name in order})
    return tuple(found[name] for name in order)


(
    _set_bounded_context,
    _set_aggregate_type,
    _set_aggregate_id,
    _set_event_type,
    _set_payload,
    _set_event_id,
    _set_event_version,
    _set_metadata,
    _set_trace_id,
    _set_correlation_id,
    _set_causation_id,
    _set_created_at,
    _set_global_position,
    _set_aggregate_version,
) = _slot_setters()
_new = object.__new__


def make_persisted(
    bounded_context: str,
    aggregate_type: str,
    aggregate_id: str,
    event_type: str,
    payload: bytes,
    event_id: uuid.UUID,
    event_version: int,
    metadata: bytes | None,
    trace_id: str | None,
    correlation_id: str | None,
    causation_id: str | None,
    created_at: datetime,
    global_position: int,
    aggregate_version: int,
) -> PersistedEvent:
    """A ``PersistedEvent`` from values the database returned, built without ``__init__``.

    Reading the log builds one object per row; setting the slots directly costs about a
    third of the frozen dataclass's keyword ``__init__``. The values are trusted: they
    come from the store, not from a user.
    """
    event = _new(PersistedEvent)
    _set_bounded_context(event, bounded_context)
    _set_aggregate_type(event, aggregate_type)
    _set_aggregate_id(event, aggregate_id)
    _set_event_type(event, event_type)
    _set_payload(event, payload)
    _set_event_id(event, event_id)
    _set_event_version(event, event_version)
    _set_metadata(event, metadata)
    _set_trace_id(event, trace_id)
    _set_correlation_id(event, correlation_id)
    _set_causation_id(event, causation_id)
    _set_created_at(event, created_at)
    _set_global_position(event, global_position)
    _set_aggregate_version(event, aggregate_version)
    return event


def persisted(event: Event, global_position: int, aggregate_version: int) -> PersistedEvent:
    """The stored form of ``event`` at the given positions."""
    return make_persisted(
        event.bounded_context,
        event.aggregate_type,
        event.aggregate_id,
        event.event_type,
        event.payload,
        event.event_id,
        event.event_version,
        event.metadata,
        event.trace_id,
        event.correlation_id,
        event.causation_id,
        event.created_at,
        global_position,
        aggregate_version,
    )
