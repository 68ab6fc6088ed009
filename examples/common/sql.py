"""Read-model SQL that runs on every driver the store hands out.

A projection's ``tx`` is the driver's own connection: asyncpg takes ``$1`` placeholders
and positional arguments, aiosqlite ``?`` and a tuple, aiomysql a cursor with ``%s``.
:class:`SQL` takes ``?`` and speaks to each in its own way, so one example runs on all
three databases. Your own projections need none of this: write your driver's SQL.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["SQL"]


class SQL:
    """Plain SQL with ``?`` placeholders on an asyncpg, aiosqlite or aiomysql connection.

    Args:
        dialect: ``Database.dialect``: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
    """

    def __init__(self, dialect: str) -> None:
        if dialect not in ("postgres", "sqlite", "mysql"):
            raise ValueError(f"unknown dialect {dialect!r}")
        self.dialect = dialect

    def _text(self, sql: str) -> str:
        if self.dialect == "postgres":
            numbers = iter(range(1, 1000))
            return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)
        if self.dialect == "mysql":
            return sql.replace("%", "%%").replace("?", "%s")
        return sql

    async def execute(self, tx: Any, sql: str, *args: object) -> int:
        """Run a statement; how many rows it changed."""
        text = self._text(sql)
        if self.dialect == "postgres":
            status: str = await tx.execute(text, *args)
            last = status.rpartition(" ")[2]
            return int(last) if last.isdigit() else 0
        if self.dialect == "sqlite":
            async with tx.execute(text, args) as cursor:
                return int(cursor.rowcount)
        async with tx.cursor() as cursor:
            await cursor.execute(text, args)
            return int(cursor.rowcount)

    async def fetch(self, tx: Any, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Run a query; its rows as tuples."""
        text = self._text(sql)
        if self.dialect == "postgres":
            return [tuple(row) for row in await tx.fetch(text, *args)]
        if self.dialect == "sqlite":
            return [tuple(row) for row in await tx.execute_fetchall(text, args)]
        async with tx.cursor() as cursor:
            await cursor.execute(text, args)
            return [tuple(row) for row in await cursor.fetchall()]

    async def scalar(self, tx: Any, sql: str, *args: object) -> Any:
        """Run a query; the first column of its first row, or None."""
        rows = await self.fetch(tx, sql, *args)
        return rows[0][0] if rows else None
