"""The MySQL backend: the pool, transactions, leases and migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote

import aiomysql

from ... import projection
from ..._async import shielded
from ..._url import DatabaseURL
from ...errors import StoreUnavailableError
from ...log import Logger, get_logger
from ...migrations import schema_statements
from ...projection.config import ProcessorConfig
from ...store import StoreConfig
from .._shared import (
    LocalNews,
    lease_name,
    local_news,
    wait_for_lock,
)
from ..base import BackendBase
from .errors import LOCK_ERRORS, error_code, is_unavailable, translated
from .sql import SESSION_SETUP
from .store import Store

# GET_LOCK name that serializes concurrent migrate() calls.
_MIGRATE_LOCK = "pupsourcing_async.migrate"


class MysqlBackend(BackendBase[Store]):
    """A MySQL or MariaDB database reached through an aiomysql pool.

    Args:
        pool: The pool to take connections from; its connections must run
            ``SESSION_SETUP`` (READ COMMITTED, UTC) when they open.
        store: The store bound to this database's tables.
        location: Where the database is, for messages.
        owns_pool: Whether :meth:`aclose` closes the pool.
    """

    dialect = "mysql"

    def __init__(
        self, pool: Any, *, store: Store, location: str = "MySQL", owns_pool: bool = True
    ) -> None:
        self._pool = pool
        super().__init__(store=store, location=location)
        self._owns_pool = owns_pool

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
    ) -> MysqlBackend:
        """Open a pool on ``url``; fail fast if the server does not answer."""
        location = url.location
        parts = url.parts
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        options: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": parts.port or 3306,
            "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""),
            "db": url.database or None,
        }
        if "unix_socket" in query:
            options["unix_socket"] = query.pop("unix_socket")
        if query:
            raise ValueError(f"unsupported MySQL URL options: {', '.join(sorted(query))}")
        options.update(pool_options)
        try:
            pool = await aiomysql.create_pool(
                minsize=max(min_size, 1),
                maxsize=max_size,
                connect_timeout=connect_timeout,
                autocommit=False,
                charset="utf8mb4",
                init_command=SESSION_SETUP,
                **options,
            )
        except Exception as err:
            raise StoreUnavailableError(
                f"could not connect to MySQL at {location}: {url.scrub(str(err))}",
                location=location,
            ) from err
        return cls(pool, store=Store(store_config, location=location), location=location)

    @property
    def pool(self) -> Any:
        """The aiomysql pool, for running your own queries."""
        return self._pool

    def transaction(self) -> _Transaction:
        """A pooled connection inside a transaction; see ``Database.transaction``.

        The transaction begins with the first statement (the connection does not
        autocommit). A connection interrupted mid-query is closed rather than reused:
        its protocol state is unknown, and the server rolls back when it goes.
        """
        return _Transaction(self)

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lost connection, a deadlock or a lock wait timeout."""
        if isinstance(err, StoreUnavailableError) or is_unavailable(err):
            return True
        return error_code(err) in LOCK_ERRORS

    async def lease_held(self, name: str) -> bool:
        """Whether any session holds the ``GET_LOCK`` of checkpoint ``name``."""
        lock = lease_name(self._store.config.events_table, name)
        async with self.transaction() as connection, connection.cursor() as cursor:
            with translated(self._location):
                await cursor.execute("SELECT IS_USED_LOCK(%s)", (lock,))
                rows = await cursor.fetchall()
        return rows[0][0] is not None

    @asynccontextmanager
    async def lease(self, name: str, *, poll_interval: float, log: Logger) -> AsyncIterator[_Lease]:
        """Hold ``GET_LOCK`` on checkpoint ``name`` on a connection of its own.

        The lock goes with the connection: if it dies, the server releases the lock, and
        the batch that notices fails (batches run on this same connection).
        """
        lock = lease_name(self._store.config.events_table, name)
        with translated(self._location):
            connection = await self._pool.acquire()
        released = False

        async def try_lock() -> bool:
            async with connection.cursor() as cursor:
                with translated(self._location):
                    await cursor.execute("SELECT GET_LOCK(%s, 0)", (lock,))
                    held: bool = (await cursor.fetchall())[0][0] == 1
                    await connection.commit()
            return held

        try:
            await wait_for_lock(try_lock, checkpoint=name, poll_interval=poll_interval, log=log)
            yield _Lease(self, connection)
            async with connection.cursor() as cursor:
                with translated(self._location):
                    await cursor.execute("SELECT RELEASE_LOCK(%s)", (lock,))
                    await cursor.fetchall()
                    await connection.commit()
            released = True
        finally:
            if not released:
                # Closing the connection is what surely releases the lock (and whatever
                # state an interrupted query left on it).
                connection.close()
            await _release(self._pool, connection)

    def news(self) -> AbstractAsyncContextManager[LocalNews]:
        """Wake-ups on appends committed through this database; others are polled for."""
        return local_news(self._appended)

    async def migrate(self) -> None:
        """Create the tables if they do not exist; safe to run concurrently."""
        async with self.transaction() as connection, connection.cursor() as cursor:
            with translated(self._location):
                await cursor.execute("SELECT GET_LOCK(%s, 60)", (_MIGRATE_LOCK,))
                if (await cursor.fetchall())[0][0] != 1:
                    raise StoreUnavailableError(
                        f"another migration on MySQL at {self._location} held its lock for "
                        "60 seconds",
                        location=self._location,
                    )
                # "Table already exists" is a note, which aiomysql would turn into a warning.
                await cursor.execute("SET SESSION sql_notes = 0")
                try:
                    for statement in schema_statements("mysql", self._store.config):
                        await cursor.execute(statement)
                finally:
                    await cursor.execute("SET SESSION sql_notes = 1")
                    await cursor.execute("SELECT RELEASE_LOCK(%s)", (_MIGRATE_LOCK,))
                    await cursor.fetchall()

    async def aclose(self) -> None:
        """Close the pool, if this backend opened it."""
        if self._owns_pool:
            self._pool.close()
            await self._pool.wait_closed()


