"""What ``mypy --strict`` sees of ``tx``: never ``Any``.

The ``assert_type`` calls are checked by mypy (the tests are type-checked) and are plain
calls at run time; the ``# type: ignore[arg-type]`` lines are refusals mypy must make,
since an ignore it does not need is itself an error under ``--strict``.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import aiosqlite
import asyncpg
import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.adapters import mysql, postgres, sqlite
from pupsourcing_async.connections import (
    DriverConnection,
    MysqlConnection,
    PostgresConnection,
    SqliteConnection,
)
from pupsourcing_async.projection import Processor, ProcessorConfig, RunMode, run_projections

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF)


class SqliteCounter:
    """A projection written for aiosqlite's API."""

    name = "sqlite_counter"

    def __init__(self) -> None:
        self.rows: list[int] = []

    async def handle(self, tx: aiosqlite.Connection, event: es.PersistedEvent) -> None:
        rows = await tx.execute_fetchall("SELECT ?", (event.global_position,))
        self.rows += [int(row[0]) for row in rows]


class PostgresCounter:
    """A projection written for asyncpg's API."""

    name = "postgres_counter"

    async def handle(self, tx: PostgresConnection, event: es.PersistedEvent) -> None:
        await tx.fetchval("SELECT $1::bigint", event.global_position)


class Portable:
    """A projection that takes whatever connection the database hands out."""

    name = "portable"

    def __init__(self) -> None:
        self.kinds: list[str] = []

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        self.kinds.append(type(tx).__name__)


async def test_a_database_opened_by_url_hands_out_the_driver_union(tmp_path: Path) -> None:
    async with pupsourcing_async.connect(f"sqlite:///{tmp_path / 'a.db'}") as db:
        assert_type(db, Database[DriverConnection])
        await db.migrate()
        async with db.transaction() as tx:
            assert_type(tx, DriverConnection)
            # Narrowing it is how code for one driver gets that driver's API.
            assert isinstance(tx, aiosqlite.Connection)
            assert_type(tx, aiosqlite.Connection)
            await db.store.append(tx, es.NoStream(), [es.Event("B", "A", "a-1", "Opened", b"{}")])
        portable = Portable()
        assert_type(db.processor(ONE_OFF), Processor[DriverConnection])
        await db.processor(ONE_OFF).run(portable)
        await run_projections(db, [(Portable(), ONE_OFF)])
        assert portable.kinds == ["Connection"]


async def test_each_adapters_connect_hands_out_its_own_driver(tmp_path: Path) -> None:
    async with sqlite.connect(f"sqlite:///{tmp_path / 'b.db'}") as db:
        assert_type(db, Database[SqliteConnection])
        await db.migrate()
        async with db.transaction() as tx:
            assert_type(tx, aiosqlite.Connection)
            await db.store.append(tx, es.NoStream(), [es.Event("B", "A", "a-1", "Opened", b"{}")])
            assert [tuple(row) for row in await tx.execute_fetchall("SELECT 1")] == [(1,)]
        counter = SqliteCounter()
        await db.processor(ONE_OFF).run(counter)  # a projection for its driver
        await db.processor(ONE_OFF).run(Portable())  # and one for any
        assert counter.rows == [1]


def test_an_adapters_connect_refuses_another_databases_url() -> None:
    with pytest.raises(pupsourcing_async.UnsupportedURLError, match="sqlite"):
        postgres.connect("sqlite:///x.db")
    with pytest.raises(pupsourcing_async.UnsupportedURLError, match="postgres"):
        mysql.connect("postgresql://u@h/db")


async def _never_run(
    pg: Database[PostgresConnection],
    my: Database[MysqlConnection],
    lite: Database[SqliteConnection],
) -> None:
    # Checked, never run: what each typed database accepts.
    async with pg.transaction() as tx:
        assert_type(tx, asyncpg.Connection[asyncpg.Record])
    async with my.transaction() as my_tx, my_tx.cursor() as cursor:
        await cursor.execute("SELECT %s", (1,))
    await pg.processor().run(PostgresCounter())
    await pg.processor().run(Portable())
    # A projection written for one driver is refused on another database.
    await lite.processor().run(PostgresCounter())  # type: ignore[arg-type]
    await pg.processor().run(SqliteCounter())  # type: ignore[arg-type]
    await run_projections(pg, [(SqliteCounter(), ONE_OFF)])  # type: ignore[misc]
