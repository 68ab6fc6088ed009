"""SQLAlchemy: a database on an application's engine, and Core on the batch's transaction.

On every backend: read model and checkpoint commit together and roll back together, the
application and the store share one pool, leases and LISTEN connections go back clean,
and a pool too small fails with a clear error instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

import pupsourcing_async
from pupsourcing_async import (
    Database,
    ProjectionError,
    ProjectionStoppedError,
    StoreUnavailableError,
    UnsupportedURLError,
    es,
)
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import ProcessorConfig, RunMode
from pupsourcing_async.sqlalchemy import connection, create_engine
from pupsourcing_async.testing import unique_store_config

from .conftest import drop_tables, make_event

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=10)


def engine_for(url: str, **options: Any) -> AsyncEngine:
    if url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 10.0})
    return create_engine(url, **options)


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    made = engine_for(url)
    yield made
    await made.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[Database[DriverConnection]]:
    config = unique_store_config()
    async with pupsourcing_async.connect(engine, store_config=config) as database:
        await database.migrate()
        try:
            yield database
        finally:
            if database.dialect != "sqlite":
                await drop_tables(database, [config.events_table])


def ledger_table(db: Database[DriverConnection]) -> sa.Table:
    name = db.store.config.events_table.replace("_events", "_ledger")
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("position", sa.BigInteger, nullable=False),
    )


class Ledger:
    """A projection written with SQLAlchemy Core through ``connection(tx)``."""

    def __init__(self, table: sa.Table, *, fail_on: int | None = None) -> None:
        self.name = "ledger"
        self.table = table
        self.fail_on = fail_on

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        conn = connection(tx)
        await conn.execute(
            self.table.insert().values(event_id=str(event.event_id), position=event.global_position)
        )
        if event.global_position == self.fail_on:
            raise RuntimeError(f"cannot handle {event.global_position}")


async def make_ledger(db: Database[DriverConnection]) -> sa.Table:
    table = ledger_table(db)
    async with db.transaction() as tx:
        await connection(tx).run_sync(table.metadata.create_all)
    return table


async def positions(db: Database[DriverConnection], table: sa.Table) -> list[int]:
    async with db.transaction() as tx:
        result = await connection(tx).execute(sa.select(table.c.position).order_by("position"))
        return [int(row) for row in result.scalars()]


async def append(db: Database[DriverConnection], count: int) -> list[es.PersistedEvent]:
    stored: list[es.PersistedEvent] = []
    for index in range(count):
        async with db.transaction() as tx:
            stored += (await db.store.append(tx, es.Any(), [make_event(f"acc-{index}")])).events
    return stored


async def checkpoint(db: Database[DriverConnection], name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


async def test_read_model_and_checkpoint_commit_together(db: Database[DriverConnection]) -> None:
    table = await make_ledger(db)
    stored = await append(db, 25)
    await db.processor(ONE_OFF).run(Ledger(table))
    assert await positions(db, table) == [event.global_position for event in stored]
    assert await checkpoint(db, "ledger") == stored[-1].global_position


async def test_a_handler_failure_rolls_back_read_model_and_checkpoint(
    db: Database[DriverConnection],
) -> None:
    table = await make_ledger(db)
    stored = await append(db, 15)
    # Batches of 10: the first commits, the second fails on its third event.
    failing = stored[12].global_position
    with pytest.raises(ProjectionError) as caught:
        await db.processor(ONE_OFF).run(Ledger(table, fail_on=failing))
    assert caught.value.global_position == failing
    first_batch = [event.global_position for event in stored[:10]]
    assert await positions(db, table) == first_batch
    assert await checkpoint(db, "ledger") == first_batch[-1]
    # Fixed, it resumes at the checkpoint and writes each row once (the key would refuse
    # a second).
    await db.processor(ONE_OFF).run(Ledger(table))
    assert await positions(db, table) == [event.global_position for event in stored]


async def test_a_transaction_that_raises_rolls_back_core_and_store_writes(
    db: Database[DriverConnection],
) -> None:
    table = await make_ledger(db)
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event("acc-1")])
            await connection(tx).execute(table.insert().values(event_id="x", position=1))
            raise RuntimeError("changed my mind")
    assert await positions(db, table) == []
    async with db.transaction() as tx:
        assert await db.store.latest_global_position(tx) == 0


async def test_a_savepoint_rolls_back_only_its_part(db: Database[DriverConnection]) -> None:
    table = await make_ledger(db)
    async with db.transaction() as tx:
        conn = connection(tx)
        await conn.execute(table.insert().values(event_id="kept", position=1))
        with pytest.raises(sa.exc.IntegrityError):
            async with conn.begin_nested():
                await conn.execute(table.insert().values(event_id="kept", position=2))
        await conn.execute(table.insert().values(event_id="also", position=3))
    assert await positions(db, table) == [1, 3]


async def test_the_app_and_the_store_share_the_engines_pool(
    engine: AsyncEngine, db: Database[DriverConnection]
) -> None:
    pool = engine.sync_engine.pool
    assert isinstance(pool, sa.pool.QueuePool)
    before = pool.checkedout()
    async with db.transaction() as tx:
        assert pool.checkedout() == before + 1
        # The Core connection is the store's own driver connection, in its transaction.
        conn = connection(tx)
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is tx
        async with engine.connect() as app:  # the app's own work, beside the store's
            assert (await app.execute(sa.text("SELECT 1"))).scalar() == 1
    assert pool.checkedout() == before
    await db.close()
    # The engine is the application's: closing the database leaves it open.
    async with engine.connect() as app:
        assert (await app.execute(sa.text("SELECT 2"))).scalar() == 2


async def test_a_tx_of_a_database_opened_by_url_is_refused(url: str) -> None:
    async with (
        pupsourcing_async.connect(url, store_config=unique_store_config()) as db,
        db.transaction() as tx,
    ):
        with pytest.raises(TypeError, match=r"connect\(engine\)"):
            connection(tx)
    with pytest.raises(TypeError, match="connect"):
        connection(object())  # type: ignore[arg-type]


async def test_a_connection_given_back_cannot_be_bound_again(
    db: Database[DriverConnection],
) -> None:
    async with db.transaction() as tx:
        kept = tx
    with pytest.raises(TypeError):
        connection(kept)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_leases_go_back_to_the_pool_released(
    engine: AsyncEngine, db: Database[DriverConnection]
) -> None:
    table = await make_ledger(db)
    await append(db, 3)
    worker = asyncio.create_task(
        db.processor(ProcessorConfig(poll_interval=0.01)).run(Ledger(table))
    )
    await db.wait_for(3, projections=["ledger"], timeout=20)
    assert await db.backend.lease_held("ledger") is True
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    # The lease's connection went back to the engine's pool with its session lock gone
    # (on MySQL a cancelled lease closes its connection, and the server lets the lock go
    # when it sees that), so another worker takes the lease.
    deadline = asyncio.get_running_loop().time() + 10
    while await db.backend.lease_held("ledger"):
        assert asyncio.get_running_loop().time() < deadline, "the lease stayed held"
        await asyncio.sleep(0.01)
    await append(db, 2)
    await asyncio.wait_for(db.processor(ONE_OFF).run(Ledger(table)), 20)
    assert len(await positions(db, table)) == 5


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_wakes_a_processor_through_the_engines_pool(
    engine: AsyncEngine, db: Database[DriverConnection]
) -> None:
    table = await make_ledger(db)
    # A long idle wait: only a NOTIFY on the LISTEN connection wakes it soon.
    config = ProcessorConfig(poll_interval=0.01, max_poll_interval=30.0)
    worker = asyncio.create_task(db.processor(config).run(Ledger(table)))
    try:
        await db.wait_for(0, projections=["ledger"], timeout=20)
        for _ in range(3):
            # Appended by another database on the same engine: no in-process signal.
            async with (
                pupsourcing_async.connect(engine, store_config=db.store.config) as other,
                other.transaction() as tx,
            ):
                result = await other.store.append(tx, es.Any(), [make_event("acc-x")])
            await db.wait_for(result.global_positions[-1], projections=["ledger"], timeout=10)
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


async def test_a_pool_too_small_fails_clearly_instead_of_hanging(url: str) -> None:
    small = engine_for(url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    config = unique_store_config()
    try:
        async with pupsourcing_async.connect(small, store_config=config) as db:
            await db.migrate()
            try:
                async with db.transaction():
                    with pytest.raises(StoreUnavailableError, match="pool_size") as caught:
                        async with db.transaction():
                            pass
                    assert "came free in time" in str(caught.value)
                # With the only connection back, all is well again.
                async with db.transaction() as tx:
                    assert await db.store.latest_global_position(tx) == 0
                # A projection needs a connection for its lease (and, on PostgreSQL, one
                # for LISTEN): with none to spare it stops, saying why.
                stopped = ProcessorConfig(
                    run_mode=RunMode.ONE_OFF, max_retries=1, retry_initial_delay=0.01
                )
                async with db.transaction():
                    with pytest.raises(ProjectionStoppedError) as failed:
                        await db.processor(stopped).run(Ledger(ledger_table(db)))
                assert "every running projection holds one connection" in str(failed.value)
            finally:
                if db.dialect != "sqlite":
                    await drop_tables(db, [config.events_table])
    finally:
        await small.dispose()


async def test_one_shared_sqlite_connection_is_used_by_one_transaction_at_a_time() -> None:
    # SQLAlchemy gives an in-memory SQLite engine one connection for everyone.
    memory = create_async_engine("sqlite+aiosqlite://")
    try:
        async with pupsourcing_async.connect(memory, connect_timeout=0.5) as db:
            await db.migrate()

            async def deposit(n: int) -> None:
                async with db.transaction() as tx:
                    await db.store.append(tx, es.Any(), [make_event(f"acc-{n % 3}")])

            await asyncio.gather(*(deposit(n) for n in range(20)))
            async with db.transaction() as tx:
                assert await db.store.latest_global_position(tx) == 20
                # A second transaction while the first holds the connection waits at most
                # connect_timeout, and says why.
                with pytest.raises(StoreUnavailableError, match="came free in time"):
                    async with db.transaction():
                        pass
    finally:
        await memory.dispose()


def test_connect_refuses_what_is_not_a_url_or_an_engine() -> None:
    with pytest.raises(TypeError, match="AsyncEngine"):
        pupsourcing_async.connect(42)  # type: ignore[arg-type]


async def test_pool_options_are_refused_with_an_engine(engine: AsyncEngine) -> None:
    for options in ({"max_size": 3}, {"min_size": 0}, {"pool_options": {"x": 1}}):
        with pytest.raises(ValueError, match="size the engine's pool"):
            pupsourcing_async.connect(engine, **options)
    with pytest.raises(ValueError, match="connect_timeout"):
        pupsourcing_async.connect(engine, connect_timeout=0)


async def test_an_engine_on_another_driver_is_refused(tmp_path: Path) -> None:
    sync = sa.create_engine(f"sqlite:///{tmp_path / 'sync.db'}")
    with pytest.raises(TypeError, match="AsyncEngine"):
        pupsourcing_async.connect(sync)  # type: ignore[arg-type]
    sync.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    engine.dialect.driver = "pysqlcipher"  # what an engine on another driver reports
    with pytest.raises(UnsupportedURLError, match=r"sqlite\+pysqlcipher"):
        await pupsourcing_async.connect(engine)
    await engine.dispose()


def test_create_engine_picks_the_stores_drivers() -> None:
    made = {
        url: create_engine(url)
        for url in ("postgresql://u@h/db", "mysql://u@h/db", "sqlite:///x.db", "mariadb://u@h/db")
    }
    assert {url: engine.dialect.driver for url, engine in made.items()} == {
        "postgresql://u@h/db": "asyncpg",
        "mysql://u@h/db": "aiomysql",
        "sqlite:///x.db": "aiosqlite",
        "mariadb://u@h/db": "aiomysql",
    }
    with pytest.raises(UnsupportedURLError):
        create_engine("oracle://u@h/db")


async def test_core_runs_unchanged_on_every_database(db: Database[DriverConnection]) -> None:
    # The same statements and the same results, whatever the dialect.
    accounts = sa.Table(
        db.store.config.events_table.replace("_events", "_accounts"),
        sa.MetaData(),
        sa.Column("account_id", sa.String(255), primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
    )
    async with db.transaction() as tx:
        conn: AsyncConnection = connection(tx)
        await conn.run_sync(accounts.metadata.create_all)
        await conn.execute(
            accounts.insert(), [{"account_id": f"a{n}", "balance": n * 10} for n in range(5)]
        )
        moved = await conn.execute(
            accounts.update()
            .where(accounts.c.balance >= 20)
            .values(balance=accounts.c.balance + 2**40)
        )
        assert moved.rowcount == 3
        total = await conn.scalar(sa.select(sa.func.sum(accounts.c.balance)))
        assert int(total or 0) == 100 + 3 * 2**40
        rows = (await conn.execute(sa.select(accounts).order_by(accounts.c.account_id))).all()
        assert [(row.account_id, row.balance) for row in rows][:2] == [("a0", 0), ("a1", 10)]


class LosesItsConnectionOnce(Ledger):
    """Kills its own session through Core the first time, as a server restart would."""

    def __init__(self, table: sa.Table, dialect: str) -> None:
        super().__init__(table)
        self.dialect = dialect
        self.killed = False

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        if not self.killed:
            self.killed = True
            conn = connection(tx)
            if self.dialect == "postgres":
                await conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
            else:
                session = await conn.scalar(sa.text("SELECT CONNECTION_ID()"))
                await conn.execute(sa.text(f"KILL {int(session)}"))
        await super().handle(tx, event)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_core_statement_that_loses_its_connection_is_retried(
    db: Database[DriverConnection],
) -> None:
    table = await make_ledger(db)
    stored = await append(db, 5)
    projection = LosesItsConnectionOnce(table, db.dialect)
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, retry_initial_delay=0.01, max_retries=3, batch_size=10
    )
    await db.processor(config).run(projection)
    assert projection.killed
    assert await positions(db, table) == [event.global_position for event in stored]


async def _sessions(db: Database[DriverConnection], count: int) -> list[int]:
    """The server's ids of ``count`` pooled connections, held at once then given back."""
    query = "SELECT pg_backend_pid()" if db.dialect == "postgres" else "SELECT CONNECTION_ID()"
    async with contextlib.AsyncExitStack() as stack:
        ids = []
        for _ in range(count):
            tx = await stack.enter_async_context(db.transaction())
            ids.append(int(await connection(tx).scalar(sa.text(query)) or 0))
    return ids


