"""Projections on every backend: batches, scope, partitions, leases, retries, the runner,
read-your-writes, status and rebuild."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from pupsourcing_async import (
    Database,
    ProjectionError,
    ProjectionStoppedError,
    StoreUnavailableError,
    connect,
    es,
)
from pupsourcing_async.adapters.base import Backend
from pupsourcing_async.projection import (
    HashPartitionStrategy,
    Processor,
    ProcessorConfig,
    Projection,
    RunMode,
    ScopedProjection,
    fnv1a_32,
    run_projections,
)

from .conftest import RawSQL, ReadModel, Recorder, ScopedRecorder, append_many

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=10)


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


# --- configuration and partitioning ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field_name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"total_partitions": 0}, "total_partitions"),
        ({"partition_key": -1}, "partition_key"),
        ({"partition_key": 2, "total_partitions": 2}, "partition_key"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"max_poll_interval": -1.0}, "max_poll_interval"),
        ({"poll_interval": 2.0, "max_poll_interval": 1.0}, "max_poll_interval"),
        ({"poll_backoff_factor": 0.5}, "poll_backoff_factor"),
        ({"retry_initial_delay": 0}, "retry_initial_delay"),
        ({"max_retries": -1}, "max_retries"),
        ({"run_mode": "one_off"}, "run_mode"),
        ({"partition_strategy": object()}, "partition_strategy"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(
    options: dict[str, Any], field_name: str
) -> None:
    with pytest.raises(ValueError, match=field_name):
        ProcessorConfig(**options)


def test_config_defaults_match_the_go_library() -> None:
    config = ProcessorConfig()
    assert (config.batch_size, config.partition_key, config.total_partitions) == (100, 0, 1)
    assert (config.poll_interval, config.max_poll_interval, config.poll_backoff_factor) == (
        0.1,
        5.0,
        2.0,
    )
    assert config.run_mode is RunMode.CONTINUOUS
    assert config.partition_strategy == HashPartitionStrategy()
    assert config.checkpoint_name("balances") == "balances"
    assert ProcessorConfig(partition_key=1, total_partitions=3).checkpoint_name("b") == "b_p1"


def test_fnv1a_matches_the_reference_vectors() -> None:
    # Published FNV-1a 32-bit test vectors (the same function as Go's hash/fnv New32a).
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    strategy = HashPartitionStrategy()
    assert strategy.should_process("anything", 0, 1)
    assert strategy.should_process("foobar", 0xBF9CF968 % 7, 7)
    owners = [
        [p for p in range(4) if strategy.should_process(f"acc-{i}", p, 4)] for i in range(200)
    ]
    assert all(len(found) == 1 for found in owners)
    assert {found[0] for found in owners} == {0, 1, 2, 3}
    # UTF-8, not code points.
    assert strategy.should_process("ünï", fnv1a_32("ünï".encode()) % 5, 5)


def test_projection_protocols_are_structural() -> None:
    class Plain:
        name = "plain"

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            pass

    class Scoped(Plain):
        aggregate_types = ("User",)
        bounded_contexts = ()

    assert isinstance(Plain(), Projection)
    assert not isinstance(Plain(), ScopedProjection)
    assert isinstance(Scoped(), ScopedProjection)


# --- batches ---------------------------------------------------------------------------


async def test_one_off_handles_every_event_once_and_checkpoints(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 35)
    projection = Recorder(read_model)
    await db.processor(ONE_OFF).run(projection)
    assert [e.event_id for e in projection.seen] == [e.event_id for e in stored]
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]
    assert await checkpoint(db, "recorder") == stored[-1].global_position
    # Resume = restart: a second run finds nothing new.
    await db.processor(ONE_OFF).run(projection)
    assert len(projection.seen) == 35
    more = await append_many(db, 3)
    await db.processor(ONE_OFF).run(projection)
    assert [e.event_id for e in projection.seen[35:]] == [e.event_id for e in more]


async def test_scoped_projection_skips_but_still_checkpoints_filtered_events(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 4, aggregate_type="Account")
    await append_many(db, 3, aggregate_type="Loan")
    await append_many(db, 2, aggregate_type="Account", bounded_context="Lending")
    last = (await append_many(db, 2, aggregate_type="Card"))[-1]
    accounts = ScopedRecorder(read_model, name="accounts", aggregate_types=("Account",))
    await db.processor(ONE_OFF).run(accounts)
    assert [e.aggregate_type for e in accounts.seen] == ["Account"] * 6
    assert await checkpoint(db, "accounts") == last.global_position

    banking = ScopedRecorder(
        read_model,
        name="banking",
        aggregate_types=("Account", "Card"),
        bounded_contexts=["Banking"],
    )
    banking.read_model = ReadModel(db, read_model.table)
    async with db.transaction() as tx:
        await RawSQL(db.dialect).execute(tx, f"DELETE FROM {read_model.table}")
    await db.processor(ONE_OFF).run(banking)
    assert {(e.bounded_context, e.aggregate_type) for e in banking.seen} == {
        ("Banking", "Account"),
        ("Banking", "Card"),
    }
    assert len(banking.seen) == 6


async def test_handler_error_rolls_the_batch_back_and_names_the_event(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 12)
    await append_many(db, 1, event_type="Poison")
    await append_many(db, 3)
    projection = Recorder(read_model, fail_on="Poison")
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5)
    with pytest.raises(ProjectionError) as caught:
        await db.processor(config).run(projection)
    err = caught.value
    assert type(err) is ProjectionError
    assert err.projection == "recorder"
    assert err.global_position == stored[-1].global_position + 1
    assert err.event_type == "Poison"
    assert isinstance(err.__cause__, RuntimeError)
    assert "Poison" in str(err)
    # Batches of 5: the first two committed; the failed one left no trace.
    assert await checkpoint(db, "recorder") == stored[9].global_position
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored[:10]]


async def test_handler_errors_marked_retryable_are_retried(
    db: Database, read_model: ReadModel, caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(Exception):
        pass

    @dataclass
    class FlakyRecorder(Recorder):
        failures_left: int = 2
        retryable_errors: tuple[type[Exception], ...] = (Flaky,)

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            if self.failures_left:
                self.failures_left -= 1
                raise Flaky("the downstream service blinked")
            await super().handle(tx, event)

    stored = await append_many(db, 5)
    projection = FlakyRecorder(read_model)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, retry_initial_delay=0.01)
    with caplog.at_level(logging.ERROR, logger="pupsourcing_async.projection"):
        await db.processor(config).run(projection)
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2
    assert "Flaky" in retries[0].getMessage()


async def test_retries_give_up_after_max_retries(db: Database, read_model: ReadModel) -> None:
    class Down(Exception):
        pass

    @dataclass
    class AlwaysDown(Recorder):
        retryable_errors: tuple[type[Exception], ...] = (Down,)

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            raise Down("still down")

    await append_many(db, 1)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, retry_initial_delay=0.01, max_retries=2)
    with pytest.raises(ProjectionStoppedError) as caught:
        await db.processor(config).run(AlwaysDown(read_model))
    assert caught.value.projection == "recorder"
    assert isinstance(caught.value.__cause__, Down)
    assert "3 failed attempt" in str(caught.value)


async def test_max_retries_counts_consecutive_failures_only(
    db: Database, read_model: ReadModel
) -> None:
    class Blink(Exception):
        pass

    @dataclass
    class BlinksOncePerEvent(Recorder):
        blinked: set[int] = field(default_factory=set)
        retryable_errors: tuple[type[Exception], ...] = (Blink,)

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            if event.global_position not in self.blinked:
                self.blinked.add(event.global_position)
                raise Blink(f"blinked at {event.global_position}")
            await super().handle(tx, event)

    stored = await append_many(db, 4)
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, batch_size=1, retry_initial_delay=0.001, max_retries=1
    )
    # Four failures in all, but never two in a row: a success starts the count afresh.
    await db.processor(config).run(BlinksOncePerEvent(read_model))
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]


async def test_a_lease_that_cannot_be_had_for_a_while_is_retried(
    db: Database, read_model: ReadModel
) -> None:
    # While the server restarts, even the connection for the lease cannot be had.
    class Restarting:
        def __init__(self, backend: Backend, refusals: int) -> None:
            self._backend = backend
            self.refusals = refusals

        def __getattr__(self, name: str) -> Any:
            return getattr(self._backend, name)

        def lease(self, name: str, *, poll_interval: float, log: Any) -> Any:
            if self.refusals:
                self.refusals -= 1
                raise StoreUnavailableError("the database system is starting up", location="db")
            return self._backend.lease(name, poll_interval=poll_interval, log=log)

    stored = await append_many(db, 3)
    backend = Restarting(db.backend, refusals=2)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, retry_initial_delay=0.001, max_retries=2)
    await Processor(cast(Backend, backend), config).run(Recorder(read_model))
    assert backend.refusals == 0
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]

    backend = Restarting(db.backend, refusals=3)
    with pytest.raises(ProjectionStoppedError) as caught:
        await Processor(cast(Backend, backend), config).run(Recorder(read_model, name="other"))
    assert isinstance(caught.value.__cause__, StoreUnavailableError)


async def test_projection_without_a_name_is_refused(db: Database) -> None:
    class Nameless:
        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            pass

    with pytest.raises(TypeError, match="name"):
        await db.processor(ONE_OFF).run(Nameless())  # type: ignore[arg-type]


async def test_a_handle_that_is_not_a_coroutine_function_is_refused_at_start(
    db: Database,
) -> None:
    class Blocking:
        name = "blocking"

        def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            pass

    await append_many(db, 1)
    with pytest.raises(TypeError, match=r"projection blocking: handle must be a coroutine"):
        await db.processor(ONE_OFF).run(Blocking())  # type: ignore[arg-type]
    assert await checkpoint(db, "blocking") == 0


async def test_retry_waits_are_jittered_within_the_backoff(tmp_path: Path) -> None:
    # Workers that lose their database together must not come back in lock-step.
    class Refusing:
        def __init__(self, backend: Backend) -> None:
            self._backend = backend

        def __getattr__(self, name: str) -> Any:
            return getattr(self._backend, name)

        def lease(self, name: str, *, poll_interval: float, log: Any) -> Any:
            raise StoreUnavailableError("the database system is starting up", location="db")

    class Waits:
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def debug(self, msg: str, **fields: object) -> None:
            pass

        info = debug

        def error(self, msg: str, **fields: object) -> None:
            if "retry_in" in fields:
                self.seconds.append(float(cast(float, fields["retry_in"])))

    initial, ceiling, retries = 0.01, 0.04, 5
    waits = [Waits(), Waits()]
    async with connect(f"sqlite:///{tmp_path / 'jitter.db'}") as db:
        await db.migrate()
        for logger in waits:
            config = ProcessorConfig(
                run_mode=RunMode.ONE_OFF,
                logger=logger,
                retry_initial_delay=initial,
                retry_max_delay=ceiling,
                max_retries=retries,
            )
            with pytest.raises(ProjectionStoppedError):
                await Processor(cast(Backend, Refusing(db.backend)), config).run(
                    Recorder(cast(ReadModel, None))
                )
    for logger in waits:
        assert len(logger.seconds) == retries
        for attempt, seconds in enumerate(logger.seconds, 1):
            backoff = min(initial * 2 ** (attempt - 1), ceiling)
            assert backoff / 2 - 0.0005 <= seconds <= backoff
    assert waits[0].seconds != waits[1].seconds


# --- partitions and leases -------------------------------------------------------------


async def test_partitions_split_the_events_and_checkpoint_separately(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 40, aggregates=13)
    workers = [Recorder(read_model, name="split") for _ in range(3)]
    await asyncio.gather(
        *(
            db.processor(
                ProcessorConfig(
                    run_mode=RunMode.ONE_OFF, batch_size=7, partition_key=k, total_partitions=3
                )
            ).run(worker)
            for k, worker in enumerate(workers)
        )
    )
    strategy = HashPartitionStrategy()
    handled = [e.event_id for worker in workers for e in worker.seen]
    assert sorted(handled) == sorted(e.event_id for e in stored)
    for key, worker in enumerate(workers):
        assert all(strategy.should_process(e.aggregate_id, key, 3) for e in worker.seen)
        # Each partition sees its aggregates' events in order.
        assert [e.global_position for e in worker.seen] == sorted(
            e.global_position for e in worker.seen
        )
        assert await checkpoint(db, f"split_p{key}") == stored[-1].global_position
    assert await checkpoint(db, "split") == 0


async def test_two_workers_never_process_one_partition_at_once(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 30)
    active = 0
    most = 0

    @dataclass
    class Slow(Recorder):
        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            nonlocal active, most
            active += 1
            most = max(most, active)
            try:
                await asyncio.sleep(0.005)
                await super().handle(tx, event)
            finally:
                active -= 1

    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, batch_size=5, lease_poll_interval=0.02, poll_interval=0.01
    )
    first, second = Slow(read_model, name="exclusive"), Slow(read_model, name="exclusive")
    await asyncio.gather(db.processor(config).run(first), db.processor(config).run(second))
    assert most == 1
    assert sorted(e.event_id for e in first.seen + second.seen) == sorted(
        e.event_id for e in stored
    )
    assert len(await read_model.rows()) == 30


async def test_a_waiting_worker_takes_over_when_the_first_stops(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 5)
    config = ProcessorConfig(poll_interval=0.01, max_poll_interval=0.05, lease_poll_interval=0.02)
    first, second = Recorder(read_model, name="relay"), Recorder(read_model, name="relay")
    first_task = asyncio.create_task(db.processor(config).run(first))
    await db.wait_for(
        (await append_many(db, 1))[-1].global_position, projections=["relay"], timeout=10
    )
    second_task = asyncio.create_task(db.processor(config).run(second))
    await asyncio.sleep(0.2)
    first_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first_task
    later = await append_many(db, 4)
    await db.wait_for(later[-1].global_position, projections=["relay"], timeout=10)
    second_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second_task
    assert len(first.seen) == 6
    assert [e.event_id for e in second.seen][-4:] == [e.event_id for e in later]
    assert len(await read_model.rows()) == 10


# --- continuous running, the runner and read-your-writes --------------------------------


async def test_continuous_processor_wakes_for_new_events(
    db: Database, read_model: ReadModel
) -> None:
    projection = Recorder(read_model)
    config = ProcessorConfig(poll_interval=0.05, max_poll_interval=30.0)
    task = asyncio.create_task(db.processor(config).run(projection))
    try:
        await asyncio.sleep(0.3)  # idle long enough to have backed off
        loop = asyncio.get_running_loop()
        for _ in range(3):
            appended = (await append_many(db, 1))[-1]
            started = loop.time()
            await db.wait_for(appended.global_position, projections=["recorder"], timeout=10)
            # Woken by the append, not by a 30-second backoff.
            assert loop.time() - started < 5
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(projection.seen) == 3


async def test_cancelling_mid_batch_rolls_back_and_releases_the_lease(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 10)
    entered = asyncio.Event()

    @dataclass
    class Stuck(Recorder):
        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            await super().handle(tx, event)
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(db.processor(ONE_OFF).run(Stuck(read_model)))
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await read_model.rows() == []
    assert await checkpoint(db, "recorder") == 0
    # The lease is free: another run goes through at once.
    finished = Recorder(read_model)
    await asyncio.wait_for(db.processor(ONE_OFF).run(finished), 20)
    assert len(finished.seen) == 10


async def test_run_projections_runs_them_together_and_returns_when_caught_up(
    db: Database, read_model: ReadModel
) -> None:
    stored = await append_many(db, 12)
    one = Recorder(read_model, name="one")
    two = ScopedRecorder(ReadModel(db, read_model.table), name="two", aggregate_types=("None",))
    await run_projections(db, [(one, ONE_OFF), (two, ONE_OFF)])
    assert len(one.seen) == 12
    assert two.seen == []
    assert await checkpoint(db, "two") == stored[-1].global_position
    await run_projections(db, [])


async def test_run_projections_fails_fast_with_the_failing_projection(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 3)
    await append_many(db, 1, event_type="Poison")
    steady = Recorder(read_model, name="steady")

    class Failing:
        name = "failing"

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            if event.event_type == "Poison":
                raise RuntimeError("cannot handle Poison")

    failing = Failing()
    continuous = ProcessorConfig(poll_interval=0.01)
    with pytest.raises(ProjectionError) as caught:
        await asyncio.wait_for(run_projections(db, [(steady, continuous), (failing, ONE_OFF)]), 30)
    assert caught.value.projection == "failing"
    assert isinstance(caught.value.__cause__, RuntimeError)


async def test_wait_for_times_out_naming_the_laggards(db: Database) -> None:
    appended = (await append_many(db, 1))[-1]
    with pytest.raises(TimeoutError, match="nobody"):
        await db.wait_for(appended.global_position, projections=["nobody"], timeout=0.2)
    with pytest.raises(ValueError, match="projection"):
        await db.wait_for(1, projections=[])


async def test_wait_for_refuses_one_name_given_as_a_str(db: Database) -> None:
    # A str is a sequence of letters: waiting on "b", "a", ... would never end.
    with pytest.raises(TypeError, match=r"projections=\['balances'\]"):
        await db.wait_for(1, projections="balances", timeout=5)


async def test_wait_for_counts_every_partition(db: Database, read_model: ReadModel) -> None:
    stored = await append_many(db, 10, aggregates=10)
    target = stored[-1].global_position
    first = ProcessorConfig(run_mode=RunMode.ONE_OFF, partition_key=0, total_partitions=2)
    await db.processor(first).run(Recorder(read_model, name="halves"))
    with pytest.raises(TimeoutError):
        # Partition 1 has not started yet, but partition 0's row says it exists.
        async with db.transaction() as tx:
            await db.store.update_checkpoint(tx, "halves_p1", 0)
        await db.wait_for(target, projections=["halves"], timeout=0.2)
    second = ProcessorConfig(run_mode=RunMode.ONE_OFF, partition_key=1, total_partitions=2)
    await db.processor(second).run(Recorder(read_model, name="halves"))
    await db.wait_for(target, projections=["halves"], timeout=5)


# --- status and rebuild ----------------------------------------------------------------


async def test_status_reports_lag_and_reset_rebuilds(db: Database, read_model: ReadModel) -> None:
    stored = await append_many(db, 8)
    await db.processor(ONE_OFF).run(Recorder(read_model, name="whole"))
    for key in range(2):
        config = ProcessorConfig(run_mode=RunMode.ONE_OFF, partition_key=key, total_partitions=2)
        await db.processor(config).run(
            ScopedRecorder(read_model, name="parts", aggregate_types=("X",))
        )
    more = await append_many(db, 3)
    status = {s.name: s for s in await db.projection_status()}
    assert set(status) == {"whole", "parts_p0", "parts_p1"}
    head = more[-1].global_position
    assert status["whole"].position == stored[-1].global_position
    assert status["whole"].head == head
    assert status["whole"].lag == 3
    assert status["parts_p1"].lag == 3
    assert status["whole"].updated_at is not None

    assert await db.reset_projection("parts") == 2
    assert await db.reset_projection("parts") == 0
    assert {s.name for s in await db.projection_status()} == {"whole"}
    async with db.transaction() as tx:
        await RawSQL(db.dialect).execute(tx, f"DELETE FROM {read_model.table}")
    assert await db.reset_projection("whole") == 1
    rebuilt = Recorder(read_model, name="whole")
    await db.processor(ONE_OFF).run(rebuilt)
    assert len(rebuilt.seen) == 11
    assert len(await read_model.rows()) == 11
