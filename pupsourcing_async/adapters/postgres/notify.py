"""Wake-ups on PostgreSQL: one LISTEN connection per backend, NOTIFY after commits."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ..._async import acquire_safely, shielded
from ..._signals import Signal, Watch
from ...log import get_logger


class Listener:
    """One LISTEN connection per backend, shared by its processors, reconnected on demand.

    A notification is only a hint: a lost one costs a processor at most its idle wait.
    """

    def __init__(self, pool: asyncpg.Pool[Any], channel: str, signal: Signal) -> None:
        self._pool = pool
        self._channel = channel
        self._signal = signal
        self._users = 0
        self._connection: PoolConnectionProxy[Any] | None = None
        self._lock = asyncio.Lock()
        self._log = get_logger(None, "pupsourcing_async.projection")

    def _notified(self, *_: object) -> None:
        self._signal.fire()

    def subscribe(self) -> None:
        """One more user; call :meth:`ensure` to start listening, and always pair it with
        :meth:`unsubscribe`."""
        self._users += 1

    async def unsubscribe(self) -> None:
        """One user fewer; the last one stops listening and gives the connection back."""
        self._users -= 1
        if self._users == 0:
            async with self._lock:
                await self._drop()

    async def aclose(self) -> None:
        """Stop listening whoever still uses it (the backend is closing)."""
        self._users = 0
        async with self._lock:
            await self._drop()

    async def ensure(self) -> None:
        """Listen again if the connection died; on failure, processors just poll."""
        if self._users == 0 or _alive(self._connection):
            return
        async with self._lock:
            if _alive(self._connection):
                return
            await self._drop()
            try:
                self._connection = await acquire_safely(self._pool.acquire(), self._release)
                await self._connection.add_listener(self._channel, self._notified)
            except Exception as err:
                self._log.error(
                    "cannot listen for new events; polling instead",
                    channel=self._channel,
                    error=f"{type(err).__name__}: {err}",
                )
                await self._drop()
                return
            # Anything appended while nobody listened would be missed: look once.
            self._signal.fire()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if _alive(connection):
            with contextlib.suppress(Exception):
                await connection.remove_listener(self._channel, self._notified)
        await self._release(connection)

    async def _release(self, connection: PoolConnectionProxy[Any]) -> None:
        with contextlib.suppress(Exception):
            await self._pool.release(connection)


def _alive(connection: PoolConnectionProxy[Any] | None) -> bool:
    """Whether a pooled connection is still usable; the pool takes back one the server
    closed, after which its proxy refuses even ``is_closed()``."""
    if connection is None:
        return False
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


_NOTIFY_INTERVAL = 0.005


class Notifier:
    """Sends the store's NOTIFY after appends commit, outside their transactions.

    Commits that poke it while a NOTIFY is on its way share the next one: processors only
    need to know that the log grew, not how often. The NOTIFY runs in a transaction of its
    own that writes nothing, so the lock PostgreSQL takes to order notifications is held
    for an instant instead of across a writer's WAL flush.
    """

    def __init__(self, pool: asyncpg.Pool[Any], channel: str) -> None:
        self._pool = pool
        self._channel = channel
        self._pending = 0
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(None, "pupsourcing_async.store")

    def poke(self, position: int) -> None:
        """Note that an append committed up to ``position``; a NOTIFY follows shortly,
        with the highest position committed meanwhile as its payload (as pupsourcing/core
        sends it)."""
        self._pending = max(self._pending, position)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            position, self._pending = self._pending, 0
            try:
                async with self._pool.acquire() as connection:
                    await connection.execute(
                        "SELECT pg_notify($1, $2)", self._channel, str(position)
                    )
            except Exception as err:
                # Only a hint is lost: processors elsewhere find the events by polling.
                self._log.debug("notify failed", channel=self._channel, error=str(err))
                return
            # At most one NOTIFY per interval under a stream of commits; the first one after
            # a quiet spell goes at once.
            await asyncio.sleep(_NOTIFY_INTERVAL)

    async def aclose(self) -> None:
        """Send what is pending, then stop."""
        task, self._task = self._task, None
        if task is not None:
            await shielded(task)


class ListenNews:
    __slots__ = ("_listener", "_signal")

    def __init__(self, listener: Listener, signal: Signal) -> None:
        self._listener = listener
        self._signal = signal

    def watch(self) -> Watch:
        return self._signal.watch()

    async def wait(self, watch: Watch, timeout: float) -> bool:
        await self._listener.ensure()
        return await watch.wait(timeout)
