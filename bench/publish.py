"""PUBLISH: the JetStream publisher end to end, against a raw nats-py loop.

Throughput: the library side's log holds ``events`` events (loaded once, untimed). A
library round runs :class:`pupsourcing_async.nats.Publisher` under a ``ONE_OFF``
processor from position 0 into a new stream: read each batch from the database, publish
it with pipelined acknowledgements, commit the checkpoint. A raw round publishes the very
same messages (subject, headers and body, built once, untimed) into a new stream with
nats-py's ``publish_async``, awaiting each batch's acknowledgements before the next, as
the library must; it reads no database. Rounds alternate after an untimed warm-up; the
table shows the median events/s of each side and their ratio.

Latency: a ``CONTINUOUS`` publisher runs (default ProcessorConfig, batch size as above)
and a reader is subscribed with :func:`pupsourcing_async.nats.subscribe`; single-event
appends at ``rate`` per second, in this process. An event's latency is the
``perf_counter()`` reading when the reader received it minus the reading before its
append began (so it includes the append's own commit).

Every stream is deleted at the end, also on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

from . import common
from .common import Sizes, Target, cleanup, make_events

__all__ = ["DEFAULT_NATS_URL", "FULL", "QUICK", "PublishSizes", "compare", "run_publish"]

#: Where PUBLISH finds NATS unless ``PUPSOURCING_NATS_URL`` says otherwise.
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class PublishSizes:
    """How much work PUBLISH does.

    Attributes:
        events: Events in the log each throughput round publishes.
        batch_size: Events per batch, on both sides.
        latency_events: Single-event appends per latency round.
        latency_rate: Appends per second in a latency round.
        latency_rounds: Latency rounds (after an untimed warm-up of a few events).
    """

    events: int = 20_000
    batch_size: int = 500
    latency_events: int = 300
    latency_rate: float = 100.0
    latency_rounds: int = 2


FULL = PublishSizes()
QUICK = PublishSizes(
    events=500, batch_size=100, latency_events=10, latency_rate=200.0, latency_rounds=1
)


@dataclass
class PublishResult:
    """What PUBLISH measured on one database."""

    sizes: PublishSizes
    rates: dict[str, list[float]] = field(default_factory=lambda: {"library": [], "raw": []})
    latencies: list[float] = field(default_factory=list)

    def median(self, side: str) -> float:
        return statistics.median(self.rates[side])

    def percentile(self, percent: int) -> float:
        if percent == 50:
            return statistics.median(self.latencies)
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[percent - 1]


async def compare(
    target: Target, sizes: Sizes, rounds: int, progress: Callable[[str], None]
) -> str:
    """PUBLISH as a registry comparison: NATS from ``$PUPSOURCING_NATS_URL``, the quick
    sizes under ``--quick``."""
    return await run_publish(
        target,
        nats_url=os.environ.get("PUPSOURCING_NATS_URL", DEFAULT_NATS_URL),
        quick=sizes == common.QUICK,
        rounds=rounds,
        progress=progress,
    )


async def run_publish(
    target: Target,
    *,
    nats_url: str,
    quick: bool,
    rounds: int,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """Run PUBLISH on ``target``; its section of the report.

    Raises:
        pupsourcing_async.nats.NatsUnavailableError: NATS does not answer at ``nats_url``.
    """
    from pupsourcing_async import nats as pnats

    sizes = QUICK if quick else FULL
    tag = f"psb{secrets.token_hex(4)}"
    client = await pnats.connect(nats_url, timeout=10)
    streams: list[str] = []
    try:
        async with pupsourcing_async.connect(
            target.url, store_config=target.configs["library"], max_size=4
        ) as db:
            progress(f"{target.name}: PUBLISH loading {sizes.events:,} events ...")
            await target.reset("library")
            await _load(target, sizes.events)
            messages = await _messages(db, pnats)
            result = PublishResult(sizes)
            progress(f"{target.name}: PUBLISH throughput ...")
            for number in range(rounds + 1):
                for side in ("library", "raw"):
                    stream = f"{tag.upper()}{side[0].upper()}{number}"
                    streams.append(stream)
                    runner = _library_round if side == "library" else _raw_round
                    elapsed = await runner(
                        db, client, stream, f"{tag}{side[0]}{number}", sizes, messages
                    )
                    if number:  # the first round of each side warms up
                        result.rates[side].append(len(messages) / elapsed)
            progress(f"{target.name}: PUBLISH latency ...")
            await target.reset("library")
            stream = f"{tag.upper()}LAT"
            streams.append(stream)
            result.latencies = await _latency(db, client, stream, f"{tag}lat", sizes)
    finally:
        for stream in streams:
            await cleanup(_delete(client, stream), f"stream {stream}")
        await client.close()
    return format_publish(target.name, result)


async def _delete(client: Any, stream: str) -> None:
    import nats.js.errors

    with contextlib.suppress(nats.js.errors.NotFoundError):
        await client.jetstream().delete_stream(stream)


async def _load(target: Target, count: int) -> None:
    for first in range(0, count, 100):
        batch = make_events(f"pub-{first // 100}", min(100, count - first), first)
        await target.sides["library"].append_batches([batch], exact=False)


async def _messages(db: Database, pnats: Any) -> list[tuple[str, dict[str, str], bytes]]:
    """The messages the library sends for the log (subject after its prefix, headers with
    the order header, body): what the raw side sends too."""
    from pupsourcing_async.nats._envelope import default_subject

    subject = default_subject("x")
    events: list[es.PersistedEvent] = []
    position = 0
    while True:
        async with db.transaction() as tx:
            page = await db.store.read_events(tx, position, 1000)
        if not page:
            break
        events += page
        position = page[-1].global_position
    messages = []
    previous: str | None = None
    for event in events:
        headers = pnats.event_headers(event)
        if previous is not None:
            headers["Nats-Expected-Last-Msg-Id"] = previous
        previous = headers["Nats-Msg-Id"]
        messages.append((subject(event).removeprefix("x."), headers, event.payload))
    return messages


async def _library_round(
    db: Database,
    client: Any,
    stream: str,
    prefix: str,
    sizes: PublishSizes,
    messages: Sequence[tuple[str, dict[str, str], bytes]],
) -> float:
    from pupsourcing_async import nats as pnats

    async with pnats.Publisher(client, stream, name=prefix, subject_prefix=prefix) as publisher:
        config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=sizes.batch_size)
        gc.collect()
        started = time.perf_counter()
        await db.processor(config).run(publisher)
        elapsed = time.perf_counter() - started
    if publisher.published != len(messages):
        raise RuntimeError(f"the publisher stored {publisher.published} of {len(messages)}")
    return elapsed


async def _raw_round(
    db: Database,
    client: Any,
    stream: str,
    prefix: str,
    sizes: PublishSizes,
    messages: Sequence[tuple[str, dict[str, str], bytes]],
) -> float:
    from nats.js import api

    js = client.jetstream(publish_async_max_pending=sizes.batch_size * 2)
    await js.add_stream(
        api.StreamConfig(name=stream, subjects=[f"{prefix}.>"], duplicate_window=120)
    )
    ready = [
        (f"{prefix}.{subject}", dict(headers), payload) for subject, headers, payload in messages
    ]
    gc.collect()
    started = time.perf_counter()
    for first in range(0, len(ready), sizes.batch_size):
        futures = [
            await js.publish_async(subject, payload, headers=headers)
            for subject, headers, payload in ready[first : first + sizes.batch_size]
        ]
        await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await js.delete_stream(stream)
    return elapsed


async def _latency(
    db: Database, client: Any, stream: str, prefix: str, sizes: PublishSizes
) -> list[float]:
    from pupsourcing_async import nats as pnats

    began: dict[str, float] = {}
    received = _Received()
    latencies: list[float] = []
    async with pnats.Publisher(client, stream, name=prefix, subject_prefix=prefix) as publisher:
        config = ProcessorConfig(batch_size=sizes.batch_size)
        async with asyncio.TaskGroup() as group:
            running = group.create_task(db.processor(config).run(publisher))
            reading = group.create_task(_read(client, stream, received))
            try:
                for number in range(sizes.latency_rounds + 1):
                    count = 5 if number == 0 else sizes.latency_events
                    ids = await _append_paced(db, f"{prefix}-{number}", count, sizes, began)
                    await received.wait_for(ids)
                    if number:
                        latencies += [received.at[key] - began[key] for key in ids]
            finally:
                running.cancel()
                reading.cancel()
    return latencies


class _Received:
    """When the reader got each aggregate's event."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._news = asyncio.Event()

    def note(self, key: str) -> None:
        self.at[key] = time.perf_counter()
        self._news.set()

    async def wait_for(self, keys: Sequence[str]) -> None:
        async with asyncio.timeout(60):
            while any(key not in self.at for key in keys):
                self._news.clear()
                await self._news.wait()


