"""A small pool of aiosqlite connections."""

from __future__ import annotations

import asyncio
import sqlite3

import aiosqlite

from ..._async import shielded
from ...errors import StoreUnavailableError
from ...log import get_logger


class ConnectionPool:
    """A few aiosqlite connections (each runs its own thread), handed out one at a time."""

    def __init__(self, path: str, *, max_size: int, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout_ms = int(busy_timeout * 1000)
        self._idle: list[aiosqlite.Connection] = []
        self._open: set[aiosqlite.Connection] = set()
        self._slots = asyncio.Semaphore(max_size)
        self._closed = False

    @property
    def in_use(self) -> int:
        """Connections handed out and not yet taken back."""
        return len(self._open) - len(self._idle)

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


async def rollback_quietly(connection: aiosqlite.Connection) -> bool:
    """Roll back whatever is open; whether the connection is fit for reuse."""
    try:
        await shielded(connection.execute("ROLLBACK"))
    except sqlite3.OperationalError as err:
        return "no transaction is active" in str(err)
    except (sqlite3.Error, ValueError):
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
        return False
    return True