async def _alive(admin: Database[DriverConnection], sessions: list[int]) -> int:
    """How many of ``sessions`` the server still has."""
    async with admin.transaction() as tx:
        if isinstance(tx, asyncpg.Connection):
            rows = await tx.fetch(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])", sessions
            )
            return len(rows)
        async with tx.cursor() as cursor:
            marks = ", ".join(["%s"] * len(sessions))
            await cursor.execute(
                f"SELECT id FROM information_schema.processlist WHERE id IN ({marks})", sessions
            )
            return len(list(await cursor.fetchall()))


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_pooled_connections_the_server_killed_are_not_lent(
    url: str, db: Database[DriverConnection]
) -> None:
    # As after a server restart: every idle connection in the engine's pool is dead.
    sessions = await _sessions(db, 3)
    async with pupsourcing_async.connect(url, max_size=1) as admin:
        async with admin.transaction() as tx:
            for session in sessions:
                if isinstance(tx, asyncpg.Connection):
                    await tx.execute("SELECT pg_terminate_backend($1)", session)
                else:
                    async with tx.cursor() as cursor:
                        await cursor.execute(f"KILL {session}")
        deadline = asyncio.get_running_loop().time() + 10
        while await _alive(admin, sessions):
            assert asyncio.get_running_loop().time() < deadline, "the sessions outlived KILL"
    outcomes = []
    for _ in range(3):
        try:
            async with db.transaction() as tx:
                await db.store.append(tx, es.Any(), [make_event()])
            outcomes.append("ok")
        except StoreUnavailableError:
            outcomes.append("unavailable")
    # Dead connections are dropped when they are checked out, not lent to fail: at most
    # one whose end the event loop had not read yet fails.
    assert outcomes.count("unavailable") <= 1, outcomes
    assert outcomes[-1] == "ok"
    async with db.transaction() as tx:
        assert await db.store.latest_global_position(tx) == outcomes.count("ok")


