"""The worker runtime, on every backend: a clean stop on SIGTERM and SIGINT, progress
reports while catching up, failures as exit code 1, and its log formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async._worker import (
    JsonFormatter,
    configure_logging,
    run_worker,
    stop_on_signals,
    with_progress,
)
from pupsourcing_async.projection import ProcessorConfig, RunMode

from .conftest import ReadModel, Recorder, append_many

FAST = ProcessorConfig(batch_size=5, poll_interval=0.01, max_poll_interval=0.05)


@dataclass
class Captured:
    """A logger that keeps what it is told."""

    records: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    def debug(self, msg: str, **fields: object) -> None:
        self.records.append(("debug", msg, fields))

    def info(self, msg: str, **fields: object) -> None:
        self.records.append(("info", msg, fields))

    def error(self, msg: str, **fields: object) -> None:
        self.records.append(("error", msg, fields))

    def messages(self) -> list[str]:
        return [msg for _, msg, _ in self.records]

    def named(self, msg: str) -> list[dict[str, object]]:
        return [fields for _, found, fields in self.records if found == msg]


async def until(condition: Any, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_worker_cleanly_with_exit_0(
    db: Database, read_model: ReadModel, number: signal.Signals
) -> None:
    await append_many(db, 12)
    entered = asyncio.Event()

    @dataclass
    class Stuck(Recorder):
        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            await super().handle(tx, event)
            if event.global_position == 7:
                entered.set()
                await asyncio.sleep(60)

    log = Captured()
    worker = asyncio.create_task(run_worker(db, [(Stuck(read_model), FAST)], logger=log))
    await asyncio.wait_for(entered.wait(), 20)
    signal.raise_signal(number)
    assert await asyncio.wait_for(worker, 20) == 0
    # The first batch committed; the one in flight rolled back; the lease is free.
    assert await checkpoint(db, "recorder") == 5
    assert [p for _, p in await read_model.rows()] == [1, 2, 3, 4, 5]
    if db.dialect != "sqlite":
        assert await db.backend.lease_held("recorder") is False
    assert log.named("stopping") == [{"signal": number.name}]
    assert log.named("worker stopped") == [{"signal": number.name}]
    # The handlers are gone with the worker: the default behaviour is back.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


async def test_a_second_signal_while_stopping_is_only_logged(db: Database) -> None:
    log = Captured()
    with stop_on_signals(log) as stop:
        with pytest.raises(asyncio.CancelledError):
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            await asyncio.sleep(10)
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()
    assert stop.received == "SIGTERM"
    assert log.messages() == ["stopping", "already stopping"]


@dataclass
class Slow(Recorder):
    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        await super().handle(tx, event)
        await asyncio.sleep(0.01)


async def watch_progress(db: Database, read_model: ReadModel) -> list[dict[str, object]]:
    """Run a slow projection over 40 events and 3 more; the progress records logged."""
    await append_many(db, 40)
    log = Captured()
    worker = asyncio.create_task(
        run_worker(db, [(Slow(read_model), FAST)], logger=log, progress_interval=0.05)
    )
    try:
        await until(lambda: log.named("caught up"))
        await append_many(db, 3)
        await until(lambda: len(log.named("caught up")) == 2)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert log.named("caught up") == [
        {"checkpoint": "recorder", "position": 40},
        {"checkpoint": "recorder", "position": 43},
    ]
    progress = log.named("progress")
    assert progress
    assert set(progress[0]) == {"checkpoint", "position", "head", "lag", "events_per_s"}
    return progress


async def test_progress_is_reported_from_each_batch_while_catching_up(
    db: Database, read_model: ReadModel, url: str
) -> None:
    config = with_progress(db.store.config)
    assert with_progress(config) is config
    async with pupsourcing_async.connect(url, store_config=config) as observed:
        progress = await watch_progress(observed, read_model)
    # Reports came while it was behind, with the pace it went at.
    behind = [p for p in progress if p["lag"]]
    assert len(behind) >= 2, progress
    assert any(p["events_per_s"] for p in behind), progress
    positions = [int(str(p["position"])) for p in progress]
    assert positions == sorted(positions)


async def test_progress_without_the_observer_reads_the_checkpoints(
    db: Database, read_model: ReadModel
) -> None:
    # On SQLite these reads wait behind the batches' write lock: the reports may come
    # only between batches, or once caught up.
    await watch_progress(db, read_model)


async def test_a_failing_projection_is_exit_1_and_stops_the_others(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 3, event_type="Poison")
    other = Recorder(read_model, name="other")
    failing = Recorder(read_model, name="failing", fail_on="Poison")
    log = Captured()
    code = await run_worker(db, [(other, FAST), (failing, FAST)], logger=log)
    assert code == 1
    (failure,) = log.named("worker stopped on a failure")
    assert failure["projection"] == "failing"
    assert failure["global_position"] == 1
    assert "Poison" in str(failure["error"])


async def test_one_off_projections_end_the_worker_with_exit_0(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 4)
    log = Captured()
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF)
    assert await run_worker(db, [(Recorder(read_model), config)], logger=log) == 0
    assert log.messages()[0] == "worker started"
    assert log.named("worker stopped") == [{"reason": "every projection caught up"}]


async def test_a_progress_report_that_fails_does_not_stop_the_worker(
    db: Database, read_model: ReadModel
) -> None:
    class Flaky(Database):
        async def projection_status(self) -> Any:
            raise ConnectionError("status table is having a bad day")

    await append_many(db, 4)
    log = Captured()
    flaky = Flaky(db.backend)
    worker = asyncio.create_task(
        run_worker(flaky, [(Recorder(read_model), FAST)], logger=log, progress_interval=0.02)
    )
    try:
        await until(lambda: len(log.named("progress unavailable")) >= 2)
        await db.wait_for(4, projections=["recorder"], timeout=20)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    assert "bad day" in str(log.named("progress unavailable")[0]["error"])


async def test_run_worker_refuses_bad_arguments(db: Database) -> None:
    with pytest.raises(ValueError, match="at least one"):
        await run_worker(db, [])
    with pytest.raises(ValueError, match="progress_interval"):
        await run_worker(db, [(Recorder(ReadModel(db, "x")), FAST)], progress_interval=0)


def test_json_logs_are_one_object_per_record_with_the_fields_as_keys() -> None:
    stream = io.StringIO()
    handler = configure_logging(json_lines=True, stream=stream)
    try:
        logger = logging.getLogger("pupsourcing_async.test_worker")
        from pupsourcing_async.log import get_logger

        get_logger(None, logger.name).info("progress", position=5, lag=2, note="a\nb")
        logger.error("plain %s", "text")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "progress"
    assert (first["position"], first["lag"], first["note"]) == (5, 2, "a\nb")
    assert first["level"] == "info"
    assert first["logger"] == "pupsourcing_async.test_worker"
    assert second["message"] == "plain text"
    assert second["level"] == "error"


def test_the_json_formatter_keeps_its_own_keys_and_renders_anything() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.pupsourcing_fields = {"message": "field", "when": object()}
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "m"
    assert data["when"].startswith("<object")
