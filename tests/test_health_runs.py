"""Failures you can see, on every backend: a runner that stopped in this process is
reported stopped with its error at once, parked events are counted, ``health()`` reports
the projections it is asked about, and every lookup by projection name (reset, status,
wait_for, health, the command line) matches its partitions exactly, never by prefix."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from pupsourcing_async import Database, ProjectionError, es
from pupsourcing_async.cli import main
from pupsourcing_async.projection import (
    OnFailure,
    ProcessorConfig,
    RunMode,
    run_projections,
)

from .conftest import ReadModel, Recorder, append_many
from .test_worker_cli import cli_args

FAST = ProcessorConfig(batch_size=3, poll_interval=0.01, max_poll_interval=0.05)
#: Long enough that only the registry can tell a runner has stopped.
PATIENT = 3600.0


@dataclass
class Counter:
    """A projection that only counts what it sees."""

    name: str
    seen: int = 0

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        self.seen += 1


async def test_a_runner_that_stopped_is_reported_stopped_with_its_error_at_once(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 3)
    poison = await append_many(db, 1, event_type="Poison")
    runner = asyncio.create_task(db.processor(FAST).run(Recorder(read_model, fail_on="Poison")))
    with pytest.raises(ProjectionError):
        await runner

    report = await db.health(stale_after=PATIENT)
    [health] = report.projections
    # The checkpoint moved a moment ago, so it alone would pass for progressing.
    assert (health.name, health.position, health.lag) == ("recorder", 3, 1)
    assert health.stopped
    assert not health.progressing
    assert health.last_error is not None
    assert f"failed on event {poison[0].global_position}" in health.last_error
    assert "cannot handle Poison" in health.last_error
    assert not report.ok
    assert report.problems == [f"projection recorder stopped: {health.last_error}"]
    data = report.as_dict()
    assert data["problems"] == report.problems
    assert data["projections"][0]["stopped"] is True
    assert data["projections"][0]["last_error"] == health.last_error

    # Run again, parking the poison: running, progressing, and the parked event counted.
    park = ProcessorConfig(poll_interval=0.01, on_failure=OnFailure.PARK)
    again = asyncio.create_task(db.processor(park).run(Recorder(read_model, fail_on="Poison")))
    try:
        await db.wait_for(poison[0].global_position, projections=["recorder"], timeout=30)
        [health] = (await db.health(stale_after=PATIENT)).projections
        assert not health.stopped
        assert health.progressing
        assert health.parked == 1
        assert health.last_error == "RuntimeError: cannot handle Poison"
        assert (await db.health()).ok  # parked events leave it healthy
    finally:
        again.cancel()
        with pytest.raises(asyncio.CancelledError):
            await again
    # A cancelled runner stopped cleanly: judged by its checkpoint again.
    [health] = (await db.health(stale_after=PATIENT)).projections
    assert not health.stopped
    assert health.progressing
    assert health.parked == 1


async def test_the_projections_a_runner_stopped_with_a_failing_one_are_reported_stopped(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 2, event_type="Poison")

    @dataclass
    class Quiet:
        name: str

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            await asyncio.sleep(0)

    pairs: list[tuple[Any, ProcessorConfig]] = [
        (Quiet("quiet"), FAST),
        (Recorder(read_model, fail_on="Poison"), FAST),
    ]
    with pytest.raises(ProjectionError) as caught:
        await run_projections(db, pairs)
    assert caught.value.projection == "recorder"
    by_name = {p.name: p for p in (await db.health(stale_after=PATIENT)).projections}
    assert by_name["recorder"].stopped
    assert by_name["quiet"].stopped
    assert by_name["quiet"].last_error is not None
    assert by_name["quiet"].last_error.startswith("stopped as projection recorder failed: ")


async def test_health_reports_only_the_projections_named(db: Database) -> None:
    await append_many(db, 4)
    one_off = ProcessorConfig(run_mode=RunMode.ONE_OFF)
    await db.processor(one_off).run(Counter("mine"))
    await db.processor(one_off).run(Counter("theirs"))
    assert {p.name for p in (await db.health()).projections} == {"mine", "theirs"}

    report = await db.health(["mine"])
    assert [p.name for p in report.projections] == ["mine"]
    assert report.ok
    # A projection that has never run: position 0, behind, not progressing.
    report = await db.health(["mine", "missing"])
    assert [(p.name, p.position, p.lag, p.progressing) for p in report.projections] == [
        ("mine", 4, 0, True),
        ("missing", 0, 4, False),
    ]
    assert not report.ok
    assert report.problems == [
        "projection missing is not progressing: 4 behind, its checkpoint moved never"
    ]
    with pytest.raises(TypeError, match=r"projections=\['mine'\]"):
        await db.health("mine")


async def test_a_projection_name_like_a_partition_is_refused(db: Database) -> None:
    @dataclass
    class Named:
        name: str

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            pass

    with pytest.raises(ValueError, match="ends like a partition"):
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Named("orders_p2"))
    assert await db.projection_status() == []


async def orders_and_lookalikes(db: Database) -> None:
    """``orders`` in three partitions beside ``orders_p2_archive`` and ``orders2``, each
    at a checkpoint of its own; ``orders2`` behind."""
    await append_many(db, 6)
    for key in range(3):
        config = ProcessorConfig(run_mode=RunMode.ONE_OFF, partition_key=key, total_partitions=3)
        await db.processor(config).run(Counter("orders"))
    one_off = ProcessorConfig(run_mode=RunMode.ONE_OFF)
    await db.processor(one_off).run(Counter("orders_p2_archive"))
    async with db.transaction() as tx:
        await db.store.update_checkpoint(tx, "orders2", 2)


ORDERS = ["orders_p0", "orders_p1", "orders_p2"]


async def test_lookups_by_name_match_partitions_exactly(db: Database) -> None:
    await orders_and_lookalikes(db)
    names = {s.name for s in await db.projection_status()}
    assert names == {*ORDERS, "orders_p2_archive", "orders2"}

    assert [p.name for p in (await db.health(["orders"])).projections] == ORDERS
    assert [p.name for p in (await db.health(["orders_p1"])).projections] == ["orders_p1"]
    assert [p.name for p in (await db.health(["orders_p2_archive"])).projections] == [
        "orders_p2_archive"
    ]

    # orders2 is behind; waiting for orders does not wait on it, and the other way round.
    await db.wait_for(6, projections=["orders"], timeout=10)
    with pytest.raises(TimeoutError, match="orders2"):
        await db.wait_for(6, projections=["orders2"], timeout=0.05)

    assert await db.reset_projection("orders") == 3
    assert {s.name for s in await db.projection_status()} == {"orders_p2_archive", "orders2"}


async def test_the_command_line_matches_partitions_exactly(
    db: Database, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await orders_and_lookalikes(db)
    where = cli_args(db, url)
    capsys.readouterr()

    def run(*args: str) -> int:
        return main(list(args))

    assert await asyncio.to_thread(run, "projections", "status", "orders", *where) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert listed == ORDERS
    assert await asyncio.to_thread(run, "projections", "reset", "orders", "--yes", *where) == 0
    assert "removed 3 checkpoint(s)" in capsys.readouterr().out
    assert {s.name for s in await db.projection_status()} == {"orders_p2_archive", "orders2"}
    assert await asyncio.to_thread(run, "projections", "reset", "orders", "--yes", *where) == 1
    assert "orders has no checkpoint" in capsys.readouterr().err
    assert {s.name for s in await db.projection_status()} == {"orders_p2_archive", "orders2"}