async def test_a_cancelled_transaction_gives_its_connection_back_to_the_engine(
    engine: AsyncEngine, db: Database[DriverConnection]
) -> None:
    async def append_one() -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), [make_event()])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Cancel at every step of a transaction's life in turn: checkout, BEGIN, the
        # append, COMMIT, and giving the connection back.
        for steps in range(80):
            task = asyncio.create_task(append_one())
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        gc.collect()
    leaked = [str(w.message) for w in caught if "non-checked-in connection" in str(w.message)]
    assert not leaked, leaked
    assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # Every pooled connection is as good as new: no transaction left open on it, none
    # that its driver still thinks is open (the next BEGIN would be a SAVEPOINT).
    await asyncio.gather(*(append_one() for _ in range(5)))
    await drop_tables_within(db, seconds=10)


async def drop_tables_within(db: Database[DriverConnection], *, seconds: float) -> None:
    """No pooled connection holds a lock on the store's tables: DROP does not wait."""
    if db.dialect == "sqlite":
        return
    async with asyncio.timeout(seconds):
        await drop_tables(db, [db.store.config.events_table])


async def test_the_app_gets_its_connections_back_as_they_were(url: str) -> None:
    # One connection, so the app's next transaction runs on the very one the store used.
    single = engine_for(url, pool_size=1, max_overflow=0)
    config = unique_store_config()
    try:
        async with pupsourcing_async.connect(single, store_config=config) as db:
            await db.migrate()
            table = await make_ledger(db)
            try:
                async with db.transaction() as tx:
                    await db.store.append(tx, es.NoStream(), [make_event()])
                    await connection(tx).execute(table.insert().values(event_id="a", position=1))
                # The app's own transaction still rolls back: the store left its connection
                # transactional, as SQLAlchemy had it.
                with pytest.raises(RuntimeError):
                    async with single.begin() as app:
                        await app.execute(table.insert().values(event_id="b", position=2))
                        raise RuntimeError("the app changes its mind")
                async with single.connect() as app:
                    found = (await app.execute(sa.select(table.c.event_id))).scalars().all()
                assert found == ["a"]
            finally:
                if db.dialect != "sqlite":
                    await drop_tables(db, [config.events_table])
    finally:
        await single.dispose()


async def test_an_autocommit_engine_still_gets_atomic_store_transactions(url: str) -> None:
    autocommit = engine_for(url, pool_size=1, max_overflow=0, isolation_level="AUTOCOMMIT")
    config = unique_store_config()
    try:
        async with pupsourcing_async.connect(autocommit, store_config=config) as db:
            await db.migrate()
            try:
                with pytest.raises(RuntimeError):
                    async with db.transaction() as tx:
                        await db.store.append(tx, es.NoStream(), [make_event()])
                        raise RuntimeError("roll it back")
                async with db.transaction() as tx:
                    assert await db.store.latest_global_position(tx) == 0
                # And the app's connection is in autocommit again: a write stays without
                # a commit.
                table = await make_ledger(db)
                async with autocommit.connect() as app:
                    await app.execute(table.insert().values(event_id="kept", position=1))
                assert await positions(db, table) == [1]
            finally:
                if db.dialect != "sqlite":
                    await drop_tables(db, [config.events_table])
    finally:
        await autocommit.dispose()
