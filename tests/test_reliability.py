"""Projections under faults, on every backend: workers killed with SIGKILL, writers racing
the processor, and the database dropping every connection (or restarting) under it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.projection import OnFailure, ProcessorConfig, RunMode

from .conftest import RawSQL, ReadModel, Recorder, _Containers, append_many, make_event

ROOT = Path(__file__).resolve().parent.parent


async def _checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


async def _start_worker(
    url: str, db: Database, table: str, *options: str
) -> asyncio.subprocess.Process:
    prefix = db.store.config.events_table.removesuffix("_events")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.projection_worker",
        "--url",
        url,
        "--prefix",
        prefix,
        "--table",
        table,
        *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 30)
    assert line.strip() == b"ready", line
    return process


async def test_workers_killed_mid_run_lose_and_double_nothing(
    db: Database, read_model: ReadModel, url: str
) -> None:
    stored = await append_many(db, 600, aggregates=7)
    final = stored[-1].global_position
    progress: list[int] = []
    for _ in range(4):
        worker = await _start_worker(url, db, read_model.table)
        try:
            # Kill it at a random moment of its run, mid-batch more often than not.
            await asyncio.sleep(random.uniform(0.1, 0.3))
        finally:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        position = await _checkpoint(db, "copier")
        progress.append(position)
        # Whatever it had committed is in the read model exactly up to its checkpoint.
        rows = await read_model.rows()
        assert [p for _, p in rows] == [
            e.global_position for e in stored if e.global_position <= position
        ]
    assert any(0 < position < final for position in progress), progress
    assert progress == sorted(progress)

    # A fresh worker (here in-process) takes over and finishes the job.
    finisher = Recorder(read_model, name="copier")
    await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(finisher)
    rows = await read_model.rows()
    assert [event_id for event_id, _ in rows] == [str(e.event_id) for e in stored]
    assert len({event_id for event_id, _ in rows}) == len(stored)


async def test_workers_killed_between_handling_and_commit_with_parking_lose_and_double_nothing(
    db: Database, read_model: ReadModel, url: str
) -> None:
    stored: list[es.PersistedEvent] = []
    for index in range(300):
        kind = "Poison" if index % 25 == 9 else "MoneyDeposited"
        stored += await append_many(db, 1, event_type=kind)
    poison = [e.global_position for e in stored if e.event_type == "Poison"]
    good = [e.global_position for e in stored if e.event_type != "Poison"]
    assert poison[0] == 10

    async def committed() -> tuple[int, list[int], list[int]]:
        position = await _checkpoint(db, "copier")
        rows = [p for _, p in await read_model.rows()]
        parked = [p.global_position for p in await db.parked_events("copier")]
        # The read model and the parked events are exactly what the checkpoint covers.
        assert rows == [p for p in good if p <= position]
        assert parked == [p for p in poison if p <= position]
        return position, rows, parked

    # Killed once the first batch (1-20) has parked event 10 and handled 1-15, before it
    # commits: nothing of that batch remains.
    worker = await _start_worker(url, db, read_model.table, "--poison", "--hang-at", "15")
    try:
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), 30)
        assert line.strip() == b"hanging", line
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    assert await committed() == (0, [], [])

    progress = []
    for _ in range(3):
        worker = await _start_worker(url, db, read_model.table, "--poison")
        try:
            await asyncio.sleep(random.uniform(0.1, 0.3))
        finally:
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
        progress.append((await committed())[0])
    assert progress == sorted(progress)

    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, on_failure=OnFailure.PARK)
    await db.processor(config).run(Recorder(read_model, name="copier", fail_on="Poison"))
    assert await committed() == (stored[-1].global_position, good, poison)


async def test_projecting_while_writers_race_skips_and_doubles_nothing(
    db: Database, read_model: ReadModel
) -> None:
    committed: set[str] = set()
    rng = random.Random(4)

    async def writer(number: int) -> None:
        for n in range(25):
            events = [make_event(f"w{number}-{n % 4}")]
            if number % 2:
                events.append(make_event(f"w{number}-{n % 4}"))
            try:
                async with db.transaction() as tx:
                    await db.store.append(tx, es.Any(), events)
                    await asyncio.sleep(rng.uniform(0.001, 0.006))
                    if rng.random() < 0.1:
                        raise LookupError("roll back")
            except LookupError:
                continue
            committed.update(str(e.event_id) for e in events)

    projection = Recorder(read_model, name="racer")
    config = ProcessorConfig(batch_size=15, poll_interval=0.005, max_poll_interval=0.05)
    task = asyncio.create_task(db.processor(config).run(projection))
    try:
        await asyncio.gather(*(writer(n) for n in range(8)))
        async with db.transaction() as tx:
            head = await db.store.latest_global_position(tx)
        await db.wait_for(head, projections=["racer"], timeout=60)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    rows = await read_model.rows()
    assert len(rows) == len({event_id for event_id, _ in rows})
    assert {event_id for event_id, _ in rows} == committed
    assert [p for _, p in rows] == sorted(p for _, p in rows)


def _own_ports() -> set[int]:
    """The local TCP ports of this process's sockets (Linux: /proc), which the servers
    show as each session's client port."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def _kill_every_other_session(db: Database, url: str) -> int:
    """Kill every session this process has open on the server but the killer's own, as a
    restart would for this application (other clients of the server are left alone)."""
    async with pupsourcing_async.connect(url, max_size=1) as admin, admin.transaction() as tx:
        raw = RawSQL(db.dialect)
        ports = _own_ports()
        if db.dialect == "postgres":
            rows = await raw.fetch(
                tx,
                "SELECT pid, client_port FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND client_port IS NOT NULL",
            )
        else:
            rows = await raw.fetch(
                tx,
                "SELECT id, SUBSTRING_INDEX(host, ':', -1) FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID() AND host LIKE '%:%'",
            )
        sessions = [int(session) for session, port in rows if int(port) in ports]
        for session in sessions:
            try:
                if db.dialect == "postgres":
                    await raw.execute(tx, "SELECT pg_terminate_backend(?)", session)
                else:
                    await raw.execute(tx, f"KILL {int(session)}")
            except Exception as err:  # a session that ended meanwhile
                if "Unknown thread" not in str(err):
                    raise
        return len(sessions)


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_continuous_processor_survives_losing_every_connection(
    db: Database, read_model: ReadModel, url: str
) -> None:
    projection = Recorder(read_model, name="survivor")
    config = ProcessorConfig(
        poll_interval=0.01, max_poll_interval=0.1, retry_initial_delay=0.05, retry_max_delay=0.5
    )
    task = asyncio.create_task(db.processor(config).run(projection))
    try:
        first = await append_many(db, 5)
        await db.wait_for(first[-1].global_position, projections=["survivor"], timeout=20)
        assert await _kill_every_other_session(db, url) >= 1
        await asyncio.sleep(0.2)
        second = await _append_retrying(db, 5)
        await db.wait_for(second[-1].global_position, projections=["survivor"], timeout=30)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in first + second]


