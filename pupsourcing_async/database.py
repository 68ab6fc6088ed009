"""Connecting to an event store by URL: one ``Database`` API for every engine.

```python
async with pupsourcing_async.connect("sqlite:///app.db") as db:
    await db.migrate()
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [event])
```
"""

from __future__ import annotations

import importlib
from collections.abc import Generator, Mapping
from contextlib import AbstractAsyncContextManager
from types import ModuleType, TracebackType
from typing import Any

from ._url import DatabaseURL, parse_url
from .adapters.base import Backend, GapSafeStore
from .store import StoreConfig

__all__ = ["Database", "connect"]

# dialect -> (adapter module, backend class, driver package, extra to install)
_ADAPTERS = {
    "postgres": ("pupsourcing_async.adapters.postgres", "PostgresBackend", "asyncpg", "postgres"),
    "sqlite": ("pupsourcing_async.adapters.sqlite", "SqliteBackend", "aiosqlite", None),
    "mysql": ("pupsourcing_async.adapters.mysql", "MysqlBackend", "aiomysql", "mysql"),
}


def _adapter_module(dialect: str) -> ModuleType:
    module_name, _, driver, extra = _ADAPTERS[dialect]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != driver:
            raise
        raise ModuleNotFoundError(
            f"the {dialect} adapter needs {driver}: pip install 'pupsourcing-async[{extra}]'",
            name=driver,
        ) from err


class Database:
    """An event store database: a connection pool, a store, and the operations on both.

    Made by :func:`connect`. Use it as an async context manager, or call :meth:`close`.

    Attributes:
        store: The event store bound to this database's tables.
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._closed = False

    @property
    def store(self) -> GapSafeStore:
        """The event store; pass it the ``tx`` of :meth:`transaction`."""
        return self._backend.store

    @property
    def dialect(self) -> str:
        """``"postgres"``, ``"sqlite"`` or ``"mysql"``."""
        return self._backend.dialect

    @property
    def location(self) -> str:
        """Where the database is (host, port and name, or file); never a password."""
        return self._backend.location

    @property
    def backend(self) -> Backend:
        """The adapter's backend, for the projection processor and tools."""
        return self._backend

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A connection inside a new transaction, for the store's ``tx`` argument.

        The transaction commits when the block exits normally and rolls back when it
        raises or is cancelled (the rollback finishes before the cancellation goes on).
        On SQLite it begins with ``BEGIN IMMEDIATE``. The connection is the driver's own
        (asyncpg, aiosqlite or aiomysql), so your own queries can share the transaction.

        Raises:
            StoreUnavailableError: no connection could be had, or it broke.
        """
        return self._backend.transaction()

    async def migrate(self) -> None:
        """Create the event store's tables and indexes if they do not exist.

        Idempotent, safe to run from several processes at once, and harmless over tables
        the Go library created.
        """
        await self._backend.migrate()

    async def close(self) -> None:
        """Close every connection. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._backend.aclose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Database {self.dialect} {self.location}>"


class _Connecting:
    """What :func:`connect` returns: await it, or use it as an async context manager."""

    def __init__(self, url: DatabaseURL, options: dict[str, Any]) -> None:
        self._url = url
        self._options = options
        self._database: Database | None = None

    async def _open(self) -> Database:
        backend_class = getattr(_adapter_module(self._url.dialect), _ADAPTERS[self._url.dialect][1])
        backend: Backend = await backend_class.connect(self._url, **self._options)
        return Database(backend)

    def __await__(self) -> Generator[Any, None, Database]:
        return self._open().__await__()

    async def __aenter__(self) -> Database:
        self._database = await self._open()
        return self._database

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._database is not None:
            await self._database.close()


def connect(
    url: str,
    *,
    store_config: StoreConfig | None = None,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    pool_options: Mapping[str, Any] | None = None,
) -> _Connecting:
    """Open an event store database by URL.

    ``postgresql://user:password@host:5432/db`` (asyncpg), ``mysql://user:password@host:3306/db``
    (aiomysql) or ``sqlite:///relative.db`` / ``sqlite:////absolute.db`` (aiosqlite, the
    embedded default). Use ``async with connect(url) as db:`` or ``db = await connect(url)``.

    Args:
        url: The database URL. SQLAlchemy forms such as ``postgresql+asyncpg://`` work too.
        store_config: Table names and logger; the defaults when omitted.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        connect_timeout: Seconds to wait for the database to answer.
        pool_options: Passed to the driver's pool as they are (for example asyncpg's
            ``server_settings``); for SQLite, ``busy_timeout`` in seconds (default 10).

    Raises:
        UnsupportedURLError: the URL's scheme is not one of the above.
        StoreUnavailableError: the database did not answer; the message names its host.
    """
    parsed = parse_url(url)
    if min_size < 0 or max_size < 1 or min_size > max_size:
        raise ValueError(
            f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
            f"got min_size={min_size}, max_size={max_size}"
        )
    if connect_timeout <= 0:
        raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
    options: dict[str, Any] = {
        "store_config": store_config or StoreConfig(),
        "min_size": min_size,
        "max_size": max_size,
        "connect_timeout": connect_timeout,
        "pool_options": dict(pool_options or {}),
    }
    return _Connecting(parsed, options)
