"""The PostgreSQL backend: the pool, transactions, leases and migrations."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ... import es, projection
from ..._async import acquire_safely, shielded
from ..._url import DatabaseURL
from ...errors import StoreUnavailableError, TransactionRolledBackError, UnsupportedURLError
from ...log import Logger, get_logger
from ...migrations import registration_trigger, schema_statements
from ...projection.config import ProcessorConfig
from ...store import StoreConfig
from .._shared import (
    lease_key,
    refused_commit,
    wait_for_lock,
)
from ..base import BackendBase
from .errors import TRANSIENT, is_unavailable, translate, translated
from .notify import Listener, ListenNews, Notifier
from .sql import notify_channel
from .store import Store

# Errors of connect() that say the URL's options are wrong, not that the server is away:
# asyncpg's own checks, and the server's refusal of an unknown setting (asyncpg passes
# query options it does not know on as server settings).
_URL_REFUSED = (
    asyncpg.ClientConfigurationError,
    asyncpg.UndefinedObjectError,
    asyncpg.InvalidParameterValueError,
    asyncpg.CantChangeRuntimeParamError,
)


class Resetter:
    """The pool's reset of a connection given back, skipped when the library knows the
    connection is clean.

    asyncpg resets every connection on release with a round trip of its own (UNLISTEN,
    RESET ALL, releasing advisory locks). A connection that ran only the library's own
    statements (``Database.append``, the one-shot reads), or whose transaction block sent
    that reset together with its COMMIT or ROLLBACK, needs none.
    """

    def __init__(self) -> None:
        self._clean: weakref.WeakSet[asyncpg.Connection[Any]] = weakref.WeakSet()

    def mark_clean(self, connection: PoolConnectionProxy[Any]) -> None:
        """``connection`` needs no reset when it is given back next.

        A connection already lost (its proxy let go by the pool) or left in a
        transaction is not marked: the pool closes or resets it as usual.
        """
        driver = getattr(connection, "_con", None)
        if driver is not None and not driver.is_closed() and not driver.is_in_transaction():
            self._clean.add(driver)

    async def __call__(self, connection: asyncpg.Connection[Any]) -> None:
        if connection in self._clean:
            self._clean.discard(connection)
            return
        query = connection.get_reset_query()
        if query:
            await connection.execute(query)


# How long close() waits for connections still checked out before closing them.
_CLOSE_TIMEOUT = 10.0

# pg_advisory_xact_lock key that serializes concurrent migrate() calls (CREATE ... IF NOT
# EXISTS is not safe against itself running concurrently).
_MIGRATE_LOCK = 0x7075_7073_6D69_6772  # "pupsmigr"


class PostgresBackend(BackendBase[Store]):
    """A PostgreSQL database reached through an asyncpg pool.

    Args:
        pool: The pool to take connections from. Each running processor holds one of its
            connections for its lease, and one more listens for notifications.
        store: The store bound to this database's tables.
        location: Where the database is, for messages.
        owns_pool: Whether :meth:`aclose` closes the pool.
    """

    dialect = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        store: Store,
        location: str = "PostgreSQL",
        owns_pool: bool = True,
    ) -> None:
        self._pool = pool
        super().__init__(store=store, location=location)
        self._owns_pool = owns_pool
        self._log = get_logger(store.config.logger, "pupsourcing_async.database")
        #: Set when this backend made the pool with a Resetter it can tell about clean
        #: connections (a pool you own resets as you configured it).
        self._resetter: Resetter | None = None
        self._listener = Listener(pool, notify_channel(store.config), self._appended)
        self._notifier = Notifier(pool, notify_channel(store.config))

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
    ) -> PostgresBackend:
        """Open a pool on ``url``; fail fast if the server does not answer."""
        location = url.location
        resetter = Resetter()
        options = dict(pool_options)
        options.setdefault("reset", resetter)
        try:
            pool = await asyncpg.create_pool(
                url.url,
                min_size=max(min_size, 1),
                max_size=max_size,
                timeout=connect_timeout,
                **options,
            )
        except _URL_REFUSED as err:
            # An option of the URL's query string that asyncpg or the server refuses.
            raise UnsupportedURLError(
                f"PostgreSQL URL {url} has an option that cannot be used: {url.scrub(str(err))}",
                scheme=url.scheme,
            ) from err
        except Exception as err:
            raise StoreUnavailableError(
                f"could not connect to PostgreSQL at {location}: {url.scrub(str(err))}",
                location=location,
            ) from err
        backend = cls(pool, store=Store(store_config, location=location), location=location)
        if options["reset"] is resetter:
            backend._resetter = resetter
        return backend

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        """The asyncpg pool, for running your own queries."""
        return self._pool

    @property
    def connections_in_use(self) -> int:
        """Connections taken from the pool and not yet given back."""
        return self._pool.get_size() - self._pool.get_idle_size()

    def _unavailable(self, action: str, err: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{action} on PostgreSQL at {self._location} failed: {err}", location=self._location
        )

    async def _acquire(self, action: str) -> PoolConnectionProxy[Any]:
        """A pooled connection; a server that does not answer is ``StoreUnavailableError``."""
        try:
            return await acquire_safely(self._pool.acquire(), self._release)
        except Exception as err:
            if is_unavailable(err):
                raise self._unavailable(action, err) from err
            raise translate(err, self._location) from err

    async def _release(self, connection: PoolConnectionProxy[Any]) -> None:
        """Give a connection back to the pool. asyncpg shields the release from
        cancellation; a connection that fails its reset is closed by the pool, and that
        failure is no news for the caller, whose work is done (or already failed)."""
        try:
            await self._pool.release(connection)
        except Exception as err:
            self._log.debug("a connection failed its reset and was closed", error=str(err))

    def transaction(self) -> _Transaction:
        """A pooled connection inside a transaction; see ``Database.transaction``."""
        return _Transaction(self)

    def _done_with(self, connection: PoolConnectionProxy[Any]) -> None:
        """``connection`` ran only the library's statements: no reset when given back."""
        if self._resetter is not None:
            self._resetter.mark_clean(connection)

    async def append(
        self, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """One statement in autocommit: see ``Database.append``."""
        connection = await self._acquire("getting a connection")
        try:
            result = await self._store.append_alone(connection, expected, events)
            self._done_with(connection)
        finally:
            await self._release(connection)
        self._appended.fire()
        self._notifier.poke(result.global_positions[-1])
        return result

    async def read_events(self, from_position: int, limit: int) -> list[es.PersistedEvent]:
        """The read in autocommit: a statement's own snapshot is all gap safety needs."""
        connection = await self._acquire("getting a connection")
        try:
            events = await self._store.read_events(connection, from_position, limit)
            self._done_with(connection)
        finally:
            await self._release(connection)
        return events

    async def read_aggregate_stream(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None,
        to_version: int | None,
    ) -> es.Stream:
        """One statement in autocommit."""
        connection = await self._acquire("getting a connection")
        try:
            stream = await self._store.read_aggregate_stream(
                connection, bounded_context, aggregate_type, aggregate_id, from_version, to_version
            )
            self._done_with(connection)
        finally:
            await self._release(connection)
        return stream

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist; safe to run concurrently."""
        async with self.transaction() as connection:
            with translated(self._location):
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                for statement in schema_statements("postgres", self._store.config):
                    await connection.execute(statement)

    async def inspect_schema(self) -> list[str]:
        """Whether the events table has its registration trigger."""
        config = self._store.config
        async with self.transaction() as connection:
            with translated(self._location):
                present = await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = lower($1) "
                    "AND tgrelid = to_regclass($2))",
                    registration_trigger(config),
                    config.events_table,
                )
        if present:
            return []
        return [
            f"the trigger {registration_trigger(config)} is missing: events written by "
            "anything but this library (the Go library, psql) may, rarely, be skipped by "
            "gap-safe readers; run migrate() as a role that may create triggers"
        ]

    async def aclose(self) -> None:
        """Stop notifying and listening, and close the pool if this backend opened it.

        Connections still checked out (a transaction left open elsewhere) are waited for
        up to ``_CLOSE_TIMEOUT`` seconds, then closed.
        """
        await self._notifier.aclose()
        await shielded(self._listener.aclose())
        if self._owns_pool:
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await shielded(self._pool.close())
            except TimeoutError:
                self._log.error(
                    "connections still in use after the close timeout were terminated",
                    timeout=_CLOSE_TIMEOUT,
                )
                self._pool.terminate()

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lost connection, a deadlock or a serialization failure."""
        return isinstance(err, TRANSIENT) or is_unavailable(err)

    async def lease_held(self, name: str) -> bool:
        """Whether any session holds the advisory lock of checkpoint ``name``."""
        key = lease_key(self._store.config.events_table, name) & 0xFFFF_FFFF_FFFF_FFFF
        async with self.transaction() as connection:
            with translated(self._location):
                # pg_locks shows a bigint advisory key as two 32-bit halves.
                held: bool = await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND objsubid = 1 AND classid::bigint = $1 "
                    "AND objid::bigint = $2 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()))",
                    key >> 32,
                    key & 0xFFFF_FFFF,
                )
        return held

    @asynccontextmanager
    async def lease(self, name: str, *, poll_interval: float, log: Logger) -> AsyncIterator[_Lease]:
        """Hold a session advisory lock on checkpoint ``name`` on a connection of its own.

        The lock goes with the connection: if it dies, the server releases the lock, and
        the batch that notices fails (batches run on this same connection).
        """
        key = lease_key(self._store.config.events_table, name)
        connection = await self._acquire("getting a connection for a lease")

        async def try_lock() -> bool:
            with translated(self._location):
                # An advisory lock assigns no transaction id, so it never spoils a fence.
                locked: bool = await connection.fetchval("SELECT pg_try_advisory_lock($1)", key)
            return locked

        try:
            await wait_for_lock(try_lock, checkpoint=name, poll_interval=poll_interval, log=log)
            yield _Lease(self, connection)
        finally:
            # Releasing resets the connection, which unlocks every advisory lock it holds
            # (a connection that cannot be reset is closed, which unlocks them too).
            await self._release(connection)

    @asynccontextmanager
    async def news(self) -> AsyncIterator[ListenNews]:
        """Wake-ups from LISTEN on the store's channel, shared by this backend's processors."""
        self._listener.subscribe()
        try:
            await self._listener.ensure()
            yield ListenNews(self._listener, self._appended)
        finally:
            await shielded(self._listener.unsubscribe())


