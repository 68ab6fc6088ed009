"""The event store contract every adapter satisfies, and the store's configuration.

``tx`` is always the driver's own connection inside a transaction the caller opened
(``asyncpg.Connection``, ``aiosqlite.Connection``, ``aiomysql.Connection``). A store never
commits or rolls back a transaction it did not open.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ._reserved import RESERVED_WORDS
from .es import AppendResult, Event, ExpectedVersion, PersistedEvent, Stream
from .log import Logger
from .observe import Observer

__all__ = ["EventStore", "StoreConfig", "default_store_config"]

TxT_contra = TypeVar("TxT_contra", contravariant=True)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Table names are limited so that every derived name (indexes, sequences, helper tables
#: such as ``<events_table>_appends``) stays within PostgreSQL's 63-character limit.
MAX_TABLE_NAME_LENGTH = 40
#: The helper tables' names are ``events_table`` followed by one of these.


def check_identifier(name: str, what: str) -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise ``ValueError``."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what} must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*), got {name!r}"
        )
    if name.lower().startswith("sqlite_"):
        raise ValueError(f"{what} must not start with sqlite_ (SQLite reserves it), got {name!r}")
    if name.lower() in RESERVED_WORDS:
        raise ValueError(
            f"{what} must not be an SQL reserved word, got {name!r}: table names are "
            "written unquoted, so that they match the Go library's"
        )
    if len(name) > MAX_TABLE_NAME_LENGTH:
        raise ValueError(
            f"{what} must be at most {MAX_TABLE_NAME_LENGTH} characters, got {len(name)} ({name!r})"
        )
    return name


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store keeps its data. One class for every adapter.

    Table names are validated identifiers and are never quoted, so they match tables
    created by the Go library. Helper tables are named after ``events_table``.

    Attributes:
        events_table: The append-only log.
        aggregate_heads_table: One row per aggregate holding its current version.
        checkpoints_table: One row per projection (or projection partition).
        logger: Where the store logs; the ``pupsourcing_async.store`` logger by default.
        observers: Hooks told about every append, and every batch of the processors that
            read through this store (metrics, tracing); see ``pupsourcing_async.observe``.
        notify_channel: The PostgreSQL channel appends notify (with the last position
            appended as payload) and processors listen on; ``<events_table>_appended``
            when ``None``. Point Go's pupsourcing/core and this library at one channel
            (its default is ``pupsourcing_events``) to have each wake the other.
    """

    events_table: str = "events"
    aggregate_heads_table: str = "aggregate_heads"
    checkpoints_table: str = "projection_checkpoints"
    logger: Logger | None = None
    observers: tuple[Observer, ...] = field(default=(), kw_only=True)
    notify_channel: str | None = field(default=None, kw_only=True)

    @property
    def channel(self) -> str:
        """The notification channel in use: ``notify_channel`` or its default."""
        return self.notify_channel or f"{self.events_table}_appended"

    def helper_names(self) -> dict[str, str]:
        """Every database object the store creates besides the three tables, by role.

        Tables, indexes, sequences, triggers and functions share one namespace on some
        databases, so none of these may equal another or one of the three tables.
        """
        events = self.events_table
        heads, checkpoints = self.aggregate_heads_table, self.checkpoints_table
        return {
            "in-flight table": f"{events}_in_flight",
            "parked events table": f"{events}_parked",
            "snapshots table": f"{events}_snapshots",
            "position sequence": f"{events}_global_position_seq",
            "event type index": f"idx_{events}_event_type",
            "correlation index": f"idx_{events}_correlation",
            "aggregate index": f"idx_{events}_aggregate",
            "MySQL event type index": f"{events}_event_type_idx",
            "MySQL correlation index": f"{events}_correlation_idx",
            "registration trigger": f"{events}_register",
            "heads index": f"idx_{heads}_updated",
            "MySQL heads index": f"{heads}_updated_idx",
            "checkpoints index": f"idx_{checkpoints}_updated",
            "MySQL checkpoints index": f"{checkpoints}_updated_idx",
        }

    def __post_init__(self) -> None:
        names = {
            "events_table": self.events_table,
            "aggregate_heads_table": self.aggregate_heads_table,
            "checkpoints_table": self.checkpoints_table,
        }
        for what, name in names.items():
            check_identifier(name, what)
        if not isinstance(self.observers, tuple):  # a list given by a caller without mypy
            object.__setattr__(self, "observers", tuple(self.observers))  # type: ignore[unreachable]
        if len({name.lower() for name in names.values()}) != len(names):
            raise ValueError(f"table names must be distinct, got {names}")
        if self.notify_channel is not None:
            check_identifier(self.notify_channel, "notify_channel")
        taken = {name.lower(): (what, name) for what, name in names.items()}
        for role, helper in self.helper_names().items():
            clash, name = taken.setdefault(helper.lower(), (role, helper))
            if clash != role:
                raise ValueError(
                    f"{clash} {name!r} would collide with the store's {role} of the same "
                    "name: choose other table names"
                )


def default_store_config() -> StoreConfig:
    """The default table names: ``events``, ``aggregate_heads``, ``projection_checkpoints``."""
    return StoreConfig()


class EventStore(Protocol[TxT_contra]):
    """An append-only event log with optimistic concurrency and projection checkpoints."""

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        ...

    async def append(
        self, tx: TxT_contra, expected: ExpectedVersion, events: Sequence[Event]
    ) -> AppendResult:
        """Append ``events`` to one aggregate, atomically.

        Versions are assigned from the aggregate's head + 1. Of concurrent appends to one
        aggregate with ``NoStream()`` or ``Exact(n)`` exactly one wins each version;
        concurrent ``Any()`` appends all succeed, serialized by the aggregate's head row.

        Raises:
            NoEventsError: ``events`` is empty.
            InvalidEventError: an event is invalid; nothing was written.
            OptimisticConcurrencyError: the aggregate is not at ``expected``. The
                transaction must be rolled back.
            DuplicateEventError: an ``event_id`` is already stored.
            StoreUnavailableError: the connection failed.
            SchemaError: the tables are missing.
        """
        ...

    async def read_events(
        self, tx: TxT_contra, from_position: int = 0, limit: int = 100
    ) -> list[PersistedEvent]:
        """Read up to ``limit`` events with ``global_position > from_position``, ascending.

        Gap-safe: never returns a position while a lower one may still become visible, so
        a reader that checkpoints the last position it saw never skips an event. A short
        or empty result is therefore not proof of the end of the log.
        """
        ...

    async def latest_global_position(self, tx: TxT_contra) -> int:
        """The highest committed global position, 0 when the log is empty."""
        ...

    async def read_aggregate_stream(
        self,
        tx: TxT_contra,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> Stream:
        """Read one aggregate's events in version order; both bounds are inclusive."""
        ...

    async def get_checkpoint(self, tx: TxT_contra, projection_name: str) -> int:
        """The last global position ``projection_name`` processed, 0 when none."""
        ...

    async def update_checkpoint(self, tx: TxT_contra, projection_name: str, position: int) -> None:
        """Record that ``projection_name`` has processed everything up to ``position``."""
        ...
