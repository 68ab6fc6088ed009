"""An AsyncEngine's pool, seen by the backends as the driver pool they already know.

Each backend takes connections from a pool with ``acquire()`` and gives them back with
``release()``: asyncpg's pool, aiomysql's, or the SQLite backend's own. The classes here
do the same over a SQLAlchemy engine, checking its pooled connections out as raw driver
connections, so the store, the leases and PostgreSQL's LISTEN run on the engine's pool
unchanged. While a connection is out, :func:`checked_out` finds it for
``pupsourcing_async.sqlalchemy.connection(tx)``.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy import exc, pool
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from .._async import shielded
from ..errors import StoreUnavailableError
from ..log import get_logger

__all__ = ["Checkout", "EnginePool", "MysqlEnginePool", "PostgresEnginePool", "checked_out"]

# How many dead pooled connections one checkout drops before it lends what it gets.
_DEAD_CONNECTIONS_SKIPPED = 10


@dataclass(eq=False, slots=True)
class Checkout:
    """A pooled connection checked out of the engine, as a driver connection.

    Attributes:
        engine: The engine it came from.
        fairy: SQLAlchemy's handle on it, which gives it back.
        driver: The driver's own connection: what the backends and ``tx`` are.
        autocommit: What the SQLAlchemy adapter's own setting was, where it was changed.
    """

    engine: AsyncEngine
    fairy: Any
    driver: Any
    autocommit: bool | None = None


# id(driver connection) -> its checkout. Entries leave when the connection goes back, so
# an id is never looked up after its object could have been reused.
_CHECKED_OUT: dict[int, Checkout] = {}


def checked_out(driver: object) -> Checkout | None:
    """The checkout of ``driver``, if it is a connection some engine pool has lent out."""
    found = _CHECKED_OUT.get(id(driver))
    return found if found is not None and found.driver is driver else None


def _one_at_a_time(engine: AsyncEngine) -> bool:
    # These pools hand one connection to everyone at once (in-memory SQLite by default).
    return isinstance(engine.sync_engine.pool, pool.StaticPool | pool.SingletonThreadPool)


class EnginePool:
    """Checks the engine's connections out and back in; the dialect classes add the rest.

    Args:
        engine: The application's engine.
        location: Where the database is, for messages.
        wait_timeout: The longest wait for a connection where SQLAlchemy's pool sets none
            (a pool of one shared connection).
    """

    def __init__(self, engine: AsyncEngine, *, location: str, wait_timeout: float) -> None:
        self._engine = engine
        self._location = location
        self._wait_timeout = wait_timeout
        self._turn = asyncio.Semaphore(1) if _one_at_a_time(engine) else None
        self._closed = False

    @property
    def engine(self) -> AsyncEngine:
        """The engine whose pool this is."""
        return self._engine

    def _exhausted(self, err: BaseException) -> StoreUnavailableError:
        if self._turn is not None:
            advice = (
                "its pool shares one connection, which another transaction holds (a "
                "transaction opened inside another cannot have it): give the engine a "
                "pool of its own connections"
            )
        else:
            advice = (
                "every running projection holds one connection for its lease, and on "
                "PostgreSQL one more listens for new events; raise pool_size or max_overflow"
            )
        return StoreUnavailableError(
            f"no connection of the SQLAlchemy engine's pool at {self._location} came free "
            f"in time ({self._engine.sync_engine.pool.status()}): {advice} ({err})",
            location=self._location,
        )

    async def _checkout(self) -> Checkout:
        # A pooled connection the server closed while it sat idle (a restart, a killed
        # session) is dropped here, as the drivers' own pools do, rather than lent to
        # fail its first statement.
        for _ in range(_DEAD_CONNECTIONS_SKIPPED):
            checkout = await self._checkout_once()
            if not self._is_broken(checkout.driver):
                break
            await self._give_back(checkout, broken=True)
        else:
            checkout = await self._checkout_once()
        ready = False
        try:
            await self._prepare(checkout)
            ready = True
        finally:
            if not ready:
                await self._give_back(checkout, broken=True)
        _CHECKED_OUT[id(checkout.driver)] = checkout
        return checkout

    async def _checkout_once(self) -> Checkout:
        if self._closed:
            raise StoreUnavailableError(
                f"the database at {self._location} is closed", location=self._location
            )
        if self._turn is not None:
            try:
                async with asyncio.timeout(self._wait_timeout):
                    await self._turn.acquire()
            except TimeoutError as err:
                raise self._exhausted(err) from err
        fairy = None
        try:
            fairy = await self._engine.raw_connection()
        except exc.TimeoutError as err:
            raise self._exhausted(err) from err
        except Exception as err:
            raise StoreUnavailableError(
                f"could not get a connection from the SQLAlchemy engine at {self._location}: {err}",
                location=self._location,
            ) from err
        finally:
            if fairy is None:
                self._give_turn()
        return Checkout(self._engine, fairy, fairy.driver_connection)

    def _give_turn(self) -> None:
        if self._turn is not None:
            self._turn.release()

    async def _prepare(self, checkout: Checkout) -> None:
        """Make a connection fit for the store before it is lent (per dialect)."""

    async def _reset(self, checkout: Checkout) -> None:
        """Undo what the store's use left on a connection before it goes back."""

    def _is_broken(self, driver: Any) -> bool:
        return False

    async def _give_back(self, checkout: Checkout, *, broken: bool) -> None:
        _CHECKED_OUT.pop(id(checkout.driver), None)
        try:
            # One shielded step: a cancellation after the reset must not keep the
            # connection from going back (SQLAlchemy would find it leaked).
            await shielded(self._return(checkout, broken=broken))
        finally:
            self._give_turn()

    async def _return(self, checkout: Checkout, *, broken: bool) -> None:
        broken = broken or self._is_broken(checkout.driver)
        if not broken:
            try:
                await self._reset(checkout)
            except Exception:
                get_logger(None, "pupsourcing_async.database").debug("reset failed")
                broken = True
        # Invalidating closes the driver connection, and the pool opens a new one for the
        # next checkout; closing gives it back to the pool. A Core statement that met a
        # lost connection has invalidated it already.
        if checkout.fairy.is_valid:
            done = checkout.fairy.invalidate if broken else _closer(checkout.fairy)
            await greenlet_spawn(done)

    async def _release(self, driver: Any, *, broken: bool = False) -> None:
        checkout = checked_out(driver)
        if checkout is not None:
            await self._give_back(checkout, broken=broken)

    async def close(self) -> None:
        """Lend no more connections. The engine stays open: it is the application's."""
        self._closed = True


