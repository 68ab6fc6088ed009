"""One event store, Go and Python writers side by side.

The Go side is what the Go library does, as its reference describes it (tests/go_shapes.py):
its migration DDL, and its append's statements in its order on a connection that knows
nothing of this library. Nothing here borrows this library's own SQL for the Go side.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import Database, StoreConfig, TransactionRolledBackError, es
from pupsourcing_async.projection import ProcessorConfig
from pupsourcing_async.testing import unique_store_config

from .conftest import RawSQL, drop_tables, read_whole_log
from .go_shapes import GoWriter, go_migration

SERVERS = ["postgres", "mysql"]
# How long the mixed-writer run lasts on each server database (seconds).
MIXED_SECONDS = float(os.environ.get("PUPSOURCING_TEST_INTEROP_SECONDS", "30"))


@asynccontextmanager
async def store(
    url: str, config: StoreConfig | None = None, **options: Any
) -> AsyncIterator[Database]:
    config = config or unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, **options) as db:
        try:
            yield db
        finally:
            if db.dialect != "sqlite":
                await drop_tables(db, [config.events_table])


async def run_go_migration(db: Database) -> None:
    async with db.transaction() as tx:
        raw = RawSQL(db.dialect)
        if db.dialect == "mysql":
            # "Table already exists" is only a note for the Go library; here aiomysql's
            # warnings fail tests.
            await raw.execute(tx, "SET SESSION sql_notes = 0")
        for statement in go_migration(db.dialect, db.store.config):
            await raw.execute(tx, statement)
        if db.dialect == "mysql":
            await raw.execute(tx, "SET SESSION sql_notes = 1")


async def go_writer(db: Database, url: str, **options: Any) -> GoWriter:
    writer = GoWriter(db.dialect, url, db.store.config)
    await writer.open(**options)
    return writer


async def both_write(db: Database, url: str) -> None:
    """A Go append and a library append on one aggregate, each reading the other's."""
    writer = await go_writer(db, url)
    try:
        go_ids = await writer.append("Interop", "Account", "both", ["Opened"])
        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(tx, "Interop", "Account", "both")
            assert [e.event_id for e in stream] == go_ids
            result = await db.store.append(
                tx, es.Exact(1), [es.Event("Interop", "Account", "both", "Deposited", b"{}")]
            )
        assert result.to_version == 2
        more = await writer.append("Interop", "Account", "both", ["Withdrawn"])
        log = await read_whole_log(db)
        assert [e.event_id for e in log] == [*go_ids, result.events[0].event_id, *more]
        assert [e.aggregate_version for e in log] == [1, 2, 3]
    finally:
        await writer.close()


# --- migrations in either order ------------------------------------------------------------


async def test_migrate_over_go_made_tables(url: str) -> None:
    async with store(url) as db:
        await run_go_migration(db)
        await db.migrate()
        await db.migrate()
        await both_write(db, url)


async def test_go_migration_over_tables_this_library_made(url: str) -> None:
    async with store(url) as db:
        await db.migrate()
        await run_go_migration(db)  # its plain CREATE INDEX must not meet a name taken
        await both_write(db, url)
        await db.migrate()  # and again: idempotent over the mix
        if db.dialect == "mysql":
            # Where the Go migration added an index of the same columns, this library's
            # own is dropped again rather than kept twice.
            async with db.transaction() as tx:
                rows = await RawSQL("mysql").fetch(
                    tx,
                    "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE "
                    "TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? GROUP BY INDEX_NAME",
                    db.store.config.events_table,
                )
            names = {name for (name,) in rows}
            events = db.store.config.events_table
            assert f"idx_{events}_event_type" in names
            assert f"{events}_event_type_idx" not in names


