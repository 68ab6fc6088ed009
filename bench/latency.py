"""W6: how long after an append commits a running consumer has handled the event.

A round starts a consumer on the side's emptied tables (:meth:`FollowingSide.follow`: the
library's ``CONTINUOUS`` processor with default settings, or the hand-written sides'
polling loops),
appends one event and waits until it is handled (so the consumer is up), then appends
``Sizes.w6_events`` single events, one per transaction, at ``Sizes.w6_rate`` per second.

An event's latency is the ``perf_counter()`` reading when the handler was called minus
the reading just *before* its append began: the moment of the commit is not observable
from outside, and the moment the append returns comes too late (asyncpg's pool resets
a connection with a round trip when it is released, and a consumer in the same process
often handles the event meanwhile). So the figure includes the append's own duration
(one durable commit), also reported; it is an upper bound of commit-to-handled.

The writer runs either in this process, through the side's own append path, or in a
process of its own (:mod:`bench.writer`: through the library on the library's and the
same-SQL side's tables, through the minimal side's own code on its table), which is what
PostgreSQL's LISTEN/NOTIFY is for: within one process the
library's processor is woken by the commit itself. ``perf_counter`` reads
``CLOCK_MONOTONIC`` on Linux, one clock for every process, so the two processes' readings
subtract.

Every side that runs W6 (:mod:`bench.sides`) alternates per round, as elsewhere. The
table shows percentiles over the events of all timed rounds of a side.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from .common import RAW_POLL_INTERVAL, FollowingSide, Side, Sizes, Target, make_events
from .sides import SIDE_SPECS, runs
from .workloads import LatencyWorkload

__all__ = ["LatencyResult", "WriterProcess", "format_latency", "run_latency"]

# The directory that holds the bench package, where the writer process starts.
_ROOT = Path(__file__).resolve().parent.parent

#: Each appended aggregate id with ``perf_counter()`` before its append began and after it
#: returned.
Appends: TypeAlias = dict[str, tuple[float, float]]

#: Seconds a round waits for its events to be handled before it fails.
HANDLED_TIMEOUT = 30.0


@dataclass
class LatencyResult:
    """The measurements of one latency row.

    Attributes:
        label: The row's name.
        events_per_round: Events appended in one timed round.
        samples: Each side's latencies in seconds, all timed rounds together.
        appends: Each side's append durations in seconds, all timed rounds together.
        round_medians: Each side's median latency of every round, in order.
    """

    label: str
    events_per_round: int = 0
    samples: dict[Side, list[float]] = field(default_factory=dict)
    appends: dict[Side, list[float]] = field(default_factory=dict)
    round_medians: dict[Side, list[float]] = field(default_factory=dict)

    def percentile(self, side: Side, percent: int) -> float:
        """The ``percent``-th percentile of ``side``'s latencies, in seconds."""
        data = self.samples[side]
        if percent == 50:
            return statistics.median(data)
        return statistics.quantiles(data, n=100, method="inclusive")[percent - 1]


class WriterProcess:
    """A running :mod:`bench.writer`; see there for its commands.

    Args:
        process: The child process, with pipes on its standard input and output.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    @classmethod
    @asynccontextmanager
    async def start(
        cls, url: str, prefix: str, sides: Sequence[Side]
    ) -> AsyncIterator[WriterProcess]:
        """Start the writer on ``url`` for ``sides`` on ``prefix``'s tables; stop it when the
        block ends."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.writer",
            url,
            prefix,
            ",".join(sides),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
        )
        writer = cls(process)
        try:
            await writer._expect("ready")
            yield writer
        finally:
            await writer._stop()

    async def _line(self) -> str:
        assert self._process.stdout is not None
        async with asyncio.timeout(HANDLED_TIMEOUT):
            line = await self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the writer process exited (code {await self._process.wait()})")
        return line.decode().strip()

    async def _expect(self, word: str) -> None:
        line = await self._line()
        if line != word:
            raise RuntimeError(f"the writer process said {line!r}, expected {word!r}")

    async def append(self, side: Side, tag: str, count: int, rate: float) -> Appends:
        """Have the writer append ``count`` events at ``rate``; when each began and returned."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"append {side} {tag} {count} {rate}\n".encode())
        await self._process.stdin.drain()
        committed: Appends = {}
        while (line := await self._line()) != "done":
            aggregate_id, began, ended = line.split()
            committed[aggregate_id] = (float(began), float(ended))
        return committed

    async def _stop(self) -> None:
        process = self._process
        if process.returncode is None and process.stdin is not None:
            try:
                process.stdin.write(b"quit\n")
                await process.stdin.drain()
                async with asyncio.timeout(10):
                    await process.wait()
            except (TimeoutError, ConnectionError):
                pass
        if process.returncode is None:
            process.kill()
            await process.wait()


def _follower(target: Target, side: Side) -> FollowingSide:
    found = target.sides[side]
    if not isinstance(found, FollowingSide):
        raise RuntimeError(f"the {side} side runs W6 but has no follow()")
    return found


async def _append_here(target: Target, side: Side, tag: str, count: int, rate: float) -> Appends:
    """Append from this process through ``side``'s own code; when each began and returned."""
    store_side = target.sides[side]
    committed: Appends = {}
    first = time.perf_counter()
    for index in range(count):
        delay = first + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        aggregate_id = f"w6-{tag}-{index}"
        events = make_events(aggregate_id, 1)
        began = time.perf_counter()
        await store_side.append_singles(events, exact=False)
        committed[aggregate_id] = (began, time.perf_counter())
    return committed


