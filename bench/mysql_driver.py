"""aiomysql as the hand-written MySQL/MariaDB sides use it: its typed surface and pools.

The same-SQL side (:mod:`bench.mysql`) and the minimal baseline (:mod:`bench.minimal_mysql`)
open pools of ``Sizes.writers`` connections with the library's session settings
(``SESSION_SETUP``: READ COMMITTED, time zone UTC) and ``utf8mb4``; aiomysql is untyped,
so the parts used are described by the small Protocols here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiomysql

from pupsourcing_async.adapters.mysql import SESSION_SETUP

__all__ = ["Connection", "Cursor", "Pool", "close_pool", "connect_options", "create_pool"]


class Cursor(Protocol):
    """The part of ``aiomysql.Cursor`` used here."""

    @property
    def lastrowid(self) -> int:
        """The insert id of the last statement (``LAST_INSERT_ID(expr)`` sets it too)."""

    async def execute(self, query: str, args: Sequence[object] | None = None) -> int:
        """Run one statement; return the affected row count."""

    async def executemany(self, query: str, args: Sequence[Sequence[object]]) -> int | None:
        """Run an ``INSERT ... VALUES`` for many rows, as multi-row statements."""

    async def fetchall(self) -> Sequence[tuple[Any, ...]]:
        """The rows of the last statement."""


class Connection(Protocol):
    """The part of ``aiomysql.Connection`` used here."""

    def cursor(self) -> AbstractAsyncContextManager[Cursor]:
        """A new cursor, closed when the block ends."""

    async def commit(self) -> None:
        """COMMIT."""

    async def rollback(self) -> None:
        """ROLLBACK."""

    def close(self) -> None:
        """Close the socket at once (the server rolls back what is open)."""


class Pool(Protocol):
    """The part of ``aiomysql.Pool`` used here."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection until the block ends."""


def connect_options(url: str) -> dict[str, Any]:
    """aiomysql's connection arguments for ``mysql://user:password@host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mysql+aiomysql", "mariadb", "mariadb+aiomysql"):
        raise ValueError(f"not a MySQL URL: {parts.scheme}://...")
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/") or None,
        "charset": "utf8mb4",
    }


async def create_pool(
    url: str, size: int, *, autocommit: bool, init_command: str = SESSION_SETUP
) -> Any:
    """A pool of ``size`` connections as the library opens its own (see
    ``MysqlBackend.connect``), in autocommit or not, each session set up with
    ``init_command``."""
    return await aiomysql.create_pool(
        minsize=size,
        maxsize=size,
        connect_timeout=10.0,
        autocommit=autocommit,
        init_command=init_command,
        **connect_options(url),
    )


async def close_pool(pool: Any) -> None:
    """Close ``pool`` and wait until its connections are closed."""
    pool.close()
    await pool.wait_closed()