@pytest.mark.parametrize("backend", ["mysql"])
async def test_go_made_mysql_tables_are_reported_not_silently_trusted(url: str) -> None:
    async with store(url) as db:
        await run_go_migration(db)
        await db.migrate()
        notes = (await db.health()).schema_notes
        assert any("utf8mb4_unicode_ci" in note and "case-insensitively" in note for note in notes)
        assert any("BLOB" in note for note in notes)
        assert any("TIMESTAMP" in note and "time_zone" in note for note in notes)


async def test_a_missing_registration_trigger_is_reported_and_migrate_restores_it(
    url: str,
) -> None:
    async with store(url) as db:
        await db.migrate()
        assert (await db.health()).schema_notes == []
        if db.dialect == "sqlite":
            return  # one writer at a time: no trigger needed
        trigger = f"{db.store.config.events_table}_register"
        async with db.transaction() as tx:
            drop = f"DROP TRIGGER {trigger}"
            await RawSQL(db.dialect).execute(
                tx,
                drop + (f" ON {db.store.config.events_table}" if db.dialect == "postgres" else ""),
            )
        await db.migrate()
        assert (await db.health()).schema_notes == []
        async with db.transaction() as tx:
            await RawSQL(db.dialect).execute(
                tx,
                drop + (f" ON {db.store.config.events_table}" if db.dialect == "postgres" else ""),
            )
        other = pupsourcing_async.connect(url, store_config=db.store.config)
        async with other as fresh:
            notes = (await fresh.health()).schema_notes
        assert any(trigger in note and "missing" in note for note in notes)


# --- rows round trip both ways -------------------------------------------------------------


async def test_go_written_events_read_back_field_for_field(url: str) -> None:
    async with store(url) as db:
        await run_go_migration(db)
        await db.migrate()
        writer = await go_writer(db, url)
        created = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
        try:
            ids = await writer.append(
                "Orders",
                "Order",
                "order-1",
                ["OrderCreated", "PaymentProcessed"],
                created_at=created,
            )
        finally:
            await writer.close()
        log = await read_whole_log(db)
        assert [e.event_id for e in log] == ids
        assert [e.event_type for e in log] == ["OrderCreated", "PaymentProcessed"]
        assert [e.aggregate_version for e in log] == [1, 2]
        assert all(e.created_at == created for e in log)
        assert all(json.loads(e.payload) == {"by": "go"} for e in log)
        assert all(e.metadata is None and e.event_version == 1 for e in log)


# --- a Go append held open is not skipped ----------------------------------------------------


async def held_go_append_is_delivered(db: Database, url: str) -> bool:
    """A Go append holds its transaction open while a later library append commits: does
    a gap-safe reader deliver the Go event (before the later one)?"""
    writer = await go_writer(db, url)
    try:
        holding = asyncio.create_task(
            writer.append("Interop", "Account", "held", ["HeldOpen"], hold=1.5)
        )
        await asyncio.sleep(0.3)  # the Go row has its position now, uncommitted
        async with db.transaction() as tx:
            later = await db.store.append(
                tx, es.NoStream(), [es.Event("Interop", "Account", "later", "After", b"{}")]
            )
        delivered: list[es.PersistedEvent] = []
        position = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while loop.time() < deadline and not any(e.event_type == "After" for e in delivered):
            async with db.transaction() as tx:
                batch = await db.store.read_events(tx, position, 100)
            if batch:
                delivered += batch
                position = batch[-1].global_position
            else:
                await asyncio.sleep(0.05)
        go_ids = await holding
        types = [e.event_type for e in delivered]
        assert types[-1] == "After"
        assert delivered[-1].event_id == later.events[0].event_id
        return go_ids[0] in [e.event_id for e in delivered]
    finally:
        await writer.close()


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_go_append_held_open_is_never_skipped(url: str) -> None:
    async with store(url) as db:
        await db.migrate()
        assert await held_go_append_is_delivered(db, url)


