"""Aggregate snapshots: an aggregate's state as of one version, kept beside its events.

A snapshot is a cache, never the truth: the events are. Loading an aggregate from a
snapshot means restoring the state it holds and replaying only the events after its
version; a snapshot that is missing, of another schema version, or unreadable just means
replaying every event. So deleting snapshots never loses anything.

Snapshots live in the table ``<events_table>_snapshots`` (:func:`snapshots_table`), made
by ``migrate()``. Its primary key is the aggregate plus the snapshot's schema version:
each aggregate keeps its newest snapshot per schema version, and a write replaces a row
only with a newer aggregate version. Keeping one row per schema version lets two
releases that snapshot an aggregate differently run side by side (during a rolling
deploy) without overwriting each other's snapshots; the rows of a schema version no
release reads any more stay until ``pupsourcing-async snapshots purge`` removes them.
The table has no other index: a snapshot is written and read by its key only, and the
operator's ``status`` and ``purge`` scan the table.

Most code never calls a :class:`SnapshotStore` itself: ``eventmap.AggregateRepository``
loads and takes snapshots for aggregates that opt in (``eventmap.SnapshotAggregate``).
Every adapter's store has one as ``store.snapshots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from .es import MAX_TEXT_LENGTH
from .store import StoreConfig

__all__ = [
    "MAX_SCHEMA_VERSION",
    "Snapshot",
    "SnapshotStore",
    "SnapshotSummary",
    "check_aggregate_key",
    "check_purge_filters",
    "check_schema_version",
    "snapshots_table",
]

TxT_contra = TypeVar("TxT_contra", contravariant=True)

#: Schema versions are stored in a 32-bit INT column on every database.
MAX_SCHEMA_VERSION = 2**31 - 1
_MAX_VERSION = 2**63 - 1
_SUFFIX = "_snapshots"


def snapshots_table(config: StoreConfig) -> str:
    """The table that holds the snapshots of the store ``config`` names."""
    return config.events_table + _SUFFIX


def _check_text(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value or len(value) > MAX_TEXT_LENGTH or "\x00" in value:
        raise ValueError(
            f"{name} must be a non-empty string of at most {MAX_TEXT_LENGTH} characters "
            f"without NUL, got {value!r}"
        )


def check_aggregate_key(
    bounded_context: object, aggregate_type: object, aggregate_id: object
) -> None:
    """Raise unless the three name an aggregate that can be stored.

    Raises:
        TypeError: one is not a str.
        ValueError: one is empty, too long or holds NUL.
    """
    _check_text("bounded_context", bounded_context)
    _check_text("aggregate_type", aggregate_type)
    _check_text("aggregate_id", aggregate_id)


def check_schema_version(value: object, name: str = "schema_version") -> int:
    """Return ``value`` if it is a schema version (an int from 1 to 2**31-1), else raise.

    Raises:
        TypeError: not an int.
        ValueError: out of range.
    """
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_SCHEMA_VERSION:
        raise ValueError(f"{name} must be between 1 and {MAX_SCHEMA_VERSION}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One aggregate's state as of ``aggregate_version``, as stored.

    Attributes:
        bounded_context: The aggregate's bounded context.
        aggregate_type: The aggregate's type.
        aggregate_id: The aggregate's id.
        aggregate_version: The version of the last event the state includes (1 or more).
        snapshot_type: What the payload is (by default the name of the state class);
            a loader ignores a snapshot of another type.
        schema_version: The payload's format version; a loader asks for exactly the
            version it reads.
        payload: The encoded state; the store never looks inside it.
        created_at: When the row was written; set on snapshots read from the store.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a text field is empty, too long or holds NUL, or a version is out
            of range.
    """

    bounded_context: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    snapshot_type: str
    schema_version: int
    payload: bytes
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check_aggregate_key(self.bounded_context, self.aggregate_type, self.aggregate_id)
        _check_text("snapshot_type", self.snapshot_type)
        version = self.aggregate_version
        if type(version) is not int:
            raise TypeError(f"aggregate_version must be an int, got {type(version).__name__}")
        if not 1 <= version <= _MAX_VERSION:
            raise ValueError(f"aggregate_version must be between 1 and 2**63-1, got {version}")
        check_schema_version(self.schema_version)
        if type(self.payload) is not bytes:
            raise TypeError(f"payload must be bytes, got {type(self.payload).__name__}")


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """The snapshots of one aggregate type, snapshot type and schema version.

    Attributes:
        bounded_context: The aggregates' bounded context.
        aggregate_type: The aggregates' type.
        snapshot_type: What the payloads are.
        schema_version: Their format version.
        count: How many snapshots (one per aggregate).
        total_bytes: Their payloads' size together.
        largest_bytes: The largest payload's size.
        oldest: When the oldest of them was written.
        newest: When the newest of them was written.
    """

    bounded_context: str
    aggregate_type: str
    snapshot_type: str
    schema_version: int
    count: int
    total_bytes: int
    largest_bytes: int
    oldest: datetime | None
    newest: datetime | None


def check_purge_filters(
    bounded_context: str | None,
    aggregate_type: str | None,
    snapshot_type: str | None,
    schema_version: int | None,
) -> list[tuple[str, object]]:
    """The ``(column, value)`` conditions of a purge, checked; empty means every snapshot.

    Raises:
        TypeError: a filter has the wrong type.
        ValueError: a filter is empty or out of range.
    """
    conditions: list[tuple[str, object]] = []
    for column, value in (
        ("bounded_context", bounded_context),
        ("aggregate_type", aggregate_type),
        ("snapshot_type", snapshot_type),
    ):
        if value is not None:
            _check_text(column, value)
            conditions.append((column, value))
    if schema_version is not None:
        conditions.append(("schema_version", check_schema_version(schema_version)))
    return conditions


class SnapshotStore(Protocol[TxT_contra]):
    """Where an event store keeps its aggregates' snapshots (``store.snapshots``).

    ``tx`` is the driver connection inside a transaction the caller opened, as for the
    event store: a snapshot saved in the transaction of its append commits or rolls back
    with it.
    """

    async def save(self, tx: TxT_contra, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless the aggregate has a snapshot of the same schema
        version at the same or a newer version; whether it was stored.

        Raises:
            SchemaError: the snapshots table is missing (run ``migrate()``).
            StoreUnavailableError: the connection failed.
        """
        ...

    async def load(
        self,
        tx: TxT_contra,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        schema_version: int,
    ) -> Snapshot | None:
        """The aggregate's snapshot of ``schema_version``, or ``None``.

        A snapshot whose version is above the aggregate's stored head (it can only come
        from a writer that wrote it outside its append's transaction) is never returned.

        Raises:
            SchemaError: the snapshots table is missing (run ``migrate()``).
            StoreUnavailableError: the connection failed.
        """
        ...

    async def summary(self, tx: TxT_contra) -> list[SnapshotSummary]:
        """The snapshots grouped by bounded context, aggregate type, snapshot type and
        schema version, in that order."""
        ...

    async def purge(
        self,
        tx: TxT_contra,
        *,
        bounded_context: str | None = None,
        aggregate_type: str | None = None,
        snapshot_type: str | None = None,
        schema_version: int | None = None,
    ) -> int:
        """Delete the snapshots that match every filter given (all of them when none is);
        how many went. Aggregates without a snapshot replay their events."""
        ...