class Processor(projection.Processor):
    """A projection processor on a pool you own.

    Args:
        pool: Your asyncpg pool; each running projection holds one connection for its
            lease, and one more listens for notifications.
        store: The store to read (share one per database).
        config: How to run.
    """

    def __init__(
        self, pool: asyncpg.Pool[Any], store: Store, config: ProcessorConfig | None = None
    ) -> None:
        super().__init__(PostgresBackend(pool, store=store, owns_pool=False), config)


class _Lease:
    __slots__ = ("_backend", "_connection")

    def __init__(self, backend: PostgresBackend, connection: PoolConnectionProxy[Any]) -> None:
        self._backend = backend
        self._connection = connection

    def transaction(self) -> _Transaction:
        return _Transaction(self._backend, self._connection)


class _Transaction:
    """``PostgresBackend.transaction()``: a class rather than a generator, as it is on the
    path of every append and batch. With ``connection`` (a lease's) it neither acquires nor
    releases one.

    BEGIN and COMMIT are sent as plain statements: COMMIT answers ``ROLLBACK`` for a
    transaction that an error had already failed (a deadlock the block caught, say), and
    that answer must not pass for a commit. Once sent, COMMIT runs to its end even if the
    task is cancelled meanwhile (the cancellation goes on afterwards), so the outcome of a
    cancelled block is never a connection stuck mid-protocol: cancelled before COMMIT,
    nothing was kept; cancelled during it, the transaction committed.
    """

    __slots__ = ("_backend", "_connection", "_owned")

    def __init__(
        self, backend: PostgresBackend, connection: PoolConnectionProxy[Any] | None = None
    ) -> None:
        self._backend = backend
        self._owned = connection is None
        if connection is not None:
            self._connection = connection

    async def __aenter__(self) -> PoolConnectionProxy[Any]:
        backend = self._backend
        if self._owned:
            self._connection = await backend._acquire("getting a connection")
        connection = self._connection
        started = False
        try:
            await connection.execute("BEGIN")
            started = True
        except Exception as err:
            if is_unavailable(err):
                raise backend._unavailable("BEGIN", err) from err
            raise translate(err, backend._location) from err
        finally:
            if not started:
                await _rollback_quietly(connection)
                if self._owned:
                    await backend._release(connection)
        backend._store.appends.begin(connection)
        return connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend, connection = self._backend, self._connection
        appended = backend._store.appends.end(connection)
        # A connection of its own goes back to the pool with its reset sent in the same
        # round trip as its COMMIT or ROLLBACK (the reset runs first, inside the
        # transaction, so COMMIT's own answer comes last); a lease's keeps its session.
        reset = ""
        if self._owned and backend._resetter is not None:
            reset = _reset_query(connection)
        try:
            if exc_type is not None:
                if await _rollback_quietly(connection, reset) and reset:
                    backend._done_with(connection)
                return
            try:
                status = await shielded(connection.execute(f"{reset}COMMIT"))
            except Exception as err:
                if is_unavailable(err):
                    raise StoreUnavailableError(
                        f"the connection to PostgreSQL at {backend._location} failed "
                        "during COMMIT; the transaction may or may not have committed "
                        f"(an append retried with the same events is stored once): {err}",
                        location=backend._location,
                    ) from err
                if reset and not connection.is_closed() and connection.is_in_transaction():
                    # The reset in front of COMMIT failed, so COMMIT never ran: in a
                    # transaction an earlier statement had failed, the reset is refused.
                    await _rollback_quietly(connection)
                    if isinstance(err, asyncpg.InFailedSQLTransactionError):
                        raise _earlier_failure(backend._location) from None
                raise translate(err, backend._location) from err
            if status == "COMMIT" and reset:
                backend._done_with(connection)
            if status != "COMMIT":
                raise _earlier_failure(backend._location)
            if appended:
                backend._appended.fire()
                backend._notifier.poke(appended)
        finally:
            if self._owned:
                await backend._release(connection)


def _earlier_failure(location: str) -> TransactionRolledBackError:
    """A COMMIT the server turned into a ROLLBACK: an earlier statement had failed."""
    return refused_commit(
        TransactionRolledBackError(
            "an earlier statement failed", reason="an earlier statement failed", location=location
        ),
        location,
    )


def _reset_query(connection: PoolConnectionProxy[Any]) -> str:
    driver = getattr(connection, "_con", None)
    query = driver.get_reset_query() if driver is not None else ""
    return f"{query}\n" if query else ""


async def _rollback_quietly(connection: PoolConnectionProxy[Any], reset: str = "") -> bool:
    """Roll back (then reset, when given); whether it went through.

    The block's own exception is the one worth raising; a rollback on a broken
    connection fails too, and the pool discards that connection on release.
    """
    try:
        await shielded(connection.execute(f"ROLLBACK;\n{reset}"))
    except Exception:
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
        return False
    return True
