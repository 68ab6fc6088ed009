"""``pupsourcing-async worker`` as a subprocess, on every backend: a clean stop on SIGTERM
mid-catch-up, partitions, parking with ``projections parked|retry``, and usage errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from pupsourcing_async import Database

from .conftest import ReadModel, append_many

ROOT = Path(__file__).resolve().parent.parent


def cli_args(db: Database, url: str) -> list[str]:
    """``--url`` and the table options of ``db``'s store."""
    config = db.store.config
    return [
        "--url",
        url,
        "--events-table",
        config.events_table,
        "--aggregate-heads-table",
        config.aggregate_heads_table,
        "--checkpoints-table",
        config.checkpoints_table,
    ]


def environment(db: Database, read_model: ReadModel, delay: float = 0.0) -> dict[str, str]:
    return {
        **os.environ,
        "WORKER_TEST_TABLE": read_model.table,
        "WORKER_TEST_DIALECT": db.dialect,
        "WORKER_TEST_DELAY": str(delay),
    }


async def start(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pupsourcing_async.cli",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await start(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_mid_catch_up_exits_0_at_a_batch_boundary_with_the_lease_released(
    db: Database, read_model: ReadModel, url: str, number: signal.Signals
) -> None:
    stored = await append_many(db, 200)
    worker = await start(
        "worker",
        "tests.worker_projections:copier",
        *cli_args(db, url),
        "--batch-size",
        "5",
        "--progress-every",
        "0.05",
        "--json",
        env=environment(db, read_model, delay=0.01),
    )
    assert worker.stderr is not None
    logs: list[dict[str, object]] = []
    try:
        # Wait until it is catching up: a progress report with events still to go.
        while not any(r["message"] == "progress" and r["lag"] for r in logs):
            line = await asyncio.wait_for(worker.stderr.readline(), 60)
            assert line, "the worker ended first"
            logs.append(json.loads(line))
        worker.send_signal(number)
        rest = await asyncio.wait_for(worker.stderr.read(), 60)
        assert await asyncio.wait_for(worker.wait(), 60) == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    logs += [json.loads(line) for line in rest.decode().splitlines()]
    messages = [record["message"] for record in logs]
    assert "worker started" in messages
    assert {"message": "worker stopped", "signal": number.name}.items() <= next(
        r for r in logs if r["message"] == "worker stopped"
    ).items()

    # Stopped mid-way, on a batch boundary: every batch committed whole or not at all.
    position = await checkpoint(db, "copier")
    assert 0 < position < stored[-1].global_position
    assert position % 5 == 0
    assert [p for _, p in await read_model.rows()] == list(range(1, position + 1))
    if db.dialect != "sqlite":
        assert await db.backend.lease_held("copier") is False


async def test_partitions_one_off_and_the_status_as_json(
    db: Database, read_model: ReadModel, url: str
) -> None:
    stored = await append_many(db, 20, aggregates=7)
    code, _, err = await run(
        "worker",
        "tests.worker_projections:Copier",
        *cli_args(db, url),
        "--partitions",
        "2",
        "--one-off",
        env=environment(db, read_model),
    )
    assert code == 0, err
    assert "every projection caught up" in err
    rows = await read_model.rows()
    assert sorted(p for _, p in rows) == [e.global_position for e in stored]

    code, out, err = await run("projections", "status", "copier", "--json", *cli_args(db, url))
    assert code == 0, err
    status = json.loads(out)
    assert status["head_position"] == 20
    assert [(p["name"], p["position"], p["lag"], p["parked"]) for p in status["projections"]] == [
        ("copier_p0", 20, 0, 0),
        ("copier_p1", 20, 0, 0),
    ]


