"""Logs, traces, metrics and health: what operators see of the store and its projections."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry

import pupsourcing_async
from pupsourcing_async import (
    Database,
    OptimisticConcurrencyError,
    ProjectionError,
    StoreConfig,
    es,
)
from pupsourcing_async.observe import AppendObservation, BatchObservation, Observer
from pupsourcing_async.otel import OpenTelemetryObserver
from pupsourcing_async.projection import OnFailure, ParkedEvent, ProcessorConfig, RunMode
from pupsourcing_async.prometheus import PrometheusObserver
from pupsourcing_async.testing import unique_store_config

from .conftest import drop_tables, make_event

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF)


class Counting:
    name = "counting"

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.count = 0

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if event.event_type == self.fail_on:
            raise RuntimeError("poisoned")
        self.count += 1


async def open_db(url: str, *observers: Observer, **config: Any) -> Database:
    base = unique_store_config()
    store_config = StoreConfig(
        base.events_table,
        base.aggregate_heads_table,
        base.checkpoints_table,
        observers=observers,
        **config,
    )
    db = await pupsourcing_async.connect(url, store_config=store_config)
    await db.migrate()
    return db


@pytest.fixture
async def observed(url: str) -> AsyncIterator[Any]:
    """Open databases with observers; drop their tables and close them afterwards."""
    opened: list[Database] = []

    async def make(*observers: Observer, **config: Any) -> Database:
        db = await open_db(url, *observers, **config)
        opened.append(db)
        return db

    yield make
    for db in opened:
        if db.dialect != "sqlite":
            await drop_tables(db, [db.store.config.events_table])
        await db.close()


async def append(db: Database, expected: es.ExpectedVersion, *events: es.Event) -> es.AppendResult:
    async with db.transaction() as tx:
        return await db.store.append(tx, expected, list(events))


# --- logging -------------------------------------------------------------------------------


async def test_standard_logging_covers_appends_conflicts_batches_and_failures(
    observed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    db = await observed()
    secret = b'{"card": "4111-1111-1111-1111"}'
    with caplog.at_level(logging.DEBUG, logger="pupsourcing_async"):
        await append(db, es.NoStream(), make_event("acc-9", payload=secret))
        with pytest.raises(OptimisticConcurrencyError):
            await append(db, es.NoStream(), make_event("acc-9"))
        await db.processor(ONE_OFF).run(Counting())
        await append(db, es.Any(), make_event("acc-9", event_type="Poison"))
        with pytest.raises(ProjectionError):
            await db.processor(ONE_OFF).run(Counting(fail_on="Poison"))

    appended = next(r for r in caplog.records if r.getMessage().startswith("appended events"))
    assert appended.levelno == logging.DEBUG
    assert appended.name == "pupsourcing_async.store"
    assert appended.__dict__["aggregate_id"] == "acc-9"
    assert appended.__dict__["positions"] == [1]
    assert "aggregate_id=acc-9" in appended.getMessage()
    conflict = next(r for r in caplog.records if "optimistic concurrency" in r.getMessage())
    assert conflict.levelno == logging.INFO
    lease = next(r for r in caplog.records if r.getMessage().startswith("lease taken"))
    assert lease.name == "pupsourcing_async.projection"
    released = [r for r in caplog.records if r.getMessage().startswith("lease released")]
    assert len(released) == 2  # after each of the two runs, the good one and the failed one
    assert appended.__dict__["pupsourcing_message"] == "appended events"
    assert appended.__dict__["pupsourcing_fields"]["aggregate_id"] == "acc-9"
    batch = next(r for r in caplog.records if r.getMessage().startswith("batch committed"))
    assert batch.levelno == logging.DEBUG
    failed = next(r for r in caplog.records if "handler failed" in r.getMessage())
    assert failed.levelno == logging.ERROR
    assert failed.__dict__["event_type"] == "Poison"
    # Nothing logs a payload.
    assert all("4111" not in record.getMessage() for record in caplog.records)


@dataclass
class ListLogger:
    """A structured logger of one's own, as StoreConfig(logger=...) takes."""

    records: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)

    def debug(self, msg: str, **fields: object) -> None:
        self.records.append(("debug", msg, fields))

    def info(self, msg: str, **fields: object) -> None:
        self.records.append(("info", msg, fields))

    def error(self, msg: str, **fields: object) -> None:
        self.records.append(("error", msg, fields))


