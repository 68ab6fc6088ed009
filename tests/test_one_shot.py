"""``db.append``, ``db.read_events`` and ``db.read_aggregate_stream``: the guarantees of
``store.append`` and ``store.read_*`` in a transaction block, without one.

Each database runs these on its fastest path (PostgreSQL: one statement in autocommit;
MySQL: the append's START TRANSACTION and COMMIT in its own round trip; SQLite: one call on
the connection's thread), so each path is held to the same contract here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import Iterator
from typing import Any

import aiomysql
import pytest

import pupsourcing_async
from pupsourcing_async import (
    Database,
    DuplicateEventError,
    InvalidEventError,
    OptimisticConcurrencyError,
    TransactionRolledBackError,
    es,
)
from pupsourcing_async.observe import AppendObservation, Observer
from pupsourcing_async.projection import ProcessorConfig
from pupsourcing_async.testing import unique_store_config

from .conftest import RawSQL, drop_tables, make_event, read_whole_log
from .test_cancellation import settle


async def in_block(db: Database, expected: es.ExpectedVersion, events: list[es.Event]) -> Any:
    async with db.transaction() as tx:
        return await db.store.append(tx, expected, events)


async def quiet(db: Database) -> None:
    """Every connection is back in the pool, and (MySQL) none idles in a transaction: a
    pooled connection left in one holds metadata locks that stall DDL for ever.

    The check runs on a connection of its own: one from the pool would end the very
    transaction it looks for.
    """
    await settle(db)
    if db.dialect != "mysql":
        return
    backend: Any = db.backend
    pool = backend.pool
    idle = {connection.server_thread_id[0] for connection in pool._free}
    other = await aiomysql.connect(**pool._conn_kwargs)
    try:
        async with other.cursor() as cursor:
            await cursor.execute("SELECT trx_mysql_thread_id FROM information_schema.innodb_trx")
            rows = await cursor.fetchall()
    finally:
        other.close()
    assert not {thread for (thread,) in rows} & idle


# --- the append ----------------------------------------------------------------------


async def test_append_returns_what_a_transaction_block_stores(db: Database) -> None:
    first = await db.append(es.NoStream(), [make_event("a"), make_event("a")])
    assert [e.aggregate_version for e in first.events] == [1, 2]
    second = await db.append(es.Exact(2), [make_event("a", event_type="Withdrawn")])
    other = await db.append(es.Any(), [make_event("b")])
    third = await db.append(es.StreamExists(), [make_event("a")])
    assert third.events[0].aggregate_version == 4
    positions = [*first.global_positions, *second.global_positions, *other.global_positions]
    positions += third.global_positions
    assert positions == sorted(positions)
    assert len(set(positions)) == 5
    log = await read_whole_log(db)
    assert log == [*first.events, *second.events, *other.events, *third.events]
    stream = await db.read_aggregate_stream("Banking", "Account", "a")
    assert stream.events == [*first.events, *second.events, *third.events]
    assert stream.version == 4
    window = await db.read_aggregate_stream("Banking", "Account", "a", 2, 3)
    assert [e.aggregate_version for e in window.events] == [2, 3]
    assert await db.read_events() == log
    assert await db.read_events(positions[1], limit=2) == log[2:4]


@pytest.mark.parametrize(
    ("expected", "actual"),
    [(es.NoStream(), 1), (es.Exact(3), 1), (es.Exact(0), 1)],
)
async def test_a_conflicting_append_raises_and_writes_nothing(
    db: Database, expected: es.ExpectedVersion, actual: int
) -> None:
    await db.append(es.NoStream(), [make_event("a")])
    with pytest.raises(OptimisticConcurrencyError) as caught:
        await db.append(expected, [make_event("a"), make_event("a")])
    assert caught.value.actual == actual
    with pytest.raises(OptimisticConcurrencyError):
        await db.append(es.StreamExists(), [make_event("never")])
    await quiet(db)
    assert len(await read_whole_log(db)) == 1
    # The connection that met the conflict is fit for the next append.
    assert (await db.append(es.Exact(1), [make_event("a")])).events[0].aggregate_version == 2
    await quiet(db)


async def test_a_retried_append_returns_the_stored_result_and_writes_nothing(
    db: Database,
) -> None:
    events = [make_event("a"), make_event("a", event_type="Second")]
    stored = await db.append(es.NoStream(), events)
    await db.append(es.Any(), [make_event("a")])
    # Whatever the expected version says, the same events are found, not written again.
    for expected in (es.NoStream(), es.Exact(0), es.Any(), es.StreamExists()):
        again = await db.append(expected, events)
        assert again.events == stored.events
        assert again.global_positions == stored.global_positions
    await quiet(db)
    # And a retry through a transaction block agrees with one without.
    assert (await in_block(db, es.NoStream(), events)).events == stored.events
    assert len(await read_whole_log(db)) == 3


async def test_an_event_id_stored_before_is_a_duplicate_and_nothing_is_written(
    db: Database,
) -> None:
    taken = make_event("a")
    await db.append(es.NoStream(), [taken])
    # Another aggregate, or the same aggregate with other events around it: not a retry.
    cases = [
        [make_event("b", event_id=taken.event_id)],
        [make_event("a"), make_event("a", event_id=taken.event_id)],
        [make_event("a", event_type="Other", event_id=taken.event_id)],
    ]
    for events in cases:
        with pytest.raises(DuplicateEventError):
            await db.append(es.Any(), events)
    assert [e.event_id for e in await read_whole_log(db)] == [taken.event_id]
    stream = await db.read_aggregate_stream("Banking", "Account", "b")
    assert stream.events == []
    await quiet(db)


async def test_bad_input_is_refused_before_anything_is_sent(db: Database) -> None:
    with pytest.raises(ValueError, match="at least one event"):
        await db.append(es.Any(), [])
    with pytest.raises(ValueError, match="aggregate"):
        await db.append(es.Any(), [make_event("a"), make_event("b")])
    with pytest.raises(InvalidEventError):
        await db.append(es.Any(), [make_event("a", metadata=b"not json")])
    with pytest.raises(ValueError, match="limit"):
        await db.read_events(0, limit=0)
    with pytest.raises(ValueError, match="from_position"):
        await db.read_events(-1)
    with pytest.raises(ValueError, match="aggregate_id"):
        await db.read_aggregate_stream("Banking", "Account", "")
    assert await read_whole_log(db) == []
    await quiet(db)


async def test_concurrent_appends_to_one_aggregate_get_every_version_once(
    db: Database,
) -> None:
    async def writer(worker: int) -> list[int]:
        versions = []
        for n in range(15):
            result = await db.append(es.Any(), [make_event("shared", event_type=f"W{worker}-{n}")])
            versions += [e.aggregate_version for e in result.events]
        return versions

    outcomes = await asyncio.gather(*(writer(w) for w in range(8)))
    assert sorted(v for vs in outcomes for v in vs) == list(range(1, 121))
    stream = await db.read_aggregate_stream("Banking", "Account", "shared")
    assert [e.aggregate_version for e in stream.events] == list(range(1, 121))
    log = await read_whole_log(db)
    assert [e.global_position for e in log] == sorted({e.global_position for e in log})

    # Exact races: for each version exactly one writer wins, the rest conflict.
    async def exact(version: int, worker: int) -> bool:
        try:
            await db.append(es.Exact(version), [make_event("raced", event_type=f"W{worker}")])
        except OptimisticConcurrencyError:
            return False
        return True

    for version in range(5):
        won = await asyncio.gather(*(exact(version, w) for w in range(6)))
        assert sum(won) == 1
    await quiet(db)


async def test_appends_through_both_paths_interleave_without_gaps_or_skips(
    db: Database,
) -> None:
    rng = random.Random(3)

    async def writer(worker: int) -> None:
        for n in range(20):
            events = [make_event(f"w{worker % 3}") for _ in range(rng.choice((1, 2, 5)))]
            if (worker + n) % 2:
                await db.append(es.Any(), events)
            else:
                await in_block(db, es.Any(), events)

    await asyncio.gather(*(writer(w) for w in range(6)))
    log = await read_whole_log(db)
    for aggregate in ("w0", "w1", "w2"):
        versions = [e.aggregate_version for e in log if e.aggregate_id == aggregate]
        assert sorted(versions) == list(range(1, len(versions) + 1))
    # A reader without a transaction block pages through the same log.
    paged: list[es.PersistedEvent] = []
    while batch := await db.read_events(paged[-1].global_position if paged else 0, limit=7):
        paged += batch
    assert paged == log


async def test_observers_see_appends_without_a_transaction_block(url: str) -> None:
    seen: list[AppendObservation] = []

    class Recording(Observer):
        @contextlib.contextmanager
        def observe_append(self, observation: AppendObservation) -> Iterator[None]:
            try:
                yield
            finally:
                seen.append(observation)

    config = dataclasses.replace(unique_store_config(), observers=(Recording(),))
    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        try:
            await db.append(es.NoStream(), [make_event("a"), make_event("a")])
            with pytest.raises(OptimisticConcurrencyError):
                await db.append(es.NoStream(), [make_event("a")])
        finally:
            if db.dialect != "sqlite":
                await drop_tables(db, [config.events_table])
    assert [o.events for o in seen] == [2, 1]
    assert seen[0].result is not None
    assert seen[0].error is None
    assert isinstance(seen[1].error, OptimisticConcurrencyError)
    assert {o.dialect for o in seen} == {db.dialect}


# --- notifications -------------------------------------------------------------------


async def test_an_append_without_a_block_wakes_processors_here_and_elsewhere(
    db: Database, url: str
) -> None:
    class Counter:
        def __init__(self, name: str) -> None:
            self.name = name
            self.count = 0

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            self.count += 1

    idle = ProcessorConfig(poll_interval=60.0, max_poll_interval=60.0)
    here = Counter("here")
    databases = [db]
    config = db.store.config
    if db.dialect == "postgres":
        # Another process would see only the notification: so does another pool.
        databases.append(await pupsourcing_async.connect(url, store_config=config))
    counters = [here] + [Counter("elsewhere")] * (len(databases) - 1)
    tasks = [
        asyncio.create_task(database.processor(idle).run(counter))
        for database, counter in zip(databases, counters, strict=True)
    ]
    try:
        first = await db.append(es.NoStream(), [make_event("n")])
        await db.wait_for(first.global_positions[-1], projections=["here"], timeout=10)
        await asyncio.sleep(0.2)  # both idle now, with a minute's polling ahead
        loop = asyncio.get_running_loop()
        started = loop.time()
        second = await db.append(es.Any(), [make_event("n")])
        for counter in counters:
            await db.wait_for(second.global_positions[-1], projections=[counter.name], timeout=10)
        assert loop.time() - started < 5
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for database in databases[1:]:
            await database.close()
    assert [counter.count for counter in counters] == [2] * len(counters)


# --- cancellation and faults ---------------------------------------------------------


async def test_cancelled_appends_are_whole_or_absent_and_leak_no_connection(
    db: Database,
) -> None:
    rng = random.Random(11)
    batches = [
        [make_event(f"c-{n}", event_type=f"E{i}") for i in range(rng.choice((1, 1, 4)))]
        for n in range(120)
    ]
    tasks = [asyncio.create_task(db.append(es.NoStream(), events)) for events in batches]
    for task in tasks:
        await asyncio.sleep(rng.random() * 0.002)
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, (es.AppendResult, asyncio.CancelledError)) for o in outcomes), outcomes
    await quiet(db)
    stored = await read_whole_log(db)
    by_aggregate: dict[str, list[str]] = {}
    for event in stored:
        by_aggregate.setdefault(event.aggregate_id, []).append(event.event_type)
    for events in batches:
        got = by_aggregate.get(events[0].aggregate_id, [])
        assert got in ([], [e.event_type for e in events]), got
    # A caller who does not know the outcome retries: one copy, whatever had happened.
    for events, outcome in zip(batches, outcomes, strict=True):
        if not isinstance(outcome, es.AppendResult):
            await db.append(es.NoStream(), events)
    stored = await read_whole_log(db)
    assert sorted(e.event_id for e in stored) == sorted(e.event_id for b in batches for e in b)
    await quiet(db)


async def test_cancelled_reads_leak_no_connection(db: Database) -> None:
    await db.append(es.NoStream(), [make_event("r") for _ in range(50)])
    rng = random.Random(5)
    for _ in range(40):
        reads = [
            asyncio.create_task(db.read_events(0, limit=1000)),
            asyncio.create_task(db.read_aggregate_stream("Banking", "Account", "r")),
        ]
        await asyncio.sleep(rng.random() * 0.002)
        for task in reads:
            task.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
    await quiet(db)
    assert len(await db.read_events()) == 50


# --- PostgreSQL: the pool reset sent with COMMIT or ROLLBACK --------------------------


def _pg_only(db: Database) -> None:
    if db.dialect != "postgres":
        pytest.skip("the pool reset is asyncpg's")


async def _session_state(db: Database) -> tuple[str, int, int, str]:
    async with db.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT current_setting('application_name'), "
            "(SELECT count(*) FROM pg_listening_channels()), "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()), "
            "current_setting('pupsourcing_test.marker', true)"
        )
    return (row[0], row[1], row[2], row[3] or "")


async def test_a_block_leaves_no_session_state_behind_whichever_way_it_ends(
    db: Database,
) -> None:
    _pg_only(db)
    pristine = await _session_state(db)
    assert pristine[1:] == (0, 0, "")

    async def dirty(tx: Any) -> None:
        await tx.execute("SET application_name = 'dirty'")
        await tx.execute("SET pupsourcing_test.marker = 'left'")
        await tx.execute("LISTEN pupsourcing_test_channel")
        await tx.execute("SELECT pg_advisory_lock(424242)")

    # Committed, rolled back by an exception, and turned into a rollback by the server
    # (an error swallowed in the block): each hands back a clean connection.
    endings: list[type[BaseException] | None] = [None, RuntimeError, TransactionRolledBackError]
    for ending in endings:
        for _ in range(3):  # whichever pooled connection comes back next
            with contextlib.suppress(RuntimeError, TransactionRolledBackError):
                async with db.transaction() as tx:
                    await dirty(tx)
                    if ending is RuntimeError:
                        raise RuntimeError("the block fails")
                    if ending is TransactionRolledBackError:
                        with contextlib.suppress(Exception):
                            await tx.execute("SELECT 1 / 0")
            await db.append(es.Any(), [make_event("s")])
            assert await _session_state(db) == pristine, ending
    await quiet(db)


async def test_an_error_swallowed_in_a_block_refuses_commit_and_logs_nothing(
    db: Database,
) -> None:
    _pg_only(db)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        with pytest.raises(TransactionRolledBackError, match="earlier statement failed"):
            async with db.transaction() as tx:
                await db.store.append(tx, es.Any(), [make_event("x")])
                with contextlib.suppress(Exception):
                    await tx.execute("SELECT 1 / 0")
        await quiet(db)
    finally:
        loop.set_exception_handler(previous)
    assert reported == []
    assert await db.read_events() == []


async def test_a_pool_of_your_own_keeps_its_own_reset(db: Database, url: str) -> None:
    _pg_only(db)
    resets: list[int] = []

    async def reset(connection: Any) -> None:
        resets.append(1)
        await connection.execute(connection.get_reset_query())

    config = db.store.config
    async with pupsourcing_async.connect(
        url, store_config=config, pool_options={"reset": reset}
    ) as other:
        resets.clear()  # connect() checked a connection out and back
        await other.append(es.Any(), [make_event("own")])
        async with other.transaction() as tx:
            await RawSQL("postgres").execute(tx, "SET application_name = 'dirty'")
        await other.read_events()
    # Each of the three gave its connection back through your reset (so did the
    # notification the append sent, on a connection of its own).
    assert len(resets) >= 3


# --- MySQL: a conflict's look-ups do not cost the connection -------------------------


async def test_mysql_keeps_the_connection_of_a_conflicting_append(db: Database) -> None:
    if db.dialect != "mysql":
        pytest.skip("aiomysql closes a connection given back in a transaction")
    await db.append(es.NoStream(), [make_event("m")])
    async with db.transaction() as tx:
        (before,) = (await RawSQL("mysql").fetch(tx, "SELECT CONNECTION_ID()"))[0]
    for expected in (es.NoStream(), es.Exact(5)):
        with pytest.raises(OptimisticConcurrencyError):
            await db.append(expected, [make_event("m", event_id=uuid.uuid4())])
    async with db.transaction() as tx:
        (after,) = (await RawSQL("mysql").fetch(tx, "SELECT CONNECTION_ID()"))[0]
    assert after == before
    await quiet(db)


@pytest.mark.parametrize("shape", ["positions looked up", "many round trips"])
async def test_mysql_append_without_a_block_ends_every_transaction_it_opens(
    db: Database, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    # A server that interleaves auto-increments (MySQL's innodb_autoinc_lock_mode=2,
    # without RETURNING) needs the positions looked up after COMMIT; a packet limit below
    # the batch's size needs several round trips. Each path must leave no transaction
    # open on the pooled connection (a DROP TABLE would wait on it for ever).
    if db.dialect != "mysql":
        pytest.skip("MySQL's paths")
    store: Any = db.store
    async with db.transaction() as tx, tx.cursor() as cursor:
        facts = await store.facts(cursor, tx)
    if shape == "positions looked up":
        facts = dataclasses.replace(facts, mariadb=False, consecutive=False)
    else:
        facts = dataclasses.replace(facts, max_packet=40_000)
    monkeypatch.setattr(store, "_facts", facts)
    events = [make_event("p", payload=b'{"n": "%d"}' % n) for n in range(400)]
    result = await db.append(es.NoStream(), events)
    assert [
        e.payload for e in (await db.read_aggregate_stream("Banking", "Account", "p")).events
    ] == [e.payload for e in events]
    assert result.global_positions == [e.global_position for e in await read_whole_log(db)]
    with pytest.raises(OptimisticConcurrencyError):
        await db.append(es.NoStream(), [make_event("p")])
    await quiet(db)
