"""Running the workloads on one database, and formatting what they measured.

Each workload runs on every side the target opened that runs it (see
:mod:`bench.sides`): an untimed warm-up of each, then timed rounds that alternate
between the sides in registry order (library, same-SQL, minimal, eventsourcing,
library, ...). Append workloads reset the side's tables before each timed round
(untimed), so every round starts from the same state, and count the rows after it. The
events/s of a round is its event count over the wall time of its run; the table shows
the median of each side and the ratios of :data:`bench.sides.RATIOS`. Nothing here
asserts on timings.
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

from .common import METADATA, Side, Sizes, Target, WorkloadResult, payload
from .latency import LatencyResult, format_latency
from .sides import RATIOS, SIDE_SPECS, runs
from .workloads import RoundFn, Workload

__all__ = ["DatabaseReport", "format_machine", "format_report", "run_workloads"]


@dataclass
class DatabaseReport:
    """What one database's run measured.

    Attributes:
        name: The database (``PostgreSQL``, ``SQLite``, ``MariaDB``).
        facts: Lines about the server and its settings.
        notes: Lines about sides that did not run here, and why.
        results: One entry per table row, in the order they ran.
        latencies: One entry per latency row (W6), in the order they ran.
        sizes: The sizes the rows ran with.
    """

    name: str
    facts: list[str]
    notes: list[str]
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
    """Warm up and time every workload on ``target``, its sides alternating.

    Args:
        target: The opened database.
        workloads: The table rows to run, in order.
        sizes: How much work each round does.
        rounds: Timed rounds per side.
        exact: Append with ``Exact(version)`` instead of ``Any()``.
        progress: Called with a line of text as each workload starts.

    Returns:
        The measurements, with the database's facts and notes.

    Raises:
        RuntimeError: a round appended or read a different number of events than it should.
    """
    results: list[WorkloadResult] = []
    for workload in workloads:
        sides = [side for side in target.sides if runs(side, workload.key)]
        if not sides:
            continue
        progress(f"{target.name}: {workload.label} ...")
        if workload.prepare is not None:
            await workload.prepare(target, sizes)
        _, run = workload.make_round(sizes.warmup(), "warm", exact)
        for side in sides:
            await timed_round(target, workload, side, run)
        result = WorkloadResult(workload.label)
        for number in range(rounds):
            count, run = workload.make_round(sizes, f"r{number}", exact)
            result.events_per_round = count
            for side in sides:
                elapsed = await timed_round(target, workload, side, run)
                if workload.appends and await target.count(side) != count:
                    raise RuntimeError(f"{workload.label}: {side} round {number} lost events")
                result.rates.setdefault(side, []).append(count / elapsed)
        results.append(result)
    return DatabaseReport(target.name, target.facts, target.notes, results, sizes=sizes)


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
        for name in (
            "pupsourcing-async",
            "asyncpg",
            "aiosqlite",
            "aiomysql",
            "PyMySQL",
            "eventsourcing",
            "psycopg",
            "psycopg-pool",
        )
    )
    return "\n".join(
        [
            f"machine: {platform.machine()}, {cpus} CPUs (usable by this process: {usable}), "
            f"{platform.system()} {platform.release()}",
            f"Python {platform.python_version()} ({sys.implementation.name}); {drivers}; "
            f"SQLite library {sqlite3.sqlite_version}",
            f"pool size {sizes.writers} per side (SQLite: {sizes.writers} connections per side); "
            f"{rounds} timed rounds per side, alternating between the sides in the order "
            f"{', '.join(spec.column for spec in SIDE_SPECS.values())} after a warm-up",
            f"library and same-SQL append with {'Exact(n)' if exact else 'Any()'}; the "
            "minimal and eventsourcing writers own their aggregates and give each version; "
            f"eventsourcing is synchronous: each writer and reader runs in a thread of its "
            f"own ({sizes.writers} threads in the {sizes.writers}-writer row); payload "
            f"{len(payload(0))} B JSON, metadata {len(METADATA)} B JSON, a correlation id",
        ]
    )


def _cell(value: float | None, form: str) -> str:
    return "-" if value is None else format(value, form)


def table(results: Sequence[WorkloadResult]) -> list[str]:
    """The throughput table's lines: a column per side that ran, then the ratios."""
    ran = {side for r in results for side in r.rates}
    sides = [side for side in SIDE_SPECS if side in ran]
    ratios = [(top, bottom) for top, bottom in RATIOS if top in ran and bottom in ran]
    header = (
        "workload",
        "events/round",
        *(f"{SIDE_SPECS[side].column} ev/s" for side in sides),
        *(f"{SIDE_SPECS[top].short}/{SIDE_SPECS[bottom].short}" for top, bottom in ratios),
    )
    rows = [
        (
            r.label,
            f"{r.events_per_round:,}",
            *(_cell(r.median(side), ",.0f") for side in sides),
            *(_cell(r.ratio(top, bottom), ".2f") for top, bottom in ratios),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return [line(header), "  ".join("-" * width for width in widths), *map(line, rows)]


def format_report(report: DatabaseReport) -> str:
    """One database's table, its facts above it and the per-round numbers below it."""
    lines = [f"== {report.name} ==", *report.facts, *(f"note: {n}" for n in report.notes), ""]
    results = report.results
    if results:
        lines.extend(table(results))
        ran = {side for r in results for side in r.rates}
        lines.append("")
        lines.extend(
            f"{spec.column} ({spec.short}): {spec.summary}"
            for side, spec in SIDE_SPECS.items()
            if side in ran
        )
        lines.append("")
        lines.append("the medians are of these rounds (events/s of each round, in order):")
        for r in results:
            lines.append(f"  {r.label}")
            for side, rates in r.rates.items():
                numbers = " ".join(f"{rate:,.0f}" for rate in rates)
                lines.append(f"    {SIDE_SPECS[side].column:<13}  {numbers}")
    if report.latencies:
        if results:
            lines.append("")
        lines.extend(format_latency(report.latencies, report.sizes))
    return "\n".join(lines)
