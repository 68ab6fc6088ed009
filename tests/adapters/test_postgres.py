"""PostgreSQL-specific behaviour: the transaction-id fence of gap-safe reading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.testing import unique_store_config

from ..conftest import _Containers, backend_url, drop_tables, make_event


@pytest.fixture
async def pg(containers: _Containers, tmp_path: Path) -> AsyncIterator[Database]:
    url = backend_url("postgres", containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        try:
            yield db
        finally:
            await drop_tables(db, [config.events_table])


async def _read(db: Database, after: int = 0) -> list[int]:
    async with db.transaction() as tx:
        return [e.global_position for e in await db.store.read_events(tx, after, 100)]


async def _read_until(db: Database, want: list[int], after: int = 0) -> list[int]:
    """Read until ``want`` is delivered (a dead hole needs a fence, then a later read)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    got: list[int] = []
    while loop.time() < deadline:
        got = await _read(db, after)
        if got == want:
            return got
        await asyncio.sleep(0.01)
    return got


async def _commit_one(db: Database, aggregate_id: str) -> int:
    async with db.transaction() as tx:
        result = await db.store.append(tx, es.Any(), [make_event(aggregate_id)])
    return result.global_positions[0]


async def test_in_flight_append_holds_back_later_positions(pg: Database) -> None:
    async with pg.transaction() as writer:
        held = await pg.store.append(writer, es.Any(), [make_event("slow")])
        later = await _commit_one(pg, "fast")
        assert later > held.global_positions[0]
        for _ in range(5):
            assert await _read(pg) == []
        assert pg.store.pending_holes()[0].first_position == held.global_positions[0]
    assert await _read(pg) == [held.global_positions[0], later]


async def test_rolled_back_position_is_passed_once_proven_dead(pg: Database) -> None:
    with pytest.raises(RuntimeError):
        async with pg.transaction() as writer:
            await pg.store.append(writer, es.Any(), [make_event("doomed")])
            raise RuntimeError("roll back")
    later = await _commit_one(pg, "fast")
    assert await _read_until(pg, [later]) == [later]
    assert pg.store.pending_holes() == []


async def test_a_reader_that_already_has_a_transaction_id_is_no_fence(pg: Database) -> None:
    reader_stack, writer_stack = AsyncExitStack(), AsyncExitStack()
    async with writer_stack:
        # The reader writes first, so it owns a transaction id older than the writer's.
        reader = await reader_stack.enter_async_context(pg.transaction())
        await pg.store.update_checkpoint(reader, "reader", 0)
        writer = await writer_stack.enter_async_context(pg.transaction())
        held = await pg.store.append(writer, es.Any(), [make_event("slow")])
        later = await _commit_one(pg, "fast")
        assert await pg.store.read_events(reader) == []
        assert pg.store.pending_holes()[0].fenced is False
        await reader_stack.aclose()  # the reader commits; the writer is still open
        # Had the reader's own id been taken as the fence, the hole would now look dead.
        for _ in range(5):
            assert await _read(pg) == []
    assert await _read(pg) == [held.global_positions[0], later]


async def test_a_reader_with_an_old_snapshot_does_not_pass_a_hole_settled_since(
    pg: Database,
) -> None:
    async with AsyncExitStack() as writer_stack:
        writer = await writer_stack.enter_async_context(pg.transaction())
        held = await pg.store.append(writer, es.Any(), [make_event("slow")])
        later = await _commit_one(pg, "fast")
        assert await _read(pg) == []  # sees the hole and fences it
        assert pg.store.pending_holes()[0].fenced is True
        async with pg.transaction() as old:
            # REPEATABLE READ keeps its first statement's snapshot for the whole transaction.
            await old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            assert await pg.store.read_events(old) == []
            await writer_stack.aclose()  # the writer commits
            assert await _read(pg) == [held.global_positions[0], later]
            # The old snapshot still misses the first position: it must not pass it.
            assert await pg.store.read_events(old) == []
