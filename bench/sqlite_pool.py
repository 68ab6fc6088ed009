"""SQLite connections as the library opens its own, for the hand-written sides.

The same-SQL side (:mod:`bench.sqlite`) and the minimal baseline
(:mod:`bench.minimal_sqlite`) open ``Sizes.writers`` aiosqlite connections each, in
autocommit, WAL mode and with the library's busy timeout, and hand them out last in,
first out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiosqlite

__all__ = ["BUSY_TIMEOUT", "SqlitePool", "open_connection"]

#: Seconds a writer waits for the write lock; given to every side alike.
BUSY_TIMEOUT = 10.0


async def open_connection(path: str) -> aiosqlite.Connection:
    """A connection as the library opens its own: autocommit, busy timeout, WAL."""
    connection = await aiosqlite.connect(path, isolation_level=None)
    await connection.execute_fetchall(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    await connection.execute_fetchall("PRAGMA journal_mode = WAL")
    return connection


class SqlitePool:
    """``size`` connections (each runs its own thread), handed out last in, first out.

    Args:
        path: The database file.
        size: How many connections.
    """

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._size = size
        self._idle: list[aiosqlite.Connection] = []
        self._all: list[aiosqlite.Connection] = []
        self._free = asyncio.Semaphore(size)

    async def open(self) -> None:
        """Open every connection."""
        for _ in range(self._size):
            connection = await open_connection(self._path)
            self._all.append(connection)
            self._idle.append(connection)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection of one's own until the block ends."""
        async with self._free:
            connection = self._idle.pop()
            try:
                yield connection
            finally:
                self._idle.append(connection)

    async def close(self) -> None:
        """Close every connection."""
        for connection in self._all:
            await connection.close()
        self._all.clear()
        self._idle.clear()