async def _read(client: Any, stream: str, received: _Received) -> None:
    from pupsourcing_async import nats as pnats

    async with pnats.subscribe(client, stream, "bench-latency", idle_wait=1.0) as events:
        async for event in events:
            received.note(event.aggregate_id)


async def _append_paced(
    db: Database, prefix: str, count: int, sizes: PublishSizes, began: dict[str, float]
) -> list[str]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    ids = []
    for index in range(count):
        # Paced by the clock, not by the appends: a slow one is not made up for later.
        await asyncio.sleep(max(start + index / sizes.latency_rate - loop.time(), 0))
        aggregate = f"{prefix}-{index}"
        (event,) = make_events(aggregate, 1)
        began[aggregate] = time.perf_counter()
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [event])
        ids.append(aggregate)
    return ids


def format_publish(name: str, result: PublishResult) -> str:
    """The PUBLISH section of a database's report."""
    sizes = result.sizes
    library, raw = result.median("library"), result.median("raw")
    lines = [
        f"PUBLISH on {name}: {sizes.events:,} events into a JetStream stream, batches of "
        f"{sizes.batch_size}, acknowledgements awaited per batch",
        f"  library (Publisher, from the database, checkpoint per batch): {library:,.0f} ev/s",
        f"  raw nats-py publish_async loop (the same messages, no database): {raw:,.0f} ev/s",
        f"  ratio library/raw: {library / raw:.2f}",
        "  rounds, ev/s: library "
        + " ".join(f"{r:,.0f}" for r in result.rates["library"])
        + "; raw "
        + " ".join(f"{r:,.0f}" for r in result.rates["raw"]),
        f"  append -> reader received (CONTINUOUS publisher, subscribe(); {len(result.latencies)} "
        f"appends at {sizes.latency_rate:g}/s, writer in this process): "
        f"p50 {result.percentile(50) * 1000:.1f} ms, p99 {result.percentile(99) * 1000:.1f} ms",
    ]
    return "\n".join(lines)
