"""SQLite adapter, on aiosqlite: the embedded default, no server needed.

SQLite runs one writer at a time. Every transaction begins with ``BEGIN IMMEDIATE``, so
a writer takes the write lock before it reads the aggregate's head, and concurrent
writers on other connections wait (up to the busy timeout) instead of failing with
"database is locked". A caller who brings their own connection must do the same.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiosqlite

from .. import es
from .._async import shielded
from .._holes import PendingHole
from .._url import DatabaseURL
from ..errors import SchemaError, StoreUnavailableError
from ..log import Logger, get_logger
from ..migrations import schema_statements
from ..observe import observed_append
from ..store import StoreConfig, default_store_config
from ._shared import (
    AppendTracker,
    LocalNews,
    NoLease,
    as_bytes,
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
    conflict_error,
    local_news,
)
from .base import BackendBase, CheckpointRow

__all__ = ["SqliteBackend", "Store", "StoreConfig", "default_store_config"]

_EVENT_COLUMNS = (
    "global_position, bounded_context, aggregate_type, aggregate_id, aggregate_version, "
    "event_id, event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
_INSERT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, "
    "event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at"
)
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def format_timestamp(moment: datetime) -> str:
    """A timestamp as stored: UTC, microseconds, the format the Go library writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_timestamp(text: str) -> datetime:
    """A stored timestamp, in any format SQLite or the Go library writes, as aware UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _event(row: Sequence[Any]) -> es.PersistedEvent:
    payload = row[8]
    return es.make_persisted(
        row[1],
        row[2],
        row[3],
        row[6],
        payload if isinstance(payload, bytes) else as_bytes(payload) or b"",
        uuid.UUID(row[5]),
        row[7],
        as_bytes(row[12]),
        row[9],
        row[10],
        row[11],
        parse_timestamp(row[13]),
        row[0],
        row[4],
    )


def is_busy(err: BaseException) -> bool:
    """Whether ``err`` is SQLite's "database is locked" (the busy timeout ran out)."""
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


@contextmanager
def translated(location: str) -> Iterator[None]:
    """Translate sqlite3's errors into this library's, naming ``location``."""
    try:
        yield
    except sqlite3.OperationalError as err:
        message = str(err)
        if message.startswith("no such table"):
            raise SchemaError(
                f"{message}: the event store's tables are missing; run `await db.migrate()` "
                "or `pupsourcing-async migrate --url URL`",
                table=message.rpartition(" ")[2],
            ) from err
        if "no such column" in message or "has no column named" in message:
            raise SchemaError(
                f"{message}: the event store's tables do not have the expected columns"
            ) from err
        if is_busy(err):
            raise StoreUnavailableError(
                f"SQLite database {location} stayed locked by another writer past the busy "
                f"timeout: {message}",
                location=location,
            ) from err
        if "unable to open" in message or "disk I/O error" in message:
            raise StoreUnavailableError(
                f"SQLite database {location} is unavailable: {message}", location=location
            ) from err
        raise
    except ValueError as err:
        # aiosqlite raises ValueError("no active connection") once it is closed.
        if "no active connection" in str(err):
            raise StoreUnavailableError(
                f"the connection to SQLite database {location} is closed", location=location
            ) from err
        raise