class _Handled:
    """The consumer's ``seen`` callback: when each aggregate's event was first handled."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self._news = asyncio.Event()

    def __call__(self, aggregate_id: str) -> None:
        if aggregate_id not in self.at:
            self.at[aggregate_id] = time.perf_counter()
            self._news.set()

    async def wait_for(self, aggregate_ids: Collection[str]) -> None:
        """Wait until every one of ``aggregate_ids`` was handled."""
        async with asyncio.timeout(HANDLED_TIMEOUT):
            while any(aggregate_id not in self.at for aggregate_id in aggregate_ids):
                self._news.clear()
                await self._news.wait()


async def _round(
    target: Target,
    side: Side,
    tag: str,
    count: int,
    rate: float,
    writer: WriterProcess | None,
) -> tuple[list[float], list[float]]:
    """One side's round; each event's latency and its append's duration, in seconds."""
    await target.reset(side)
    gc.collect()
    handled = _Handled()
    async with asyncio.TaskGroup() as group:
        consumer = group.create_task(_follower(target, side).follow(f"w6_{tag}", handled))
        try:
            await target.sides[side].append_singles(make_events(f"w6-{tag}-up", 1), exact=False)
            await handled.wait_for([f"w6-{tag}-up"])
            if writer is None:
                committed = await _append_here(target, side, tag, count, rate)
            else:
                committed = await writer.append(side, tag, count, rate)
            await handled.wait_for(committed)
        finally:
            consumer.cancel()
    latencies = [handled.at[key] - began for key, (began, _) in committed.items()]
    return latencies, [ended - began for began, ended in committed.values()]


async def run_latency(
    target: Target,
    workloads: Sequence[LatencyWorkload],
    sizes: Sizes,
    rounds: int,
    prefix: str,
    *,
    progress: Callable[[str], None] = lambda _: None,
) -> list[LatencyResult]:
    """Warm up and time every latency row on ``target``, its W6 sides alternating.

    Args:
        target: The opened database.
        workloads: The latency rows to run.
        sizes: ``w6_events`` and ``w6_rate``.
        rounds: Timed rounds per side.
        prefix: The run's table prefix, for the writer process.
        progress: Called with a line of text as each row starts.
    """
    results: list[LatencyResult] = []
    sides = [side for side in target.sides if runs(side, "W6")]
    if not sides:
        return results
    for row, workload in enumerate(workloads):
        progress(f"{target.name}: {workload.label} ...")
        async with _writer(target, prefix, workload.cross_process, sides) as writer:
            # Checkpoint names (and aggregate ids) are new in every round of every row.
            warm = sizes.warmup()
            for side in sides if sizes.w6_warmup else ():
                await _round(target, side, f"{row}w", warm.w6_events, warm.w6_rate, writer)
            result = LatencyResult(workload.label, sizes.w6_events)
            for number in range(rounds):
                for side in sides:
                    samples, appends = await _round(
                        target, side, f"{row}r{number}", sizes.w6_events, sizes.w6_rate, writer
                    )
                    result.samples.setdefault(side, []).extend(samples)
                    result.appends.setdefault(side, []).extend(appends)
                    result.round_medians.setdefault(side, []).append(statistics.median(samples))
        results.append(result)
    return results


@asynccontextmanager
async def _writer(
    target: Target, prefix: str, wanted: bool, sides: Sequence[Side]
) -> AsyncIterator[WriterProcess | None]:
    if not wanted:
        yield None
        return
    async with WriterProcess.start(target.url, prefix, sides) as writer:
        yield writer


def format_latency(results: Sequence[LatencyResult], sizes: Sizes) -> list[str]:
    """The latency table's lines (milliseconds), with each round's medians below it."""
    ran = {side for r in results for side in r.samples}
    sides = [side for side in SIDE_SPECS if side in ran]
    header = (
        "workload",
        "events/round",
        *(cell for side in sides for cell in (f"{SIDE_SPECS[side].column} p50", "p99", "(append)")),
    )

    def cells(r: LatencyResult, side: Side) -> tuple[str, str, str]:
        if side not in r.samples:
            return ("-", "-", "-")
        return (
            f"{r.percentile(side, 50) * 1000:.1f} ms",
            f"{r.percentile(side, 99) * 1000:.1f} ms",
            f"{statistics.median(r.appends[side]) * 1000:.1f} ms",
        )

    rows = [
        (r.label, f"{r.events_per_round:,}", *(c for side in sides for c in cells(r, side)))
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    lines = [
        f"W6: single-event appends at {sizes.w6_rate:g}/s; latency = handler called - append "
        "began (so it includes the append itself: its median is in brackets);",
        "library: CONTINUOUS processor, default ProcessorConfig; same-SQL and minimal: a "
        f"polling loop that sleeps {RAW_POLL_INTERVAL * 1000:g} ms when a read finds nothing",
        line(header),
        "  ".join("-" * width for width in widths),
        *(line(row) for row in rows),
        "",
        "median latency of each round, ms, in order:",
    ]
    for r in results:
        lines.append(f"  {r.label}")
        for side, medians in r.round_medians.items():
            numbers = " ".join(f"{m * 1000:.1f}" for m in medians)
            lines.append(f"    {SIDE_SPECS[side].column:<13}  {numbers}")
    return lines
