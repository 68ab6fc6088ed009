"""Cancellation at any point: nothing half-written, one copy after a retry, nothing leaked.

A cancellation can land before BEGIN, mid-append, while COMMIT is on the wire, or while a
processor waits for a connection, its lease, or news. Whatever the point, an append
either committed whole or not at all, a retry with the same events stores one copy, and
the pool, the lease and the LISTEN subscription are all given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async._async import acquire_safely
from pupsourcing_async.projection import ProcessorConfig, RunMode
from pupsourcing_async.testing import unique_store_config

from .conftest import ReadModel, Recorder, drop_tables, make_event, read_whole_log


async def settle(db: Database, within: float = 10.0) -> None:
    """Wait until every connection is back in the pool."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    # The pool signals nothing when a connection comes back: poll, with a deadline.
    while db.backend.connections_in_use and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert db.backend.connections_in_use == 0


async def test_cancelled_appends_are_whole_or_absent_and_retries_store_one_copy(
    db: Database,
) -> None:
    rng = random.Random(7)
    batches = [
        [make_event(f"agg-{n}", event_type=f"E{i}") for i in range(rng.choice((1, 1, 3)))]
        for n in range(150)
    ]

    async def write(events: list[es.Event]) -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), events)

    tasks = [asyncio.create_task(write(events)) for events in batches]
    for task in tasks:
        await asyncio.sleep(rng.random() * 0.002)
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(o is None or isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    # Every append is whole or absent, however its cancellation landed.
    stored = await read_whole_log(db)
    by_aggregate: dict[str, list[str]] = {}
    for event in stored:
        by_aggregate.setdefault(event.aggregate_id, []).append(event.event_type)
    for events in batches:
        got = by_aggregate.get(events[0].aggregate_id, [])
        assert got in ([], [e.event_type for e in events]), got
    # The cancelled callers do not know their outcome: they retry, and get one copy.
    for events, outcome in zip(batches, outcomes, strict=True):
        if outcome is not None:
            await write(events)
    stored = await read_whole_log(db)
    assert sorted(e.event_id for e in stored) == sorted(e.event_id for b in batches for e in b)
    await settle(db)


async def test_cancellation_while_commit_is_on_the_wire_is_safe_to_retry(db: Database) -> None:
    # Cancel right after the append returns, i.e. during COMMIT or just before it.
    for round_ in range(60):
        events = [make_event(f"c-{round_}")]
        appended = asyncio.Event()

        async def write(
            events: list[es.Event] = events, appended: asyncio.Event = appended
        ) -> None:
            async with db.transaction() as tx:
                await db.store.append(tx, es.NoStream(), events)
                appended.set()

        task = asyncio.create_task(write())
        await appended.wait()
        for _ in range(round_ % 4):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            async with db.transaction() as tx:
                retried = await db.store.append(tx, es.NoStream(), events)
            assert [e.event_id for e in retried.events] == [events[0].event_id]
    assert len(await read_whole_log(db)) == 60
    await settle(db)


async def run_and_cancel(
    db: Database, projection: Recorder, delay: float, config: ProcessorConfig
) -> None:
    task = asyncio.create_task(db.processor(config).run(projection))
    await asyncio.sleep(delay)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 15)


async def test_cancelled_projection_runs_leak_nothing_and_handle_each_event_once(
    db: Database, read_model: ReadModel
) -> None:
    rng = random.Random(11)
    config = ProcessorConfig(batch_size=7, poll_interval=0.005, max_poll_interval=0.02)
    projection = Recorder(read_model)
    written = 0
    for round_ in range(40):
        async with db.transaction() as tx:
            for _ in range(rng.randrange(0, 6)):
                await db.store.append(tx, es.Any(), [make_event(f"p-{round_ % 5}")])
                written += 1
        # From "at once" (before the lease) to "mid-batch" and "idle".
        await run_and_cancel(db, projection, rng.choice((0, 0.0005, 0.002, 0.01, 0.03)), config)
        if db.dialect != "sqlite":
            assert not await db.backend.lease_held(projection.name)
        await settle(db)
    await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(projection)
    rows = await read_model.rows()
    assert len(rows) == written
    assert len({event_id for event_id, _ in rows}) == written  # exactly once
    await settle(db)


async def test_a_database_closes_promptly_after_cancelled_runs(
    url: str, read_model: ReadModel
) -> None:
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, max_size=4) as other:
        await other.migrate()
        try:
            projection = Recorder(ReadModel(other, read_model.table), name="closing")
            for delay in (0, 0, 0.001, 0.003, 0.01):
                await run_and_cancel(other, projection, delay, ProcessorConfig())
        finally:
            await drop_tables(other, [config.events_table])
        # Nothing is left checked out, so close() has nothing to wait for.
        assert other.backend.connections_in_use == 0
        await asyncio.wait_for(other.close(), 5)


async def test_acquire_safely_raises_a_cancellation_the_driver_swallows() -> None:
    # Python 3.11's asyncio.wait_for can return a result although its caller was
    # cancelled; a driver that connects through it would run on after a cancellation.
    released: list[object] = []
    started = asyncio.Event()

    async def swallowing_acquire() -> object:
        started.set()
        # The bug: the cancellation is lost, and a connection is returned anyway.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
        return "connection"

    async def release(connection: object) -> None:
        released.append(connection)

    async def caller() -> object:
        return await acquire_safely(swallowing_acquire(), release)

    task = asyncio.create_task(caller())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert released == ["connection"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_listen_is_given_back_by_cancelled_runs(
    db: Database, read_model: ReadModel
) -> None:
    listener: Any = db.backend._listener  # type: ignore[attr-defined]
    projection = Recorder(read_model)
    for delay in (0, 0, 0.0005, 0.001, 0.005, 0.02):
        await run_and_cancel(db, projection, delay, ProcessorConfig())
        assert listener._users == 0
        assert listener._connection is None
    await settle(db)