class Store:
    """The event store on SQLite.

    Args:
        config: Table names and logger; the defaults when omitted.
        location: The database file, used in error messages.
    """

    def __init__(self, config: StoreConfig | None = None, *, location: str = "SQLite") -> None:
        self._config = config or default_store_config()
        self._location = location
        self._log = get_logger(self._config.logger, "pupsourcing_async.store")
        events, heads = self._config.events_table, self._config.aggregate_heads_table
        checkpoints = self._config.checkpoints_table
        key = "bounded_context = ? AND aggregate_type = ? AND aggregate_id = ?"
        self._head_any = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE SET "
            "aggregate_version = aggregate_version + excluded.aggregate_version, "
            "updated_at = excluded.updated_at RETURNING aggregate_version"
        )
        self._head_no_stream = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO NOTHING "
            "RETURNING aggregate_version"
        )
        self._head_exact = (
            f"UPDATE {heads} SET aggregate_version = aggregate_version + ?, updated_at = ? "
            f"WHERE {key} AND aggregate_version = ? RETURNING aggregate_version"
        )
        self._head_version = f"SELECT aggregate_version FROM {heads} WHERE {key}"
        self._head_restore = f"UPDATE {heads} SET aggregate_version = ? WHERE {key}"
        self._head_delete = f"DELETE FROM {heads} WHERE {key}"
        self._insert_one = f"INSERT INTO {events} ({_INSERT_COLUMNS}) VALUES {_ROW_PLACEHOLDERS}"
        self._insert_one_returning = (
            self._insert_one + " RETURNING global_position, aggregate_version"
        )
        self._delete_versions_above = f"DELETE FROM {events} WHERE {key} AND aggregate_version > ?"
        self._find_duplicate = f"SELECT event_id FROM {events} WHERE event_id IN "
        self._read_events = (
            f"SELECT {_EVENT_COLUMNS} FROM {events} WHERE global_position > ? "
            "ORDER BY global_position LIMIT ?"
        )
        self._latest = f"SELECT COALESCE(MAX(global_position), 0) FROM {events}"
        self._stream = (
            f"SELECT {_EVENT_COLUMNS} FROM {events} WHERE {key} "
            "AND aggregate_version >= ? AND aggregate_version <= ? ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = ?"
        )
        self._event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {events} "
            "ORDER BY event_type, event_version"
        )
        self._list_checkpoints = (
            "SELECT projection_name, last_global_position, updated_at "
            f"FROM {checkpoints} ORDER BY projection_name"
        )
        self._delete_checkpoint = f"DELETE FROM {checkpoints} WHERE projection_name = ?"
        #: Connections that appended in their open transaction (see AppendTracker).
        self.appends = AppendTracker()
        self._update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (?, ?, ?) ON CONFLICT (projection_name) DO UPDATE SET "
            "last_global_position = excluded.last_global_position, "
            "updated_at = excluded.updated_at"
        )

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        return self._config

    def pending_holes(self) -> list[PendingHole]:
        """Always empty: with one writer at a time, a hole below a visible position is dead."""
        return []

    async def append(
        self, tx: aiosqlite.Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate. See ``EventStore.append``.

        Outside a transaction the append opens its own (``BEGIN IMMEDIATE``) and commits it.
        """
        observers = self._config.observers
        if not observers:
            return await self._append(tx, expected, events)
        return await observed_append(
            observers, "sqlite", expected, events, lambda events: self._append(tx, expected, events)
        )

    async def _append(
        self, tx: aiosqlite.Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Outside a transaction the append opens its own (``BEGIN IMMEDIATE``) and commits it."""
        required = es.validate_append(expected, events)
        with translated(self._location):
            if tx.in_transaction:
                return await self._append_in_transaction(tx, expected, required, events)
            finished = False
            try:
                await tx.execute("BEGIN IMMEDIATE")
                result = await self._append_in_transaction(tx, expected, required, events)
                finished = True
            finally:
                if finished:
                    await shielded(tx.execute("COMMIT"))
                else:
                    # Queued behind a BEGIN that a cancellation may have left pending.
                    await _rollback_quietly(tx)
            return result

    async def _append_in_transaction(
        self,
        tx: aiosqlite.Connection,
        expected: es.ExpectedVersion,
        required: int | None,
        events: Sequence[es.Event],
    ) -> es.AppendResult:
        first = events[0]
        count = len(events)
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        now = format_timestamp(datetime.now(UTC))
        if required is None:
            head = await tx.execute_fetchall(self._head_any, (*key, count, now))
        elif required == 0:
            head = await tx.execute_fetchall(self._head_no_stream, (*key, count, now))
        else:
            head = await tx.execute_fetchall(self._head_exact, (count, now, *key, required))
        if not head:
            found = await tx.execute_fetchall(self._head_version, key)
            actual = next(iter(found), (0,))[0]
            raise conflict_error(
                self._log,
                expected,
                first,
                actual=actual,
                event_id=await self._stored_id(tx, events),
            )
        base = next(iter(head))[0] - count
        try:
            rows = await self._insert_events(tx, first, base, events)
        except sqlite3.IntegrityError as err:
            # The head moved but no event was stored: put the head back so a caller who
            # commits anyway does not persist a version without events.
            if base == 0:
                await tx.execute(self._head_delete, key)
            else:
                await tx.execute(self._head_restore, (base, *key))
            raise await self._integrity_conflict(tx, err, expected, first, events) from err
        rows.sort(key=lambda row: row[1])
        stored = [
            es.persisted(event, row[0], row[1]) for event, row in zip(events, rows, strict=True)
        ]
        positions = [row[0] for row in rows]
        self.appends.note(tx)
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=base + 1,
            to_version=base + count,
            positions=positions,
        )
        return es.AppendResult(stored, positions)

    async def _insert_events(
        self, tx: aiosqlite.Connection, first: es.Event, base: int, events: Sequence[es.Event]
    ) -> list[tuple[int, int]]:
        """Insert the events; their (position, version) pairs.

        One event: an INSERT ... RETURNING. Several: one prepared INSERT run per row
        (cheaper in SQLite than a long multi-row statement), then the last rowid. The
        positions are consecutive: this transaction holds SQLite's one write lock, and an
        AUTOINCREMENT key gives each row the next number.
        """
        rows = [
            (
                first.bounded_context,
                first.aggregate_type,
                first.aggregate_id,
                base + offset,
                str(event.event_id),
                event.event_type,
                event.event_version,
                event.payload,
                event.trace_id,
                event.correlation_id,
                event.causation_id,
                None if event.metadata is None else event.metadata.decode(),
                format_timestamp(event.created_at),
            )
            for offset, event in enumerate(events, start=1)
        ]
        if len(rows) == 1:
            returned = await tx.execute_fetchall(self._insert_one_returning, rows[0])
            return [(row[0], row[1]) for row in returned]
        try:
            await tx.executemany(self._insert_one, rows)
        except sqlite3.IntegrityError:
            # Rows before the failing one went in: take them out with the append.
            await tx.execute(self._delete_versions_above, (*rows[0][:3], base))
            raise
        last: int = next(iter(await tx.execute_fetchall("SELECT last_insert_rowid()")))[0]
        first_position = last - len(rows) + 1
        return [(first_position + index, base + index + 1) for index in range(len(rows))]

    async def _integrity_conflict(
        self,
        tx: aiosqlite.Connection,
        err: sqlite3.IntegrityError,
        expected: es.ExpectedVersion,
        first: es.Event,
        events: Sequence[es.Event],
    ) -> Exception:
        if ".event_id" not in str(err):
            return conflict_error(self._log, expected, first, actual=None)
        event_id = await self._stored_id(tx, events)
        return conflict_error(
            self._log, expected, first, actual=None, duplicate=True, event_id=event_id
        )

    async def _stored_id(
        self, tx: aiosqlite.Connection, events: Sequence[es.Event]
    ) -> uuid.UUID | None:
        """An id of ``events`` that is stored already, if any (looked up after a conflict,
        so a retried command is told it already happened)."""
        ids = [str(event.event_id) for event in events]
        found = await tx.execute_fetchall(
            self._find_duplicate + "(" + ", ".join("?" * len(ids)) + ") LIMIT 1", ids
        )
        return uuid.UUID(next(iter(found))[0]) if found else None

    async def read_events(
        self, tx: aiosqlite.Connection, from_position: int = 0, limit: int = 100
    ) -> list[es.PersistedEvent]:
        """Read events after ``from_position``. See ``EventStore.read_events``."""
        check_position("from_position", from_position)
        check_limit(limit)
        with translated(self._location):
            rows = await tx.execute_fetchall(self._read_events, (from_position, limit))
        return [_event(row) for row in rows]

    async def latest_global_position(self, tx: aiosqlite.Connection) -> int:
        """The highest committed global position, 0 when the log is empty."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._latest)
        position: int = next(iter(rows))[0]
        return position

    async def read_aggregate_stream(
        self,
        tx: aiosqlite.Connection,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> es.Stream:
        """Read one aggregate's events in version order; both bounds inclusive."""
        low, high = check_stream_args(
            bounded_context, aggregate_type, aggregate_id, from_version, to_version
        )
        with translated(self._location):
            rows = await tx.execute_fetchall(
                self._stream, (bounded_context, aggregate_type, aggregate_id, low, high)
            )
        return es.Stream(
            bounded_context, aggregate_type, aggregate_id, [_event(row) for row in rows]
        )

    async def get_checkpoint(self, tx: aiosqlite.Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        with translated(self._location):
            rows = await tx.execute_fetchall(self._get_checkpoint, (projection_name,))
        position: int = next(iter(rows), (0,))[0]
        return position

    async def list_checkpoints(self, tx: aiosqlite.Connection) -> list[CheckpointRow]:
        """Every checkpoint row, by name."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._list_checkpoints)
        return [
            CheckpointRow(name, position, parse_timestamp(updated) if updated else None)
            for name, position, updated in rows
        ]

    async def event_types(self, tx: aiosqlite.Connection) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._event_types)
        return [(row[0], row[1]) for row in rows]

    async def delete_checkpoints(self, tx: aiosqlite.Connection, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        deleted = 0
        with translated(self._location):
            for name in names:
                cursor = await tx.execute(self._delete_checkpoint, (name,))
                deleted += cursor.rowcount
        return deleted

    async def update_checkpoint(
        self, tx: aiosqlite.Connection, projection_name: str, position: int
    ) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        now = format_timestamp(datetime.now(UTC))
        with translated(self._location):
            await tx.execute(self._update_checkpoint, (projection_name, position, now))


class _ConnectionPool:
    """A few aiosqlite connections (each runs its own thread), handed out one at a time."""

    def __init__(self, path: str, *, max_size: int, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._idle: list[aiosqlite.Connection] = []
        self._open: set[aiosqlite.Connection] = set()
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False

    async def _connect(self) -> aiosqlite.Connection:
        # isolation_level=None: transactions are begun and ended explicitly, never implicitly.
        connection = await aiosqlite.connect(self._path, isolation_level=None)
        ready = False
        try:
            await connection.execute_fetchall(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            if self._path != ":memory:":
                await connection.execute_fetchall("PRAGMA journal_mode = WAL")
            ready = True
        finally:
            if not ready:
                await shielded(connection.close())
        return connection

    async def acquire(self) -> aiosqlite.Connection:
        if self._closed:
            raise StoreUnavailableError(
                f"the SQLite database {self._path} is closed", location=self._path
            )
        await self._slots.acquire()
        connection = None
        try:
            connection = self._idle.pop() if self._idle else await self._connect()
            self._open.add(connection)
        finally:
            if connection is None:
                self._slots.release()
        return connection

    async def release(self, connection: aiosqlite.Connection, *, discard: bool = False) -> None:
        """Take a connection back; one that is unfit (or comes after close) is closed.

        Keeping a connection never suspends, so no cancellation can interrupt it.
        """
        try:
            if discard or self._closed:
                self._open.discard(connection)
                await shielded(connection.close())
            else:
                self._idle.append(connection)
        finally:
            self._slots.release()

    async def close(self) -> None:
        self._closed = True
        connections, self._open, self._idle = list(self._open), set(), []
        for connection in connections:
            await shielded(connection.close())


class SqliteBackend(BackendBase[Store]):
    """A SQLite database file reached through a small pool of aiosqlite connections.

    An in-memory database (``sqlite://`` or ``sqlite:///:memory:``) exists only within one
    connection, so it gets a pool of one.
    """

    dialect = "sqlite"

    def __init__(self, pool: _ConnectionPool, *, store: Store, location: str) -> None:
        self._pool = pool
        super().__init__(store=store, location=location)

    @classmethod
    async def connect(
        cls,
        url: DatabaseURL,
        *,
        store_config: StoreConfig,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        pool_options: Mapping[str, Any],
    ) -> SqliteBackend:
        """Open the database file (creating it if needed) and check that it answers."""
        path = url.sqlite_path
        options = dict(pool_options)
        busy_timeout = float(options.pop("busy_timeout", 10.0))
        if options:
            raise TypeError(f"unknown SQLite pool options: {', '.join(sorted(options))}")
        size = 1 if path == ":memory:" else max_size
        pool = _ConnectionPool(path, max_size=size, busy_timeout=busy_timeout)
        try:
            if path != ":memory:":
                # Open the file once without aiosqlite: when aiosqlite fails to open one,
                # its worker thread outlives the failure and may call into a closed loop.
                await asyncio.to_thread(_probe, path)
            with translated(path):
                connection = await asyncio.wait_for(pool.acquire(), connect_timeout)
        except (sqlite3.Error, OSError, TimeoutError, StoreUnavailableError) as err:
            await pool.close()
            raise StoreUnavailableError(
                f"could not open SQLite database {path}: {err}", location=path
            ) from err
        await pool.release(connection)
        return cls(pool, store=Store(store_config, location=path), location=path)

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lock held past the busy timeout or a lost file."""
        return isinstance(err, StoreUnavailableError) or is_busy(err)

    async def lease_held(self, name: str) -> None:
        """SQLite has no leases: batches take turns under its write lock."""

    @asynccontextmanager
    async def lease(
        self, name: str, *, poll_interval: float, log: Logger
    ) -> AsyncIterator[NoLease]:
        """No lock is held: every batch begins with ``BEGIN IMMEDIATE``, SQLite's one write
        lock, and reads its checkpoint under it, so workers of one partition take turns
        and never handle an event twice."""
        yield NoLease(self.transaction)

    def news(self) -> AbstractAsyncContextManager[LocalNews]:
        """Wake-ups on appends committed through this database; others are polled for."""
        return local_news(self._appended)

    def transaction(self) -> _Transaction:
        """A connection inside ``BEGIN IMMEDIATE``; see ``Database.transaction``."""
        return _Transaction(self)

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist."""
        async with self.transaction() as connection:
            with translated(self._location):
                for statement in schema_statements("sqlite", self._store.config):
                    await connection.execute(statement)

    async def aclose(self) -> None:
        """Close every connection."""
        await self._pool.close()


def _probe(path: str) -> None:
    sqlite3.connect(path).close()


class _Transaction:
    """``SqliteBackend.transaction()``.

    aiosqlite runs a connection's statements one after another on its own thread, and a
    cancelled await does not stop a statement already queued there. So whenever a block
    does not end in COMMIT, a ROLLBACK is queued behind whatever is still pending (a BEGIN
    included) before the connection goes back to the pool.
    """

    __slots__ = ("_backend", "_connection")

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend

    async def __aenter__(self) -> aiosqlite.Connection:
        backend = self._backend
        connection = await backend._pool.acquire()
        began = False
        try:
            with translated(backend._location):
                await connection.execute("BEGIN IMMEDIATE")
            began = True
        finally:
            if not began:
                settled = await _rollback_quietly(connection)
                await backend._pool.release(connection, discard=not settled)
        backend._store.appends.begin(connection)
        self._connection = connection
        return connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend, connection = self._backend, self._connection
        appended = backend._store.appends.end(connection)
        settled = True
        try:
            if exc_type is None:
                committed = False
                try:
                    # Not shielded: a COMMIT queued on the connection's thread runs even if
                    # this await is cancelled, and the ROLLBACK below then finds nothing.
                    with translated(backend._location):
                        await connection.execute("COMMIT")
                    committed = True
                finally:
                    if not committed:
                        settled = await _rollback_quietly(connection)
                if appended:
                    backend._appended.fire()
            else:
                settled = await _rollback_quietly(connection)
        finally:
            await backend._pool.release(connection, discard=not settled)


async def _rollback_quietly(connection: aiosqlite.Connection) -> bool:
    """Roll back whatever is open; whether the connection is fit for reuse."""
    try:
        await shielded(connection.execute("ROLLBACK"))
    except sqlite3.OperationalError as err:
        return "no transaction is active" in str(err)
    except (sqlite3.Error, ValueError):
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
        return False
    return True
