"""Gap safety: a reader that checkpoints the last position it saw never skips an event.

Eight writers hold their transactions open for a few milliseconds after appending; half
of them append to two aggregates in one transaction (so a transaction's id can be older
than its positions imply) and one transaction in ten rolls back. A reader pages through
``read_events`` with a checkpoint and must see every committed event exactly once, in
position order, and none that rolled back. A naive ``global_position > checkpoint`` reader
runs beside it under the same load to show that the load does make events go missing.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

from pupsourcing_async import Database, es

from .conftest import RawSQL, make_event

WRITERS = 8
TRANSACTIONS_PER_WRITER = 40


class _Rollback(Exception):
    pass


@dataclass
class _Log:
    committed: set[uuid.UUID] = field(default_factory=set)
    rolled_back: set[uuid.UUID] = field(default_factory=set)
    done: bool = False


async def _writer(db: Database, writer: int, log: _Log, rng: random.Random) -> None:
    appends_twice = writer % 2 == 0
    for n in range(TRANSACTIONS_PER_WRITER):
        ids: list[uuid.UUID] = []
        roll_back = rng.random() < 0.1
        try:
            async with db.transaction() as tx:
                first = make_event(f"w{writer}-a{n % 3}")
                await db.store.append(tx, es.Any(), [first])
                ids.append(first.event_id)
                if appends_twice:
                    await asyncio.sleep(rng.uniform(0, 0.003))
                    second = make_event(f"w{writer}-b{n % 3}")
                    await db.store.append(tx, es.Any(), [second])
                    ids.append(second.event_id)
                await asyncio.sleep(rng.uniform(0.001, 0.006))
                if roll_back:
                    raise _Rollback
        except _Rollback:
            log.rolled_back.update(ids)
        else:
            log.committed.update(ids)


async def _reader(db: Database, log: _Log, deadline: float) -> list[es.PersistedEvent]:
    seen: list[es.PersistedEvent] = []
    checkpoint = 0
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        async with db.transaction() as tx:
            batch = await db.store.read_events(tx, checkpoint, 25)
        if batch:
            seen += batch
            checkpoint = batch[-1].global_position
        elif log.done and {e.event_id for e in seen} >= log.committed:
            break
        else:
            await asyncio.sleep(0.002)
    return seen


async def _naive_reader(db: Database, raw: RawSQL, log: _Log, deadline: float) -> set[str]:
    seen: set[str] = set()
    checkpoint = 0
    table = db.store.config.events_table
    loop = asyncio.get_running_loop()
    while loop.time() < deadline:
        async with db.transaction() as tx:
            rows = await raw.fetch(
                tx,
                f"SELECT global_position, event_id FROM {table} "
                "WHERE global_position > ? ORDER BY global_position LIMIT 25",
                checkpoint,
            )
        if rows:
            seen.update(str(_as_uuid(row[1])) for row in rows)
            checkpoint = int(rows[-1][0])
        elif log.done:
            break
        else:
            await asyncio.sleep(0.002)
    return seen


def _as_uuid(value: object) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes):
        return uuid.UUID(bytes=value)
    return uuid.UUID(str(value))


async def test_reader_sees_every_committed_event_once_in_order(db: Database, raw: RawSQL) -> None:
    log = _Log()
    rng = random.Random(20261127)
    deadline = asyncio.get_running_loop().time() + 90

    async def write_all() -> None:
        await asyncio.gather(
            *(_writer(db, w, log, random.Random(rng.random())) for w in range(WRITERS))
        )
        log.done = True

    _, seen, naive_seen = await asyncio.gather(
        write_all(), _reader(db, log, deadline), _naive_reader(db, raw, log, deadline)
    )

    ids = [event.event_id for event in seen]
    positions = [event.global_position for event in seen]
    assert len(log.committed) > WRITERS * TRANSACTIONS_PER_WRITER  # half append twice
    assert log.rolled_back, "the load must include rollbacks"
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert positions == sorted(positions), "events were delivered out of position order"
    assert not set(ids) & log.rolled_back, "a rolled-back event was delivered"
    missed = log.committed - set(ids)
    assert not missed, f"the reader skipped {len(missed)} of {len(log.committed)} events"
    assert set(ids) == log.committed

    versions: dict[str, int] = {}
    for event in seen:
        assert event.aggregate_version > versions.get(event.aggregate_id, 0)
        versions[event.aggregate_id] = event.aggregate_version

    naive_missed = {str(i) for i in log.committed} - naive_seen
    if db.dialect != "sqlite":
        # SQLite has one writer at a time, so even a naive reader cannot skip there.
        assert naive_missed, "the naive reader missed nothing: the load has no teeth"
    print(  # shown with -s: how much the naive reader lost under the same load
        f"{db.dialect}: {len(log.committed)} committed, naive reader missed {len(naive_missed)}"
    )
    # Every hole below the last delivered position was proven dead on the way.
    assert [h for h in db.store.pending_holes() if h.last_position < positions[-1]] == []