def _closer(fairy: Any) -> Any:
    """How to give back a connection whose transaction the backend has ended.

    Every backend commits or rolls back before it gives a connection back, so the pool's
    own reset (one more ROLLBACK round trip on MySQL) is skipped where SQLAlchemy lets
    its caller say so.
    """
    special = getattr(fairy, "_close_special", None)
    if special is None:
        return fairy.close
    return lambda: special(transaction_reset=True)


class _Acquire:
    """``pool.acquire()``: awaited, or used as ``async with``, as asyncpg's is."""

    __slots__ = ("_driver", "_pool")

    def __init__(self, pool: PostgresEnginePool) -> None:
        self._pool = pool
        self._driver: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool._acquire().__await__()

    async def __aenter__(self) -> Any:
        self._driver = await self._pool._acquire()
        return self._driver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._pool.release(self._driver)


class PostgresEnginePool(EnginePool):
    """An asyncpg-driven engine's pool, as ``PostgresBackend`` uses an ``asyncpg.Pool``."""

    def acquire(self) -> _Acquire:
        """A connection: ``await pool.acquire()`` or ``async with pool.acquire() as c``."""
        return _Acquire(self)

    async def _acquire(self) -> Any:
        return (await self._checkout()).driver

    async def _prepare(self, checkout: Checkout) -> None:
        # The backends begin and end transactions on the driver connection themselves; the
        # SQLAlchemy adapter must not begin one of its own (a savepoint inside ours) when a
        # handler runs statements through it.
        adapter = checkout.fairy.dbapi_connection
        checkout.autocommit = bool(adapter.autocommit)
        adapter.autocommit = True

    async def _reset(self, checkout: Checkout) -> None:
        # What asyncpg's own pool does on release: roll back a transaction a cancellation
        # left open (and asyncpg's record of it, or the next BEGIN would be a SAVEPOINT),
        # release advisory locks (a lease's), drop LISTENs, reset session settings.
        await checkout.driver.reset()
        if checkout.autocommit is not None:
            checkout.fairy.dbapi_connection.autocommit = checkout.autocommit

    def _is_broken(self, driver: Any) -> bool:
        return bool(driver.is_closed())

    async def release(self, connection: Any) -> None:
        """Give ``connection`` back; its session locks and listeners go with the reset."""
        await self._release(connection)


