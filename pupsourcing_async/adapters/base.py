"""What a database adapter provides beyond the six store methods.

:class:`~pupsourcing_async.database.Database` and the projection processor are written
once against these Protocols; each adapter module implements them for its driver.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .. import es
from .._holes import PendingHole
from .._signals import Signal, Watch
from ..log import Logger
from ..snapshots import SnapshotStore
from ..store import EventStore

if TYPE_CHECKING:
    from ..projection.parking import ParkedStore

__all__ = ["AdapterStore", "Backend", "BackendBase", "CheckpointRow", "Lease", "News"]

StoreT = TypeVar("StoreT")


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """One row of the checkpoints table.

    Attributes:
        name: The projection (or ``<projection>_p<key>`` partition) name.
        position: The last global position it processed.
        updated_at: When it last moved, if the database recorded it.
    """

    name: str
    position: int
    updated_at: datetime | None


class AdapterStore(EventStore[Any], Protocol):
    """The store an adapter supplies: the contract, plus what ``Database`` builds on."""

    @property
    def snapshots(self) -> SnapshotStore[Any]:
        """The aggregate snapshots kept beside the events."""
        ...

    @property
    def parked(self) -> ParkedStore:
        """The events projections parked (``OnFailure.PARK``)."""
        ...

    def pending_holes(self) -> list[PendingHole]:
        """Holes below visible positions not yet proven dead or filled."""
        ...

    async def list_checkpoints(self, tx: Any) -> list[CheckpointRow]:
        """Every checkpoint row."""
        ...

    async def delete_checkpoints(self, tx: Any, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        ...

    async def event_types(self, tx: Any) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        ...


class Lease(Protocol):
    """The right to run one projection partition, held by one worker at a time."""

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A batch transaction, run under the lease (on its connection, where it has one)."""
        ...


class News(Protocol):
    """Wake-ups for an idle processor: a hint that the log may have grown."""

    def watch(self) -> Watch:
        """Start watching; take it before reading, so news that comes meanwhile counts."""
        ...

    async def wait(self, watch: Watch, timeout: float) -> bool:
        """Wait up to ``timeout`` for news since ``watch``; whether any came."""
        ...


class Backend(Protocol):
    """A connection pool for one database plus the store that reads and writes it."""

    @property
    def dialect(self) -> str:
        """``"postgres"``, ``"sqlite"`` or ``"mysql"``."""
        ...

    @property
    def location(self) -> str:
        """Where the database is, for messages; never includes a password."""
        ...

    @property
    def store(self) -> AdapterStore:
        """The event store bound to this database's tables."""
        ...

    @property
    def progress(self) -> Signal:
        """Fired after a projection batch commits (for ``Database.wait_for``)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A connection inside a new transaction: committed when the block exits normally,
        rolled back when it raises or is cancelled."""
        ...

    async def migrate(self) -> None:
        """Create the store's tables and indexes if they do not exist."""
        ...

    async def append(
        self, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` in a transaction of its own, on the fastest path the database
        offers, with the guarantees of ``store.append`` (and its notifications)."""
        ...

    async def read_events(self, from_position: int, limit: int) -> list[es.PersistedEvent]:
        """``store.read_events`` without a transaction block of the caller's (gap-safe)."""
        ...

    async def read_aggregate_stream(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None,
        to_version: int | None,
    ) -> es.Stream:
        """``store.read_aggregate_stream`` without a transaction block of the caller's."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...

    def lease(
        self, name: str, *, poll_interval: float, log: Logger
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the lease on checkpoint ``name`` for the block, waiting for it if taken.

        Where the database has session locks the lease lives on a connection of its own
        and is lost if that connection dies; a batch run under a lost lease fails.
        """
        ...

    def news(self) -> AbstractAsyncContextManager[News]:
        """Subscribe to wake-ups for the block."""
        ...

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a passing database trouble worth retrying the batch for."""
        ...

    async def lease_held(self, name: str) -> bool | None:
        """Whether some worker, in any process, holds the lease on checkpoint ``name``;
        ``None`` where the database has no leases."""
        ...

    async def inspect_schema(self) -> list[str]:
        """What the tables lack for this library's guarantees (a missing registration
        trigger, a case-insensitive collation), in words for an operator; reads only."""
        ...

    @property
    def connections_in_use(self) -> int:
        """Connections taken from the pool and not yet given back (transactions, leases,
        the notification listener)."""
        ...


class BackendBase(Generic[StoreT]):
    """What every adapter's backend keeps the same way: its store, where it is, and the
    signals that wake processors (appends committed here) and ``wait_for`` (batches
    committed here).

    Args:
        store: The store bound to this database's tables.
        location: Where the database is, for messages; never a password.
    """

    def __init__(self, *, store: StoreT, location: str) -> None:
        self._store = store
        self._location = location
        self._appended = Signal()
        self._progress = Signal()

    @property
    def location(self) -> str:
        """Where the database is; never includes a password."""
        return self._location

    @property
    def store(self) -> StoreT:
        """The event store bound to this database's tables."""
        return self._store

    @property
    def progress(self) -> Signal:
        """Fired after a projection batch commits."""
        return self._progress
