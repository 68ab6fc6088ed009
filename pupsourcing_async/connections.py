"""The types of ``tx``: the driver connection a transaction runs on, per database.

``Database.transaction()`` and a projection's ``handle`` get the driver's own connection,
inside the transaction: an asyncpg connection on PostgreSQL, an aiosqlite connection on
SQLite, an aiomysql connection on MySQL. A database opened with ``connect(url)`` may be
any of them, so its ``tx`` is :data:`DriverConnection`, the union, and code that speaks
one driver narrows it first (``isinstance(tx, aiosqlite.Connection)``) or opens the
database with that adapter's typed ``connect``. Code written once for every database
does not touch the driver at all: ``pupsourcing_async.sqlalchemy.connection(tx)``.

These are type aliases for type checkers; at run time they are only names, and importing
this module imports no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

    from .adapters.mysql.store import Connection as _MysqlConnection

__all__ = ["DriverConnection", "MysqlConnection", "PostgresConnection", "SqliteConnection"]

#: An asyncpg connection (a pooled one is a proxy that behaves as one).
PostgresConnection: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
#: An aiosqlite connection.
SqliteConnection: TypeAlias = "aiosqlite.Connection"
#: The part of an aiomysql connection the store uses (aiomysql ships no types).
MysqlConnection: TypeAlias = "_MysqlConnection"
#: Whichever of the three a database opened by URL or engine hands out.
DriverConnection: TypeAlias = "PostgresConnection | SqliteConnection | MysqlConnection"