async def test_a_logger_of_ones_own_receives_the_logs(observed: Any) -> None:
    store_logger, processor_logger = ListLogger(), ListLogger()
    db = await observed(logger=store_logger)
    await append(db, es.NoStream(), make_event())
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, logger=processor_logger)
    await db.processor(config).run(Counting())
    assert ("debug", "appended events") in [(level, msg) for level, msg, _ in store_logger.records]
    messages = [msg for _, msg, _ in processor_logger.records]
    assert "lease taken" in messages
    assert "batch committed" in messages
    assert isinstance(store_logger, pupsourcing_async.Logger)


# --- tracing -------------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


async def test_spans_wrap_appends_and_batches_and_fill_trace_ids(
    observed: Any, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    db = await observed(OpenTelemetryObserver(provider))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("http request") as request:
        result = await append(db, es.NoStream(), make_event(), make_event(trace_id="given"))
    trace_id = format(request.get_span_context().trace_id, "032x")
    assert [e.trace_id for e in result.events] == [trace_id, "given"]
    async with db.transaction() as tx:
        stored = await db.store.read_events(tx)
    assert [e.trace_id for e in stored] == [trace_id, "given"]

    [append_span] = _named(exporter, "pupsourcing.append")
    assert append_span.parent is not None
    assert append_span.parent.span_id == request.get_span_context().span_id
    attributes = dict(append_span.attributes or {})
    assert attributes["pupsourcing.aggregate_id"] == "acc-1"
    assert attributes["pupsourcing.events"] == 2
    assert attributes["pupsourcing.global_positions"] == (1, 2)
    assert attributes["db.system"] == db.dialect

    with pytest.raises(OptimisticConcurrencyError):
        await append(db, es.NoStream(), make_event())
    failed = _named(exporter, "pupsourcing.append")[-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in failed.events)

    await db.processor(ONE_OFF).run(Counting())
    batches = _named(exporter, "pupsourcing.projection.batch")
    assert batches
    busy = [b for b in batches if (b.attributes or {}).get("pupsourcing.events_read")]
    assert dict(busy[0].attributes or {})["pupsourcing.events_handled"] == 2
    assert dict(busy[0].attributes or {})["pupsourcing.projection"] == "counting"


# --- metrics -------------------------------------------------------------------------------


async def test_prometheus_metrics_for_appends_and_projections(observed: Any) -> None:
    registry = CollectorRegistry()
    db = await observed(PrometheusObserver(registry))
    await append(db, es.NoStream(), make_event(), make_event())
    await append(db, es.Any(), make_event(aggregate_type="Loan"))
    with pytest.raises(OptimisticConcurrencyError):
        await append(db, es.NoStream(), make_event())

    def value(name: str, **labels: str) -> float:
        found = registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    account = {"bounded_context": "Banking", "aggregate_type": "Account"}
    assert value("pupsourcing_appends_total", **account) == 1
    assert value("pupsourcing_events_appended_total", **account) == 2
    assert value("pupsourcing_append_conflicts_total", **account) == 1
    assert value("pupsourcing_append_duration_seconds_count", **account) == 2
    assert value("pupsourcing_appends_total", bounded_context="Banking", aggregate_type="Loan") == 1

    await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=2)).run(Counting())
    projection = {"projection": "counting", "partition": "0"}
    assert value("pupsourcing_projection_events_handled_total", **projection) == 3
    assert value("pupsourcing_projection_events_read_total", **projection) == 3
    assert value("pupsourcing_projection_batch_duration_seconds_count", **projection) >= 2
    assert value("pupsourcing_projection_lag_events", **projection) == 0
    assert value("pupsourcing_projection_lease_held", **projection) == 0

    await append(db, es.Any(), make_event(event_type="Poison"))
    with pytest.raises(ProjectionError):
        await db.processor(ONE_OFF).run(Counting(fail_on="Poison"))
    assert value("pupsourcing_projection_failures_total", **projection) == 1


