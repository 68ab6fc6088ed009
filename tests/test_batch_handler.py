"""Projections with ``handle_batch``, on every backend: one call per batch with the events
in scope, in the batch's transaction, failing and retrying as ``handle`` does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from pupsourcing_async import Database, ProjectionError, ProjectionStoppedError, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

from .conftest import ReadModel, Recorder, append_many

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5)


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


@dataclass
class BatchRecorder(Recorder):
    """Writes each batch into the read model in one ``handle_batch`` call."""

    batches: list[list[int]] = field(default_factory=list)
    single_calls: int = 0
    aggregate_types: Sequence[str] = ()
    fail_after_writing: bool = False

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        self.single_calls += 1
        await super().handle(tx, event)

    async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
        self.batches.append([event.global_position for event in events])
        for event in events:
            await Recorder.handle(self, tx, event)
        if self.fail_after_writing:
            raise RuntimeError("the batch went wrong after writing")


async def test_handle_batch_gets_each_batch_in_one_call_instead_of_handle(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 12)
    projection = BatchRecorder(read_model)
    await db.processor(ONE_OFF).run(projection)
    positions = [e.global_position for e in stored]
    assert projection.batches == [positions[0:5], positions[5:10], positions[10:12]]
    assert projection.single_calls == 0
    assert [p for _, p in await read_model.rows()] == positions
    assert await checkpoint(db, "recorder") == positions[-1]


async def test_handle_batch_sees_only_the_events_in_scope_and_never_an_empty_batch(
    db: Database, read_model: ReadModel
) -> None:
    wanted = await append_many(db, 3, aggregate_type="Card")
    others = await append_many(db, 6, aggregate_type="Account")
    wanted += await append_many(db, 2, aggregate_type="Card")
    projection = BatchRecorder(read_model, aggregate_types=("Card",))
    await db.processor(ONE_OFF).run(projection)
    # Batches of 5: [c c c a a], [a a a a c], [c]: the filtered events are never passed.
    assert projection.batches == [
        [e.global_position for e in wanted[:3]],
        [wanted[3].global_position],
        [wanted[4].global_position],
    ]
    assert await checkpoint(db, "recorder") == max(e.global_position for e in wanted + others)

    # A batch with nothing in scope moves the checkpoint without calling handle_batch.
    more = await append_many(db, 4, aggregate_type="Account")
    calls = len(projection.batches)
    await db.processor(ONE_OFF).run(projection)
    assert len(projection.batches) == calls
    assert await checkpoint(db, "recorder") == more[-1].global_position


async def test_a_failing_handle_batch_rolls_the_batch_back_and_names_its_first_event(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 4)
    await db.processor(ONE_OFF).run(BatchRecorder(read_model))
    more = await append_many(db, 3)
    failing = BatchRecorder(read_model, fail_after_writing=True)
    with pytest.raises(ProjectionError) as caught:
        await db.processor(ONE_OFF).run(failing)
    err = caught.value
    assert type(err) is ProjectionError
    assert err.projection == "recorder"
    assert err.global_position == more[0].global_position
    assert err.event_type == "MoneyDeposited"
    assert isinstance(err.__cause__, RuntimeError)
    assert "batch of 3 event(s)" in str(err)
    # What handle_batch wrote before raising went with the rollback; the checkpoint stayed.
    assert await checkpoint(db, "recorder") == stored[-1].global_position
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]


async def test_handle_batch_errors_marked_retryable_replay_the_whole_batch(
    db: Database, read_model: ReadModel
) -> None:
    class Blink(Exception):
        pass

    @dataclass
    class Flaky(BatchRecorder):
        failures_left: int = 2
        retryable_errors: tuple[type[Exception], ...] = (Blink,)

        async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
            # Writes first, then fails: the rollback must take the rows back each time.
            await super().handle_batch(tx, events)
            if self.failures_left:
                self.failures_left -= 1
                raise Blink("the broker blinked")

    stored = await append_many(db, 7)
    projection = Flaky(read_model)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5, retry_initial_delay=0.01)
    await db.processor(config).run(projection)
    positions = [e.global_position for e in stored]
    assert projection.batches == [positions[:5]] * 3 + [positions[5:]]
    assert [p for _, p in await read_model.rows()] == positions


async def test_handle_batch_retries_give_up_after_max_retries(
    db: Database, read_model: ReadModel
) -> None:
    class Down(Exception):
        pass

    @dataclass
    class AlwaysDown(BatchRecorder):
        retryable_errors: tuple[type[Exception], ...] = (Down,)

        async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
            raise Down("still down")

    await append_many(db, 2)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, retry_initial_delay=0.01, max_retries=1)
    with pytest.raises(ProjectionStoppedError) as caught:
        await db.processor(config).run(AlwaysDown(read_model))
    assert isinstance(caught.value.__cause__, Down)
    assert await checkpoint(db, "recorder") == 0


async def test_cancelling_inside_handle_batch_rolls_back(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 4)
    entered = asyncio.Event()

    @dataclass
    class Stuck(BatchRecorder):
        async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
            await super().handle_batch(tx, events)
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(db.processor(ONE_OFF).run(Stuck(read_model)))
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await read_model.rows() == []
    assert await checkpoint(db, "recorder") == 0
    finished = BatchRecorder(read_model)
    await asyncio.wait_for(db.processor(ONE_OFF).run(finished), 20)
    assert [len(batch) for batch in finished.batches] == [4]
