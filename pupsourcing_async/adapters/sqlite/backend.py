"""The SQLite backend: the connection pool, transactions and migrations."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any, TypeVar

import aiosqlite

from ... import es
from ..._url import DatabaseURL
from ...errors import StoreUnavailableError, TransactionRolledBackError
from ...log import Logger
from ...migrations import schema_statements
from ...store import StoreConfig
from .._shared import (
    LocalNews,
    NoLease,
    local_news,
    refused_commit,
)
from ..base import BackendBase
from .errors import is_busy, translated
from .pool import ConnectionPool, rollback_quietly
from .store import Store

T = TypeVar("T")


class SqliteBackend(BackendBase[Store]):
    """A SQLite database file reached through a small pool of aiosqlite connections.

    An in-memory database (``sqlite://`` or ``sqlite:///:memory:``) exists only within one
    connection, so it gets a pool of one.
    """

    dialect = "sqlite"

    def __init__(self, pool: ConnectionPool, *, store: Store, location: str) -> None:
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
        pool = ConnectionPool(path, max_size=size, busy_timeout=busy_timeout)
        try:
            if path != ":memory:":
                # Open the file once without aiosqlite: when aiosqlite fails to open one,
                # its worker thread outlives the failure and may call into a closed loop.
                await asyncio.to_thread(_probe, path)
            with translated(path):
                async with asyncio.timeout(connect_timeout):
                    connection = await pool.acquire()
        except (sqlite3.Error, OSError, TimeoutError, StoreUnavailableError) as err:
            await pool.close()
            raise StoreUnavailableError(
                f"could not open SQLite database {path}: {err}", location=path
            ) from err
        await pool.release(connection)
        return cls(pool, store=Store(store_config, location=path), location=path)

    @property
    def connections_in_use(self) -> int:
        """Connections taken from the pool and not yet given back."""
        return self._pool.in_use

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lock held past the busy timeout or a lost file."""
        return isinstance(err, (StoreUnavailableError, TransactionRolledBackError)) or is_busy(err)

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

    async def append(
        self, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """The append and its BEGIN IMMEDIATE and COMMIT in one call on the connection's
        thread. A cancelled await does not stop that call: it runs to its end (committed
        or rolled back, as a retry with the same events finds), and whatever next uses the
        connection queues behind it."""
        connection = await self._pool.acquire()
        settled = False
        try:
            result = await self._store.append_alone(connection, expected, events)
            settled = True
        except BaseException:
            settled = not connection.in_transaction or await rollback_quietly(connection)
            raise
        finally:
            await self._pool.release(connection, discard=not settled)
        self._appended.fire()
        return result

    async def read_events(self, from_position: int, limit: int) -> list[es.PersistedEvent]:
        """One statement outside a transaction: with one writer at a time every read of
        SQLite is gap-safe."""
        return await self._read(self._store.read_events, from_position, limit)

    async def read_aggregate_stream(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None,
        to_version: int | None,
    ) -> es.Stream:
        """One statement outside a transaction."""
        return await self._read(
            self._store.read_aggregate_stream,
            bounded_context,
            aggregate_type,
            aggregate_id,
            from_version,
            to_version,
        )

    async def _read(self, read: Callable[..., Awaitable[T]], *args: object) -> T:
        connection = await self._pool.acquire()
        try:
            return await read(connection, *args)
        finally:
            await self._pool.release(connection)

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist."""
        async with self.transaction() as connection:
            with translated(self._location):
                for statement in schema_statements("sqlite", self._store.config):
                    await connection.execute(statement)

    async def inspect_schema(self) -> list[str]:
        """Nothing: with one writer at a time, every writer is gap-safe."""
        return []

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
                settled = await rollback_quietly(connection)
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
        doomed = backend._store.appends.doomed(connection)
        appended = backend._store.appends.end(connection)
        settled = True
        try:
            if exc_type is None and doomed is not None:
                settled = await rollback_quietly(connection)
                raise refused_commit(doomed, backend._location)
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
                        settled = await rollback_quietly(connection)
                if appended:
                    backend._appended.fire()
            else:
                settled = await rollback_quietly(connection)
        finally:
            await backend._pool.release(connection, discard=not settled)