async def test_lag_in_seconds_is_the_age_of_the_oldest_unprocessed_event(observed: Any) -> None:
    registry = CollectorRegistry()
    labels = {"projection": "counting", "partition": "0"}
    seen: list[float | None] = []

    class Recording(PrometheusObserver):
        @contextmanager
        def observe_batch(self, observation: BatchObservation) -> Iterator[None]:
            with super().observe_batch(observation):
                yield
            seen.append(registry.get_sample_value("pupsourcing_projection_lag_seconds", labels))

    db = await observed(Recording(registry))
    old = make_event(created_at=es.Event("B", "A", "x", "E", b"").created_at.replace(year=2020))
    await append(db, es.NoStream(), old)
    await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Counting())
    # The first batch began with a years-old event unprocessed; caught up, the lag is 0.
    assert seen[0] is not None
    assert seen[0] > 3600 * 24 * 365
    assert seen[-1] == 0


async def test_observers_see_a_retried_handler_failure_itself(observed: Any) -> None:
    class Blink(Exception):
        pass

    class BlinksOnce(Counting):
        retryable_errors = (Blink,)
        blinked = False

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            if not self.blinked:
                self.blinked = True
                raise Blink("the downstream service blinked")
            await super().handle(tx, event)

    errors: list[BaseException | None] = []
    retried: list[BaseException] = []

    class Recording(Observer):
        @contextmanager
        def observe_batch(self, observation: BatchObservation) -> Iterator[None]:
            try:
                yield
            finally:
                errors.append(observation.error)

        def retry(
            self, projection: str, checkpoint: str, error: BaseException, attempt: int
        ) -> None:
            retried.append(error)

    db = await observed(Recording())
    await append(db, es.NoStream(), make_event())
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, retry_initial_delay=0.001)
    await db.processor(config).run(BlinksOnce())
    assert isinstance(errors[0], Blink)
    assert errors[1:] == [None] * (len(errors) - 1)
    assert len(retried) == 1
    assert isinstance(retried[0], Blink)


class Broken(Observer):
    def prepare_events(self, events: Any) -> Any:
        raise RuntimeError("prepare broke")

    def observe_append(self, observation: AppendObservation) -> AbstractContextManager[None]:
        raise RuntimeError("observe broke")

    @contextmanager
    def observe_batch(self, observation: BatchObservation) -> Iterator[None]:
        yield
        raise RuntimeError("exit broke")