async def _append_retrying(db: Database, count: int) -> list[es.PersistedEvent]:
    """Append while the database comes back: a call on a dead pooled connection may fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        try:
            return await append_many(db, count)
        except pupsourcing_async.StoreUnavailableError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def _restart_command(dialect: str) -> list[list[str]] | None:
    if dialect == "postgres" and shutil.which("pg_ctlcluster") and Path("/etc/postgresql").is_dir():
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        return [["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]]
    if (
        dialect == "mysql"
        and Path("/usr/sbin/mariadbd").exists()
        and shutil.which("start-stop-daemon")
    ):
        daemon = ["start-stop-daemon", "--exec", "/usr/sbin/mariadbd"]
        # --retry waits until the old server has gone; a start before that is a no-op.
        return [
            [*daemon, "--stop", "--oknodo", "--retry", "TERM/60/KILL/5"],
            [*daemon, "--start", "--oknodo", "--background"],
        ]
    return None


@pytest.mark.parametrize("backend", ["postgres", "mysql"])
async def test_a_continuous_processor_resumes_after_a_server_restart(
    db: Database, read_model: ReadModel, url: str, containers: _Containers
) -> None:
    if os.environ.get("PUPSOURCING_TEST_RESTART_SERVERS") != "1":
        pytest.skip("restarts the database server: set PUPSOURCING_TEST_RESTART_SERVERS=1")
    commands = _restart_command(db.dialect)
    if commands is None:
        pytest.skip(f"no way to restart the {db.dialect} server on this machine")
    projection = Recorder(read_model, name="restarted")
    config = ProcessorConfig(
        poll_interval=0.01, max_poll_interval=0.2, retry_initial_delay=0.1, retry_max_delay=1.0
    )
    task = asyncio.create_task(db.processor(config).run(projection))
    errors: list[BaseException] = []
    restarting = asyncio.Event()

    async def writer() -> None:
        # Writes while the server goes down and comes back: every error is the library's.
        while not restarting.is_set():
            try:
                async with db.transaction() as tx:
                    await db.store.latest_global_position(tx)
            except Exception as err:
                errors.append(err)
            await asyncio.sleep(0.01)

    try:
        first = await append_many(db, 5)
        await db.wait_for(first[-1].global_position, projections=["restarted"], timeout=20)
        writing = asyncio.create_task(writer())
        for command in commands:
            await asyncio.to_thread(subprocess.run, command, check=True, timeout=120)
        second = await _append_retrying(db, 5)
        restarting.set()
        await writing
        assert errors, "the writer never saw the server go"
        assert all(isinstance(e, pupsourcing_async.PupsourcingError) for e in errors), errors
        await db.wait_for(second[-1].global_position, projections=["restarted"], timeout=60)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in first + second]
