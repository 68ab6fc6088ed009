"""``pupsourcing-async publish nats`` as a process: progress logs, a clean stop on SIGTERM
and SIGINT (exit 0, lease released), and one clear line (exit 1 or 2) when it cannot run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js import api

from pupsourcing_async import Database
from pupsourcing_async import nats as pnats

from ..conftest import append_many, read_whole_log
from .conftest import ROOT, Names, NatsServer, stream_contents, wait_until


def table_options(db: Database) -> list[str]:
    config = db.store.config
    return [
        "--events-table",
        config.events_table,
        "--aggregate-heads-table",
        config.aggregate_heads_table,
        "--checkpoints-table",
        config.checkpoints_table,
    ]


class Running:
    """A ``publish nats`` process and the lines it has written to stderr so far."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def messages(self) -> list[str]:
        return [str(record["message"]) for record in self.records()]

    async def stop(self, number: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(number)
        return await asyncio.wait_for(self.process.wait(), 30)


@asynccontextmanager
async def publishing(*args: str) -> AsyncIterator[Running]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pupsourcing_async.cli",
        "publish",
        "nats",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    running = Running(process)

    async def read() -> None:
        assert process.stderr is not None
        async for line in process.stderr:
            running.lines.append(line.decode().rstrip("\n"))

    reader = asyncio.create_task(read())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.wait_for(reader, 10)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", "publish", "nats", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ},
        timeout=timeout,
    )


async def test_publish_nats_publishes_logs_progress_and_stops_cleanly_on_sigterm(
    db: Database, url: str, nats_client: Client, nats_url: str, names: Names
) -> None:
    stored = await append_many(db, 30)
    args = [
        "--url",
        url,
        *table_options(db),
        "--nats",
        nats_url,
        "--stream",
        names.stream,
        "--subject-prefix",
        names.prefix,
        "--batch-size",
        "8",
        "--progress-every",
        "0.2",
        "--json",
    ]
    async with publishing(*args) as running:

        async def all_published() -> bool:
            try:
                return len(await stream_contents(nats_client, names.stream)) == len(stored)
            except Exception:
                return False

        await wait_until(all_published, within=30)

        async def reported_caught_up() -> bool:
            return "caught up" in running.messages()

        await wait_until(reported_caught_up, within=30)
        assert await running.stop(signal.SIGTERM) == 0
    records = running.records()
    assert len(records) == len(running.lines), "every line of --json output is JSON"
    progress = [r for r in records if r["message"] == "progress"]
    assert progress, running.lines
    assert {"checkpoint", "position", "head", "lag", "events_per_s", "time", "level"} <= set(
        progress[-1]
    )
    assert progress[-1]["checkpoint"] == "nats_publisher"
    stopping = [r for r in records if r["message"] == "stopping"]
    assert [r["signal"] for r in stopping] == ["SIGTERM"]
    messages = running.messages()
    assert messages.index("stopping") < messages.index("lease released")
    contents = await stream_contents(nats_client, names.stream)
    assert [event for _, event in contents] == await read_whole_log(db)
    if db.dialect != "sqlite":
        assert await db.backend.lease_held("nats_publisher") is False


async def test_publish_nats_stops_cleanly_on_sigint_mid_batch_waiting_for_acks(
    db: Database, url: str, private_nats: NatsServer, private_names: Names
) -> None:
    names = private_names
    first = await append_many(db, 5)
    client = await pnats.connect(private_nats.url, timeout=10)
    args = [
        "--url",
        url,
        *table_options(db),
        "--nats",
        private_nats.url,
        "--stream",
        names.stream,
        "--subject-prefix",
        names.prefix,
        "--ack-timeout",
        "60",
        "--log-level",
        "debug",
    ]
    try:
        async with publishing(*args) as running:

            async def published() -> bool:
                try:
                    return len(await stream_contents(client, names.stream)) == 5
                except Exception:
                    return False

            await wait_until(published, within=30)
            private_nats.pause()
            try:
                # Appended while the publisher is idle: on SQLite a batch waiting for its
                # acknowledgements holds the write lock.
                await append_many(db, 3)

                async def waiting_for_acks() -> bool:
                    return sum("publishing" in line for line in running.lines) == 2

                await wait_until(waiting_for_acks, within=30)
                assert await running.stop(signal.SIGINT) == 0
            finally:
                private_nats.resume()
    finally:
        await client.close()
    assert any("stopping signal=SIGINT" in line for line in running.lines), running.lines
    # The batch in flight rolled back: the checkpoint is where the first one left it.
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "nats_publisher") == first[-1].global_position
    if db.dialect != "sqlite":
        assert await db.backend.lease_held("nats_publisher") is False


async def test_sigterm_while_waiting_for_nats_stops_with_exit_0(
    sqlite_db: Database, tmp_path: Path, stopped_nats: NatsServer
) -> None:
    async with publishing(
        "--url",
        f"sqlite:///{tmp_path / 'events.db'}",
        "--nats",
        stopped_nats.url,
        "--stream",
        "EVENTS",
        "--connect-timeout",
        "60",
    ) as running:

        async def trying() -> bool:
            return any("NATS connection trouble" in line for line in running.lines)

        await wait_until(trying, within=30)
        assert await running.stop(signal.SIGTERM) == 0


def test_nats_that_does_not_answer_is_one_clear_line_and_exit_1(
    tmp_path: Path, stopped_nats: NatsServer
) -> None:
    result = run_cli(
        "--url",
        f"sqlite:///{tmp_path / 'events.db'}",
        "--nats",
        f"nats://me:s3cret@127.0.0.1:{stopped_nats.port}",
        "--stream",
        "EVENTS",
        "--connect-timeout",
        "0.5",
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1
    assert f"NATS does not answer at nats://127.0.0.1:{stopped_nats.port}" in errors[0]
    assert "s3cret" not in result.stderr


async def test_a_stream_with_a_too_short_window_stops_it_with_exit_1(
    sqlite_db: Database, tmp_path: Path, nats_client: Client, nats_url: str, names: Names
) -> None:
    await nats_client.jetstream().add_stream(
        api.StreamConfig(name=names.stream, subjects=[f"{names.prefix}.>"], duplicate_window=30)
    )
    result = await asyncio.to_thread(
        run_cli,
        "--url",
        f"sqlite:///{tmp_path / 'events.db'}",
        "--nats",
        nats_url,
        "--stream",
        names.stream,
        "--subject-prefix",
        names.prefix,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"error: stream {names.stream} has duplicate_window 30.0, but the publisher needs 120.0"
        )
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stream", "A.B"], "stream name"),
        (["--stream", "EVENTS", "--subject-prefix", "a.*"], "subject prefix"),
        (["--stream", "EVENTS", "--subject-prefix", "$JS"], "starts with $"),
        (["--stream", "EVENTS", "--batch-size", "0"], "must be 1 or more"),
        (["--stream", "EVENTS", "--duplicate-window", "-5"], "must be more than 0"),
        (["--stream", "EVENTS", "--max-age", "10"], "max_age"),
        ([], "--stream"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path: Path, args: Sequence[str], message: str) -> None:
    result = run_cli("--url", f"sqlite:///{tmp_path / 'e.db'}", *args)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pupsourcing-async")
    assert message in last


def test_no_database_url_is_a_usage_error() -> None:
    env = {key: value for key, value in os.environ.items() if key != "PUPSOURCING_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", "publish", "nats", "--stream", "E"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "no database URL" in result.stderr
