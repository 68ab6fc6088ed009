"""Opening a backend on an application's ``AsyncEngine``: ``connect(engine)``."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from .._url import DatabaseURL, parse_url
from ..adapters.base import Backend
from ..errors import UnsupportedURLError
from ..store import StoreConfig
from ._pools import MysqlEnginePool, PostgresEnginePool, SqliteEnginePool

__all__ = ["causes", "engine_dialect", "is_engine", "open_backend"]

# SQLAlchemy dialect name -> the driver the store runs on there
_DRIVERS = {
    "postgresql": "asyncpg",
    "sqlite": "aiosqlite",
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
}


def is_engine(value: object) -> bool:
    """Whether ``value`` is a SQLAlchemy ``AsyncEngine``."""
    return isinstance(value, AsyncEngine)


def engine_dialect(engine: AsyncEngine) -> str:
    """``"postgres"``, ``"sqlite"`` or ``"mysql"``: which store runs on ``engine``."""
    return _where(engine).dialect


def _where(engine: AsyncEngine) -> DatabaseURL:
    if not isinstance(engine, AsyncEngine):
        raise TypeError(f"expected a URL or a SQLAlchemy AsyncEngine, got {type(engine).__name__}")
    name = engine.dialect.name
    if _DRIVERS.get(name) != engine.dialect.driver:
        raise UnsupportedURLError(
            f"an engine on {name}+{engine.dialect.driver} cannot carry the store: it runs on "
            "postgresql+asyncpg, sqlite+aiosqlite or mysql+aiomysql "
            "(pupsourcing_async.sqlalchemy.create_engine(url) makes one)",
            scheme=f"{name}+{engine.dialect.driver}",
        )
    return parse_url(engine.url.render_as_string(hide_password=True))


def causes(err: BaseException) -> list[BaseException]:
    """``err``, and what SQLAlchemy wrapped in it: a handler's Core statement that lost its
    connection raises SQLAlchemy's error, whose cause is the driver's."""
    found = [err]
    while type(found[-1]).__module__.startswith("sqlalchemy") and len(found) < 4:
        cause = found[-1].__cause__
        if cause is None:
            break
        found.append(cause)
    return found


class _SeesThroughSqlalchemy:
    """Tells a passing database trouble in a handler's Core statement, as in the store's
    own: the backend retries the batch instead of stopping the projection."""

    def is_transient(self, err: BaseException) -> bool:
        check = super().is_transient  # type: ignore[misc]
        return any(check(cause) for cause in causes(err))


async def open_backend(
    engine: AsyncEngine, *, store_config: StoreConfig, connect_timeout: float
) -> Backend:
    """A backend whose connections come from ``engine``'s pool; the engine stays open
    when it closes.

    Fails fast, like ``connect(url)``, when the database does not answer.
    """
    where = _where(engine)
    location = where.location
    backend: Any
    if where.dialect == "postgres":
        from ..adapters.postgres import PostgresBackend, Store

        class OnEnginePostgres(_SeesThroughSqlalchemy, PostgresBackend):
            pass

        postgres_pool = PostgresEnginePool(engine, location=location, wait_timeout=connect_timeout)
        # It quacks like the asyncpg.Pool the backend is written against.
        backend = OnEnginePostgres(
            cast(Any, postgres_pool),
            store=Store(store_config, location=location),
            location=location,
            owns_pool=False,
        )
        await postgres_pool.release(await postgres_pool.acquire())
    elif where.dialect == "mysql":
        from ..adapters.mysql import SESSION_SETUP, MysqlBackend
        from ..adapters.mysql import Store as MysqlStore

        class OnEngineMysql(_SeesThroughSqlalchemy, MysqlBackend):
            pass

        mysql_pool = MysqlEnginePool(
            engine, location=location, wait_timeout=connect_timeout, session_setup=SESSION_SETUP
        )
        backend = OnEngineMysql(
            mysql_pool,
            store=MysqlStore(store_config, location=location),
            location=location,
            owns_pool=False,
        )
        await mysql_pool.release(await mysql_pool.acquire())
    else:
        from ..adapters.sqlite import SqliteBackend
        from ..adapters.sqlite import Store as SqliteStore

        class OnEngineSqlite(_SeesThroughSqlalchemy, SqliteBackend):
            pass

        sqlite_pool = SqliteEnginePool(engine, location=location, wait_timeout=connect_timeout)
        # It quacks like the SQLite backend's own ConnectionPool.
        backend = OnEngineSqlite(
            cast(Any, sqlite_pool),
            store=SqliteStore(store_config, location=location),
            location=location,
        )
        await sqlite_pool.release(await sqlite_pool.acquire())
    return cast(Backend, backend)