@pytest.mark.parametrize("backend", ["mysql"])
async def test_without_the_trigger_a_held_go_append_is_skipped(url: str) -> None:
    # What the trigger is for: without it, the reader's proof knows only this library's
    # registrations, and passes the Go writer's hole as dead.
    async with store(url) as db:
        await db.migrate()
        async with db.transaction() as tx:
            await RawSQL("mysql").execute(
                tx, f"DROP TRIGGER {db.store.config.events_table}_register"
            )
        db.store.forget_facts()  # type: ignore[attr-defined]
        assert not await held_go_append_is_delivered(db, url)


# --- mixed writers: nothing skipped, nothing doubled, no deadlock --------------------------


async def test_mixed_go_and_library_writers(url: str, tmp_path: Path) -> None:
    seconds = MIXED_SECONDS if "sqlite" not in url else min(MIXED_SECONDS, 10)
    async with store(url, max_size=12) as db:
        await db.migrate()
        table = db.store.config.events_table.replace("_events", "_mixed")
        raw = RawSQL(db.dialect)
        async with db.transaction() as tx:
            await raw.execute(
                tx,
                f"CREATE TABLE {table} (event_id VARCHAR(64) PRIMARY KEY, "
                "aggregate_id VARCHAR(255) NOT NULL, version BIGINT NOT NULL)",
            )
        seen: dict[str, int] = {}
        disorder: list[str] = []

        class Mirror:
            name = "mixed_mirror"

            async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
                if event.aggregate_version != seen.get(event.aggregate_id, 0) + 1:
                    disorder.append(f"{event.aggregate_id} v{event.aggregate_version}")
                seen[event.aggregate_id] = event.aggregate_version
                await raw.execute(
                    tx,
                    f"INSERT INTO {table} (event_id, aggregate_id, version) VALUES (?, ?, ?)",
                    str(event.event_id),
                    event.aggregate_id,
                    event.aggregate_version,
                )

        config = ProcessorConfig(batch_size=50, poll_interval=0.01, max_poll_interval=0.05)
        projection = asyncio.create_task(db.processor(config).run(Mirror()))
        stop = asyncio.Event()
        # Each shared aggregate has one Go writer and every library writer: what is
        # measured is Go against this library. (Two writers of the Go library racing for
        # one version while a third rolls back can deadlock each other in InnoDB.)
        shared = [f"shared-{n}" for n in range(4)]
        committed: list[uuid.UUID] = []
        library_deadlocks: list[TransactionRolledBackError] = []

        async def library_writer(index: int) -> None:
            rng = random.Random(index)
            mine = [f"py-{index}", *shared]
            while not stop.is_set():
                aggregate = rng.choice(mine)
                events = [
                    es.Event("Interop", "Account", aggregate, "Py", b"{}")
                    for _ in range(rng.choice((1, 1, 2)))
                ]
                try:
                    async with db.transaction() as tx:
                        result = await db.store.append(tx, es.Any(), events)
                        if rng.random() < 0.1:
                            raise _RolledBack
                    committed.extend(e.event_id for e in result.events)
                except _RolledBack:
                    pass
                except TransactionRolledBackError as err:
                    # A lock timeout is the one-writer SQLite's queueing, not a deadlock.
                    if err.reason == "deadlock":
                        library_deadlocks.append(err)
                await asyncio.sleep(rng.random() * 0.01)

        writers = [await go_writer(db, url) for _ in range(4)]
        try:
            tasks = [
                asyncio.create_task(
                    writer.keep_appending(
                        [f"go-{n}", shared[n]],
                        stop,
                        rng=random.Random(100 + n),
                        max_hold=3.0 if db.dialect != "sqlite" else 0.1,
                    )
                )
                for n, writer in enumerate(writers)
            ]
            tasks += [asyncio.create_task(library_writer(n)) for n in range(4)]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
            for writer in writers:
                committed += writer.committed
            async with db.transaction() as tx:
                head = await db.store.latest_global_position(tx)
            await db.wait_for(head, projections=["mixed_mirror"], timeout=60)
        finally:
            projection.cancel()
            with pytest.raises(asyncio.CancelledError):
                await projection
            for writer in writers:
                await writer.close()
        async with db.transaction() as tx:
            rows = await raw.fetch(tx, f"SELECT event_id, aggregate_id, version FROM {table}")
        handled = [uuid.UUID(str(event_id)) for event_id, _, _ in rows]
        assert len(handled) == len(set(handled)), "an event was handled twice"
        assert set(handled) == set(committed), "an event was skipped or invented"
        assert not disorder, disorder[:5]
        assert not library_deadlocks, library_deadlocks[:3]
        assert sum(writer.deadlocks for writer in writers) == 0
        versions: dict[str, list[int]] = {}
        for _, aggregate_id, version in rows:
            versions.setdefault(aggregate_id, []).append(int(version))
        for aggregate_id, got in versions.items():
            assert sorted(got) == list(range(1, len(got) + 1)), aggregate_id
        assert any(aggregate.startswith("go-") for aggregate in versions)
        assert len(committed) > 40


