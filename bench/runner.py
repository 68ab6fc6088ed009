"""Running the workloads on one database, and formatting what they measured.

Rounds alternate library and raw (L, R, L, R, ...) after an untimed warm-up of each
side. Append workloads reset the side's tables before each timed round (untimed), so
every round starts from the same state, and count the rows after it. The events/s of a
round is its event count over the wall time of its run; the table shows the median of
each side and ``ratio = median library / median raw``. Nothing here asserts on timings.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from .common import METADATA, SIDES, Side, Sizes, Target, WorkloadResult, payload
from .latency import LatencyResult, format_latency
from .workloads import RoundFn, Workload

__all__ = ["DatabaseReport", "format_machine", "format_report", "run_workloads"]


@dataclass
class DatabaseReport:
    """What one database's run measured.

    Attributes:
        name: The database (``PostgreSQL``, ``SQLite``, ``MariaDB``).
        facts: Lines about the server and its settings.
        results: One entry per table row, in the order they ran.
        latencies: One entry per latency row (W6), in the order they ran.
        sizes: The sizes the rows ran with.
    """

    name: str
    facts: list[str]
    results: list[WorkloadResult]
    latencies: list[LatencyResult] = field(default_factory=list)
    sizes: Sizes = field(default_factory=Sizes)


async def timed_round(target: Target, workload: Workload, side: Side, run: RoundFn) -> float:
    """Run one side of one round; return its duration in seconds (resets untimed)."""
    if workload.appends:
        await target.reset(side)
    gc.collect()
    started = time.perf_counter()
    await run(target.sides[side])
    return time.perf_counter() - started


async def run_workloads(
    target: Target,
    workloads: Sequence[Workload],
    sizes: Sizes,
    rounds: int,
    *,
    exact: bool = False,
    progress: Callable[[str], None] = lambda _: None,
) -> DatabaseReport:
    """Warm up and time every workload on ``target``, both sides alternating.

    Args:
        target: The opened database.
        workloads: The table rows to run, in order.
        sizes: How much work each round does.
        rounds: Timed rounds per side.
        exact: Append with ``Exact(version)`` instead of ``Any()``.
        progress: Called with a line of text as each workload starts.

    Returns:
        The measurements, with the database's facts.

    Raises:
        RuntimeError: a round appended or read a different number of events than it should.
    """
    results: list[WorkloadResult] = []
    for workload in workloads:
        progress(f"{target.name}: {workload.label} ...")
        if workload.prepare is not None:
            await workload.prepare(target, sizes)
        _, run = workload.make_round(sizes.warmup(), "warm", exact)
        for side in SIDES:
            await timed_round(target, workload, side, run)
        result = WorkloadResult(workload.label)
        for number in range(rounds):
            count, run = workload.make_round(sizes, f"r{number}", exact)
            result.events_per_round = count
            for side in SIDES:
                elapsed = await timed_round(target, workload, side, run)
                if workload.appends and await target.count(side) != count:
                    raise RuntimeError(f"{workload.label}: {side} round {number} lost events")
                result.rates[side].append(count / elapsed)
        results.append(result)
    return DatabaseReport(target.name, target.facts, results, sizes=sizes)


# --------------------------------------------------------------------------------------
# Output


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def format_machine(sizes: Sizes, rounds: int, exact: bool) -> str:
    """The machine, the drivers and the run's settings, as a few lines."""
    import sqlite3

    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = cpus or 0
    drivers = ", ".join(
        f"{name} {_version(name)}"
        for name in ("pupsourcing-async", "asyncpg", "aiosqlite", "aiomysql", "PyMySQL")
    )
    return "\n".join(
        [
            f"machine: {platform.machine()}, {cpus} CPUs (usable by this process: {usable}), "
            f"{platform.system()} {platform.release()}",
            f"Python {platform.python_version()} ({sys.implementation.name}); {drivers}; "
            f"SQLite library {sqlite3.sqlite_version}",
            f"pool size {sizes.writers} per side (SQLite: {sizes.writers} connections per side); "
            f"{rounds} timed rounds per side, alternating library/raw after a warm-up; "
            f"expected version {'Exact(n)' if exact else 'Any()'}; payload "
            f"{len(payload(0))} B JSON, metadata {len(METADATA)} B JSON, a correlation id",
        ]
    )


def format_report(report: DatabaseReport) -> str:
    """One database's table, its facts above it and the per-round numbers below it."""
    lines = [f"== {report.name} ==", *report.facts, ""]
    header = ("workload", "events/round", "library ev/s", "raw ev/s", "ratio lib/raw")
    rows = [
        (
            r.label,
            f"{r.events_per_round:,}",
            f"{r.median('library'):,.0f}",
            f"{r.median('raw'):,.0f}",
            f"{r.ratio:.2f}",
        )
        for r in report.results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    if rows:
        lines.append(line(header))
        lines.append("  ".join("-" * width for width in widths))
        lines.extend(line(row) for row in rows)
        lines.extend(_catch_up_against_read(report.results))
        lines.append("")
        lines.append("the medians are of these rounds (events/s of each round, in order):")
        for r in report.results:
            lines.append(f"  {r.label}")
            for side in SIDES:
                rates = " ".join(f"{rate:,.0f}" for rate in r.rates[side])
                lines.append(f"    {side:<7}  {rates}")
    if report.latencies:
        if rows:
            lines.append("")
        lines.extend(format_latency(report.latencies, report.sizes))
    return "\n".join(lines)


def _catch_up_against_read(results: Sequence[WorkloadResult]) -> list[str]:
    """W4's no-op catch-up against W3's raw read of a log of the same size, if both ran."""
    reads = [r for r in results if r.label.startswith("W3 ")]
    no_ops = [r for r in results if r.label.startswith("W4 ") and "no-op" in r.label]
    if not reads or not no_ops or reads[0].events_per_round != no_ops[0].events_per_round:
        return []
    raw_read = reads[0].median("raw")
    lines = ["", f"W4 no-op library catch-up against W3's raw read ({raw_read:,.0f} ev/s):"]
    for r in no_ops:
        lines.append(f"  {r.label}: {r.median('library') / raw_read:.2f}")
    return lines