async def test_a_broken_observer_never_breaks_appends_or_batches(
    observed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    db = await observed(Broken(), PrometheusObserver(registry))
    with caplog.at_level(logging.ERROR, logger="pupsourcing_async.observe"):
        result = await append(db, es.NoStream(), make_event())
        counting = Counting()
        await db.processor(ONE_OFF).run(counting)
    assert result.to_version == 1
    assert counting.count == 1
    assert (
        registry.get_sample_value(
            "pupsourcing_appends_total", {"bounded_context": "Banking", "aggregate_type": "Account"}
        )
        == 1
    )
    assert {r.getMessage().split(" ")[0] for r in caplog.records} == {"observer"}


# --- health --------------------------------------------------------------------------------


async def test_health_reports_head_lag_leases_and_progress(observed: Any) -> None:
    db = await observed()
    for _ in range(3):
        await append(db, es.Any(), make_event())
    await db.processor(ONE_OFF).run(Counting())
    await append(db, es.Any(), make_event())
    report = await db.health()
    assert report.reachable
    assert report.ok
    assert report.head_position == 4
    [counting] = report.projections
    assert (counting.name, counting.position, counting.lag) == ("counting", 3, 1)
    assert counting.progressing  # moved just now
    expected_lease = None if db.dialect == "sqlite" else False
    assert counting.leased is expected_lease

    stale = await db.health(stale_after=0.0)
    assert not stale.projections[0].progressing
    assert not stale.ok

    running = asyncio.create_task(db.processor(ProcessorConfig(poll_interval=0.01)).run(Counting()))
    try:
        await db.wait_for(4, projections=["counting"], timeout=10)
        report = await db.health()
        assert report.projections[0].lag == 0
        assert report.projections[0].leased is (None if db.dialect == "sqlite" else True)
        data = report.as_dict()
        assert data["ok"] is True
        assert data["projections"][0]["name"] == "counting"
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running


@pytest.mark.parametrize("backend", ["postgres"])
async def test_health_of_a_database_that_does_not_answer(url: str) -> None:
    db = await pupsourcing_async.connect(url)
    await db.backend.pool.close()  # type: ignore[attr-defined]
    report = await db.health()
    assert not report.reachable
    assert not report.ok
    assert report.error
    assert report.head_position is None
    await db.close()


def test_the_integrations_load_only_when_imported() -> None:
    code = (
        "import sys, pupsourcing_async, pupsourcing_async.projection, pupsourcing_async.observe\n"
        "loaded = {'opentelemetry', 'prometheus_client'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- parked events ---------------------------------------------------------------------------


async def test_a_parked_event_is_counted_traced_and_logged(
    observed: Any,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, exporter = spans
    registry = CollectorRegistry()
    told: list[tuple[str, str, ParkedEvent]] = []

    class Told(Observer):
        def parked(self, projection: str, checkpoint: str, event: ParkedEvent) -> None:
            told.append((projection, checkpoint, event))

    db = await observed(PrometheusObserver(registry), OpenTelemetryObserver(provider), Told())
    await append(db, es.NoStream(), make_event(), make_event(event_type="Poison"))
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, on_failure=OnFailure.PARK, handler_attempts=2
    )
    with caplog.at_level(logging.INFO, logger="pupsourcing_async.projection"):
        await db.processor(config).run(Counting(fail_on="Poison"))

    [(projection, checkpoint, event)] = told
    assert (projection, checkpoint, event.global_position, event.attempts) == (
        "counting",
        "counting",
        2,
        2,
    )
    assert event.error == "RuntimeError: poisoned"
    labels = {"projection": "counting", "partition": "0"}
    assert registry.get_sample_value("pupsourcing_projection_events_parked_total", labels) == 1
    assert registry.get_sample_value("pupsourcing_projection_failures_total", labels) is None

    [span] = _named(exporter, "pupsourcing.projection.parked")
    assert span.status.status_code is StatusCode.ERROR
    attributes = dict(span.attributes or {})
    assert attributes["pupsourcing.global_position"] == 2
    assert attributes["pupsourcing.event_type"] == "Poison"
    assert attributes["pupsourcing.error"] == "RuntimeError: poisoned"
    # It belongs to the batch that parked the event.
    batch = next(
        b
        for b in _named(exporter, "pupsourcing.projection.batch")
        if b.context is not None
        and span.parent is not None
        and b.context.span_id == span.parent.span_id
    )
    assert dict(batch.attributes or {})["pupsourcing.to_position"] == 2

    replayed = [r for r in caplog.records if r.getMessage().startswith("handler failed; replay")]
    assert len(replayed) == 1
    [parked] = [r for r in caplog.records if r.getMessage().startswith("event parked")]
    assert parked.levelno == logging.ERROR
    assert parked.__dict__["global_position"] == 2
    assert parked.__dict__["attempts"] == 2
    assert parked.__dict__["event_id"] == str(event.event_id)