class _RolledBack(Exception):
    pass


# --- notifications and time zones ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_shared_notify_channel_wakes_either_side(url: str) -> None:
    import asyncpg

    config = StoreConfig(
        events_table=f"n{uuid.uuid4().hex[:8]}_events",
        aggregate_heads_table=f"n{uuid.uuid4().hex[:8]}_heads",
        checkpoints_table=f"n{uuid.uuid4().hex[:8]}_checkpoints",
        notify_channel="pupsourcing_events",
    )
    async with store(url, config) as db:
        await db.migrate()
        listener = await asyncpg.connect(url)
        payloads: asyncio.Queue[str] = asyncio.Queue()
        await listener.add_listener(
            "pupsourcing_events", lambda *args: payloads.put_nowait(args[3])
        )
        try:
            async with db.transaction() as tx:
                result = await db.store.append(
                    tx, es.NoStream(), [es.Event("Interop", "Account", "n", "E", b"{}")]
                )
            # pupsourcing/core reads the last position from the payload.
            payload = await asyncio.wait_for(payloads.get(), 10)
            assert int(payload) == result.global_positions[-1]

            # A Go writer's notification wakes an idle processor long before its polling.
            class Counter:
                name = "woken"
                count = 0

                async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
                    Counter.count += 1

            idle = ProcessorConfig(poll_interval=60.0, max_poll_interval=60.0)
            task = asyncio.create_task(db.processor(idle).run(Counter()))
            await db.wait_for(result.global_positions[-1], projections=["woken"], timeout=10)
            writer = GoWriter("postgres", url, config)
            await writer.open()
            try:
                await writer.append("Interop", "Account", "n", ["FromGo"])
                async with db.transaction() as tx:
                    head = await db.store.latest_global_position(tx)
                await writer.connection.execute(
                    "SELECT pg_notify('pupsourcing_events', $1)", str(head)
                )
                await db.wait_for(head, projections=["woken"], timeout=10)
            finally:
                await writer.close()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert Counter.count == 2
        finally:
            await listener.close()


@pytest.mark.parametrize("backend", ["mysql"])
async def test_created_at_is_the_same_instant_whatever_the_session_time_zone(url: str) -> None:
    moment = datetime(2024, 6, 1, 8, 30, 0, 123456, tzinfo=UTC)
    # The pool's sessions are set to another zone first; the store pins UTC after.
    options = {"init_command": "SET time_zone = '+05:00'"}
    async with store(url, pool_options=options) as db:
        await db.migrate()
        async with db.transaction() as tx:
            await db.store.append(
                tx, es.NoStream(), [es.Event("Tz", "A", "lib", "E", b"{}", created_at=moment)]
            )
        # A Go writer in another session zone, on a table this library made (DATETIME):
        # its UTC wall-clock time is stored as it is.
        writer = await go_writer(db, url, time_zone="-07:00")
        try:
            await writer.append("Tz", "A", "go", ["E"], created_at=moment)
        finally:
            await writer.close()
        log = await read_whole_log(db)
        assert [e.created_at for e in log] == [moment, moment]