class MysqlEnginePool(EnginePool):
    """An aiomysql-driven engine's pool, as ``MysqlBackend`` uses aiomysql's.

    A connection gets the store's session settings (``SESSION_SETUP``: READ COMMITTED, UTC)
    the first time it is lent, and keeps them: they are session settings.
    """

    def __init__(
        self, engine: AsyncEngine, *, location: str, wait_timeout: float, session_setup: str
    ) -> None:
        super().__init__(engine, location=location, wait_timeout=wait_timeout)
        self._session_setup = session_setup
        self._set_up: weakref.WeakSet[Any] = weakref.WeakSet()

    async def acquire(self) -> Any:
        """A connection, set up for the store."""
        return (await self._checkout()).driver

    async def _prepare(self, checkout: Checkout) -> None:
        driver = checkout.driver
        if driver.get_autocommit():
            # An AUTOCOMMIT engine: the store's transactions need it off while lent.
            checkout.autocommit = True
            await driver.autocommit(False)
        if driver not in self._set_up:
            async with driver.cursor() as cursor:
                await cursor.execute(self._session_setup)
                while await cursor.nextset():
                    pass
            await driver.commit()
            self._set_up.add(driver)

    async def _reset(self, checkout: Checkout) -> None:
        if checkout.autocommit:
            await checkout.driver.autocommit(True)

    def _is_broken(self, driver: Any) -> bool:
        # aiomysql's own pool looks at its reader too: a socket the server closed shows
        # as at EOF before aiomysql marks the connection closed.
        reader = getattr(driver, "_reader", None)
        return bool(driver.closed) or (reader is not None and reader.at_eof())

    def release(self, connection: Any) -> asyncio.Future[None]:
        """Give ``connection`` back; one the backend closed is replaced in the pool.

        Like aiomysql's, it returns a future the caller may await.
        """
        return asyncio.ensure_future(self._release(connection))

    def close(self) -> None:  # type: ignore[override]
        """Lend no more connections (aiomysql's pool closes without awaiting)."""
        self._closed = True

    async def wait_closed(self) -> None:
        """Nothing to wait for: the engine stays open."""


class SqliteEnginePool(EnginePool):
    """An aiosqlite-driven engine's pool, as ``SqliteBackend`` uses its own."""

    async def acquire(self) -> Any:
        """A connection."""
        return (await self._checkout()).driver

    def _is_broken(self, driver: Any) -> bool:
        return getattr(driver, "_connection", True) is None

    async def _reset(self, checkout: Checkout) -> None:
        if checkout.driver.in_transaction:
            await checkout.driver.rollback()

    async def release(self, connection: Any, *, discard: bool = False) -> None:
        """Give ``connection`` back; with ``discard`` (its state is unknown) it is closed."""
        await self._release(connection, broken=discard)