class Processor(projection.Processor):
    """A projection processor on an aiomysql pool you own.

    Args:
        pool: Your aiomysql pool; its connections must run ``SESSION_SETUP`` when they open
            (``init_command=SESSION_SETUP``). Each running projection holds one connection.
        store: The store to read (share one per database).
        config: How to run.
    """

    def __init__(self, pool: Any, store: Store, config: ProcessorConfig | None = None) -> None:
        super().__init__(MysqlBackend(pool, store=store, owns_pool=False), config)


class _Lease:
    __slots__ = ("_backend", "_connection")

    def __init__(self, backend: MysqlBackend, connection: Any) -> None:
        self._backend = backend
        self._connection = connection

    def transaction(self) -> _Transaction:
        return _Transaction(self._backend, self._connection)


class _Transaction:
    """``MysqlBackend.transaction()``; with ``connection`` (a lease's) it neither acquires
    nor releases one.

    A connection interrupted mid-query (a cancellation, a lost server) is closed, never
    reused: aiomysql cannot tell where in the protocol it stopped, and the server rolls
    back whatever the connection left open.
    """

    __slots__ = ("_backend", "_connection", "_owned")

    def __init__(self, backend: MysqlBackend, connection: Any = None) -> None:
        self._backend = backend
        self._owned = connection is None
        self._connection = connection

    async def __aenter__(self) -> Any:
        if self._owned:
            with translated(self._backend._location):
                self._connection = await self._backend._pool.acquire()
        self._backend._store.appends.begin(self._connection)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend, connection = self._backend, self._connection
        appended = backend._store.appends.end(connection)
        try:
            if exc_type is not None:
                if (
                    issubclass(exc_type, asyncio.CancelledError)
                    or (exc is not None and is_unavailable(exc))
                    or isinstance(exc, StoreUnavailableError)
                ):
                    connection.close()
                else:
                    await _rollback_quietly(connection)
                return
            try:
                await connection.commit()
            except asyncio.CancelledError:
                connection.close()
                raise
            except Exception as err:
                connection.close()
                if is_unavailable(err):
                    raise StoreUnavailableError(
                        f"the connection to MySQL at {backend._location} failed during "
                        f"COMMIT; the transaction may or may not have committed: {err}",
                        location=backend._location,
                    ) from err
                with translated(backend._location):
                    raise
            if appended:
                backend._appended.fire()
        finally:
            if self._owned:
                await _release(backend._pool, connection)


async def _release(pool: Any, connection: Any) -> None:
    # aiomysql's release is synchronous but may hand back a task that wakes waiting
    # acquirers; a cancellation here must not cancel that task.
    waking = pool.release(connection)
    if not waking.done():
        await asyncio.shield(waking)


async def _rollback_quietly(connection: Any) -> None:
    try:
        await shielded(connection.rollback())
    except Exception:
        connection.close()
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