async def test_park_list_and_retry_from_the_command_line(
    db: Database, read_model: ReadModel, url: str
) -> None:
    good = await append_many(db, 4)
    poison = await append_many(db, 1, event_type="Poison")
    good += await append_many(db, 3)
    env = environment(db, read_model)
    where = cli_args(db, url)

    # Stopping on it is exit 1, naming the event.
    code, _, err = await run(
        "worker", "tests.worker_projections:poisoned", *where, "--one-off", env=env
    )
    assert code == 1
    assert "worker stopped on a failure" in err
    assert f"cannot handle event {poison[0].global_position}" in err

    code, _, err = await run(
        "worker",
        "tests.worker_projections:poisoned",
        *where,
        "--one-off",
        "--on-failure",
        "park",
        "--handler-attempts",
        "2",
        env=env,
    )
    assert code == 0, err
    assert "event parked" in err
    assert sorted(p for _, p in await read_model.rows()) == [e.global_position for e in good]

    code, out, _ = await run("projections", "parked", "--json", *where)
    assert code == 0
    [parked] = json.loads(out)
    assert parked["checkpoint"] == "copier"
    assert parked["global_position"] == poison[0].global_position
    assert parked["event_id"] == str(poison[0].event_id)
    assert parked["attempts"] == 2
    code, out, _ = await run("projections", "parked", "copier", *where)
    assert code == 0
    header, line = out.splitlines()
    assert header.split()[:4] == ["CHECKPOINT", "POSITION", "EVENT", "TYPE"]
    assert line.split()[:4] == ["copier", str(poison[0].global_position), "Poison", "2"]
    assert line.endswith(f"ValueError: cannot handle event {poison[0].global_position}")
    code, out, _ = await run("projections", "status", *where)
    assert "parked events: see" in out

    # Retrying with the handler still broken keeps it (exit 1); fixed, it is handled.
    code, out, err = await run(
        "projections",
        "retry",
        "copier",
        "--projection",
        "tests.worker_projections:poisoned",
        *where,
        env=env,
    )
    assert code == 1
    assert "0 handled, 1 still parked" in out
    code, out, err = await run(
        "projections",
        "retry",
        "copier",
        "--projection",
        "tests.worker_projections:fixed",
        *where,
        env=env,
    )
    assert code == 0, err
    assert "1 handled, 0 still parked" in out
    assert await db.parked_events() == []
    assert sorted(p for _, p in await read_model.rows()) == sorted(
        e.global_position for e in good + poison
    )
    code, out, _ = await run("projections", "parked", *where)
    assert (code, out.strip()) == (0, "no parked events")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("spec", "extra", "code", "message"),
    [
        ("tests.worker_projections", [], 2, "expected MODULE:ATTR"),
        ("tests.worker_projections:missing", [], 2, "has no attribute missing"),
        ("tests.worker_projections:NOT_A_PROJECTION", [], 2, "not a projection"),
        ("tests.worker_projections:TWINS", [], 2, "two projections named copier"),
        ("tests.no_such_module:x", [], 1, "cannot import projection module"),
        (
            "tests.worker_projections:copier",
            ["--partitions", "2", "--partition-key", "2"],
            2,
            "must be below --partitions",
        ),
        ("tests.worker_projections:copier", ["--partitions", "0"], 2, "must be 1 or more"),
        ("tests.worker_projections:copier", ["--on-failure", "ignore"], 2, "invalid choice"),
    ],
)
async def test_usage_errors_of_the_worker_command(
    db: Database,
    read_model: ReadModel,
    url: str,
    spec: str,
    extra: list[str],
    code: int,
    message: str,
) -> None:
    found, _, err = await run(
        "worker", spec, *cli_args(db, url), *extra, env=environment(db, read_model)
    )
    assert found == code, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_retry_needs_the_projection_by_its_name(
    db: Database, read_model: ReadModel, url: str
) -> None:
    code, _, err = await run(
        "projections",
        "retry",
        "other",
        "--projection",
        "tests.worker_projections:copier",
        *cli_args(db, url),
        env=environment(db, read_model),
    )
    assert code == 2
    assert "has no projection named other (it has copier)" in err


def test_the_worker_reports_progress_every_10_seconds_by_default() -> None:
    from pupsourcing_async.cli import build_parser

    args = build_parser().parse_args(["worker", "app:projections"])
    assert args.progress_every == 10.0
    assert (args.partitions, args.partition_key, args.on_failure) == (1, [], "stop")


async def test_version() -> None:
    import pupsourcing_async

    code, out, _ = await run("--version")
    assert (code, out.strip()) == (0, f"pupsourcing-async {pupsourcing_async.__version__}")
