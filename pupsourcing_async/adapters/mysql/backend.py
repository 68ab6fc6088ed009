"""The MySQL backend: the pool, transactions, leases and migrations."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

import aiomysql

from ... import es, projection
from ..._async import acquire_safely, shielded
from ..._url import DatabaseURL
from ...errors import StoreUnavailableError, TransactionRolledBackError, UnsupportedURLError
from ...log import Logger, get_logger
from ...projection.config import ProcessorConfig
from ...store import StoreConfig
from .._shared import (
    LocalNews,
    lease_name,
    local_news,
    refused_commit,
    wait_for_lock,
)
from ..base import BackendBase
from .errors import LOCK_ERRORS, error_code, is_unavailable, translated
from .literals import render
from .schema import inspect_schema, migrate_schema
from .sql import SESSION_SETUP
from .store import Store

# GET_LOCK name that serializes concurrent migrate() calls.
_MIGRATE_LOCK = "pupsourcing_async.migrate"

# How long a lease whose connection was closed waits for the server to free its lock.
_RELEASE_WAIT = 5.0

_TRUE = {"1", "true", "yes", "on", "required"}
_FALSE = {"0", "false", "no", "off", "disabled"}
_URL_OPTIONS = (
    "unix_socket",
    "charset",
    "connect_timeout",
    "program_name",
    "auth_plugin",
    "ssl",
    "ssl_ca",
    "ssl_cert",
    "ssl_key",
    "ssl_verify_cert",
    "ssl_verify_identity",
)


def url_options(url: DatabaseURL) -> dict[str, Any]:
    """aiomysql's connect options from a URL's query string.

    Raises:
        UnsupportedURLError: an option aiomysql does not take, or one this store cannot
            work with (a character set other than utf8mb4), or a malformed value.
    """
    given = dict(url.options)
    unknown = sorted(set(given) - set(_URL_OPTIONS))
    if unknown:
        raise UnsupportedURLError(
            f"unsupported MySQL URL option(s) {', '.join(unknown)} in {url}: "
            f"supported are {', '.join(_URL_OPTIONS)}",
            scheme=url.scheme,
        )
    options: dict[str, Any] = {}
    for name in ("unix_socket", "program_name", "auth_plugin"):
        if name in given:
            options[name] = given[name]
    if given.get("charset", "utf8mb4").lower() != "utf8mb4":
        raise UnsupportedURLError(
            f"the store needs charset=utf8mb4, got charset={given['charset']} in {url}",
            scheme=url.scheme,
        )
    if "connect_timeout" in given:
        try:
            options["connect_timeout"] = float(given["connect_timeout"])
        except ValueError:
            raise UnsupportedURLError(
                f"connect_timeout must be a number of seconds in {url}", scheme=url.scheme
            ) from None
    tls = {name: given[name] for name in _URL_OPTIONS[5:] if name in given}
    if tls:
        options["ssl"] = _ssl_context(tls, url)
    return options


def _flag(tls: dict[str, str], name: str, default: bool, url: DatabaseURL) -> bool:
    value = tls.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise UnsupportedURLError(f"{name} must be true or false in {url}", scheme=url.scheme)


def _ssl_context(tls: dict[str, str], url: DatabaseURL) -> ssl.SSLContext | None:
    if not _flag(tls, "ssl", True, url):
        return None
    try:
        context = ssl.create_default_context(cafile=tls.get("ssl_ca"))
        if "ssl_cert" in tls:
            context.load_cert_chain(tls["ssl_cert"], tls.get("ssl_key"))
    except (OSError, ssl.SSLError) as err:
        raise UnsupportedURLError(
            f"cannot use the TLS files named in {url}: {err}", scheme=url.scheme
        ) from err
    verify = _flag(tls, "ssl_verify_cert", "ssl_ca" in tls, url)
    context.check_hostname = verify and _flag(tls, "ssl_verify_identity", verify, url)
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


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
        self._log = get_logger(store.config.logger, "pupsourcing_async.database")
        #: What the last ``migrate()`` found the schema lacks (see ``schema.py``).
        self.schema_notes: list[str] = []

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
        options: dict[str, Any] = {
            "host": url.host,
            "port": url.port or 3306,
            "user": url.user or "root",
            "password": url.password or "",
            "db": url.database or None,
        }
        options.update(url_options(url))
        extra = dict(pool_options)
        # A pool option's own init command runs first; the session setup always last.
        init_command = SESSION_SETUP
        if "init_command" in extra:
            init_command = f"{extra.pop('init_command')}; {SESSION_SETUP}"
        options.update(extra)
        options.setdefault("connect_timeout", connect_timeout)
        try:
            pool = await aiomysql.create_pool(
                minsize=max(min_size, 1),
                maxsize=max_size,
                autocommit=False,
                charset="utf8mb4",
                init_command=init_command,
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

    @property
    def connections_in_use(self) -> int:
        """Connections taken from the pool and not yet given back."""
        return int(self._pool.size - self._pool.freesize)

    async def _acquire(self) -> Any:
        """A pooled connection, acquired without losing a cancellation or the connection."""
        with translated(self._location):
            return await acquire_safely(
                self._pool.acquire(), lambda connection: _release(self._pool, connection)
            )

    def transaction(self) -> _Transaction:
        """A pooled connection inside a transaction; see ``Database.transaction``.

        The transaction begins with the first statement (the connection does not
        autocommit). A connection interrupted mid-query is closed rather than reused:
        its protocol state is unknown, and the server rolls back when it goes.
        """
        return _Transaction(self)

    async def append(
        self, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """The append with its START TRANSACTION and COMMIT in the same round trip as its
        statements: see ``Database.append``.

        A connection interrupted mid-append is closed: the server rolls back what it had
        not committed, and a retry with the same events finds what it had.
        """
        connection = await self._acquire()
        try:
            result = await self._store.append_alone(connection, expected, events)
        except BaseException as err:
            if (
                isinstance(err, (asyncio.CancelledError, StoreUnavailableError))
                or is_unavailable(err)
                or connection.closed
            ):
                connection.close()
            else:
                # A conflict's look-ups run after its ROLLBACK, in a transaction of their
                # own (the connection does not autocommit), which the server does not
                # report as one: end it, or the connection idles in it holding metadata
                # locks.
                await _rollback_quietly(connection)
            raise
        finally:
            await _release(self._pool, connection)
        self._appended.fire()
        return result

    async def read_events(self, from_position: int, limit: int) -> list[es.PersistedEvent]:
        """``store.read_events`` in a transaction of its own (gap-safe)."""
        async with self.transaction() as connection:
            return await self._store.read_events(connection, from_position, limit)

    async def read_aggregate_stream(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None,
        to_version: int | None,
    ) -> es.Stream:
        """``store.read_aggregate_stream`` in a transaction of its own."""
        async with self.transaction() as connection:
            return await self._store.read_aggregate_stream(
                connection, bounded_context, aggregate_type, aggregate_id, from_version, to_version
            )

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lost connection, a deadlock or a lock wait timeout."""
        if isinstance(err, (StoreUnavailableError, TransactionRolledBackError)):
            return True
        return is_unavailable(err) or error_code(err) in LOCK_ERRORS

    async def lease_held(self, name: str) -> bool:
        """Whether any session holds the ``GET_LOCK`` of checkpoint ``name``."""
        lock = lease_name(self._store.config.events_table, name)
        with translated(self._location):
            async with self.transaction() as connection, connection.cursor() as cursor:
                await cursor.execute(render("SELECT IS_USED_LOCK(%s)", [lock]))
                rows = await cursor.fetchall()
        return rows[0][0] is not None

    @asynccontextmanager
    async def lease(self, name: str, *, poll_interval: float, log: Logger) -> AsyncIterator[_Lease]:
        """Hold ``GET_LOCK`` on checkpoint ``name`` on a connection of its own.

        The lock goes with the connection: if it dies, the server releases the lock, and
        the batch that notices fails (batches run on this same connection). When the
        block ends the lock is free again, whatever ended it: a connection interrupted
        mid-query is closed, and then the server's release is waited for.
        """
        lock = lease_name(self._store.config.events_table, name)
        connection = await self._acquire()
        holder: list[int] = []  # the session that holds the lock, once it does

        async def try_lock() -> bool:
            try:
                with translated(self._location):
                    async with connection.cursor() as cursor:
                        await cursor.execute(
                            render("SELECT GET_LOCK(%s, 0), CONNECTION_ID()", [lock])
                        )
                        locked, session = (await cursor.fetchall())[0]
                        await connection.commit()
            except asyncio.CancelledError:
                connection.close()  # interrupted mid-query: unfit for another statement
                raise
            if locked == 1:
                holder.append(int(session))
            return bool(locked == 1)

        try:
            await wait_for_lock(try_lock, checkpoint=name, poll_interval=poll_interval, log=log)
            yield _Lease(self, connection)
        finally:
            try:
                await shielded(self._give_up(connection, lock, holder))
            finally:
                await _release(self._pool, connection)

    async def _give_up(self, connection: Any, lock: str, holder: list[int]) -> None:
        """Release a lease's lock: on its connection if that is still fit for a statement,
        else by closing it and waiting until the server has let the lock go."""
        if not holder:
            return
        if not connection.closed:
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute(render("SELECT RELEASE_LOCK(%s)", [lock]))
                    await cursor.fetchall()
                    await connection.commit()
                return
            except Exception:
                connection.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RELEASE_WAIT
        while loop.time() < deadline:
            try:
                async with self.transaction() as other, other.cursor() as cursor:
                    await cursor.execute(render("SELECT IS_USED_LOCK(%s)", [lock]))
                    owner = (await cursor.fetchall())[0][0]
            except Exception:
                return  # the server is away; it frees the lock with the session
            if owner is None or int(owner) != holder[0]:
                return
            await asyncio.sleep(0.005)
        self._log.error("the server kept a closed session's lease", lock=lock)

    def news(self) -> AbstractAsyncContextManager[LocalNews]:
        """Wake-ups on appends committed through this database; others are polled for."""
        return local_news(self._appended)

    async def migrate(self) -> None:
        """Create the tables if they do not exist; safe to run concurrently."""
        with translated(self._location):
            async with self.transaction() as connection, connection.cursor() as cursor:
                await cursor.execute(render("SELECT GET_LOCK(%s, 60)", [_MIGRATE_LOCK]))
                if (await cursor.fetchall())[0][0] != 1:
                    raise StoreUnavailableError(
                        f"another migration on MySQL at {self._location} held its lock for "
                        "60 seconds",
                        location=self._location,
                    )
                # "Table already exists" is a note, which aiomysql would turn into a warning.
                await cursor.execute("SET SESSION sql_notes = 0")
                try:
                    self.schema_notes = await migrate_schema(cursor, self._store.config, self._log)
                finally:
                    await cursor.execute("SET SESSION sql_notes = 1")
                    await cursor.execute(render("SELECT RELEASE_LOCK(%s)", [_MIGRATE_LOCK]))
                    await cursor.fetchall()
        self._store.forget_facts()

    async def inspect_schema(self) -> list[str]:
        """What the existing tables lack (see ``schema.inspect_schema``)."""
        with translated(self._location):
            async with self.transaction() as connection, connection.cursor() as cursor:
                return await inspect_schema(cursor, self._store.config)

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
            self._connection = await self._backend._acquire()
        self._backend._store.appends.begin(self._connection)
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend, connection = self._backend, self._connection
        doomed = backend._store.appends.doomed(connection)
        appended = backend._store.appends.end(connection)
        try:
            if exc_type is None and doomed is not None:
                await _rollback_quietly(connection)
                raise refused_commit(doomed, backend._location)
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
                # Once sent, COMMIT runs to its end; a cancellation meanwhile goes on after.
                await shielded(connection.commit())
            except Exception as err:
                connection.close()
                if is_unavailable(err):
                    raise StoreUnavailableError(
                        f"the connection to MySQL at {backend._location} failed during "
                        "COMMIT; the transaction may or may not have committed (an append "
                        f"retried with the same events is stored once): {err}",
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
