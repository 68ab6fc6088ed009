"""Throughput against concurrent writers (W1): library, minimal baseline, eventsourcing.

Usage::

    python -m bench.chart [--db postgres|sqlite|mysql|all] [--writers 1,2,4,8,16]
                          [--events-each 200] [--rounds 3]
                          [--out docs/images/throughput-vs-writers.png] [--json FILE]
                          [--postgres-url URL] [--mysql-url URL] [--sqlite-path PATH]

For each database, W1 (single-event appends, each writer on its own aggregate) runs with
every writer count on the library, the minimal hand-written baseline and eventsourcing
(PostgreSQL and SQLite, when installed), alternating as in ``python -m bench``, on pools
as large as the largest count (eventsourcing: one thread per writer). It prints the
medians and the ratios and draws one panel per database with a line per side. Drawing
needs matplotlib (``pip install 'pupsourcing-async[bench]'``); without it the command only
runs with ``--json FILE`` (it measures, prints and saves).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import mysql, postgres
from .cli import DATABASES, open_database
from .common import FULL, Side, Sizes
from .runner import format_machine, run_workloads
from .sides import SIDE_SPECS
from .workloads import Round, Workload, build_w1

__all__ = ["draw", "main", "measure"]

#: ``{database name: {side: [(writers, median events/s), ...]}}``
Series = dict[str, dict[Side, list[tuple[int, float]]]]

#: The sides the chart compares, and how each is drawn.
CHART_SIDES: dict[Side, tuple[str, str]] = {
    "library": ("o-", "pupsourcing_async"),
    "minimal": ("s--", "minimal hand-written driver code"),
    "eventsourcing": ("^:", "eventsourcing (threads)"),
}


def _rows(writer_counts: Sequence[int], events_each: int) -> list[Workload]:
    """One W1 row per writer count; each builds its round with its own sizes."""
    many = build_w1(FULL)[1]  # the N-writer row; N comes from the sizes it is given

    def make(count: int) -> Callable[[Sizes, str, bool], Round]:
        sizes = replace(FULL, writers=count, w1_events_each=events_each)

        def make_round(_: Sizes, tag: str, exact: bool) -> Round:
            return many.make_round(sizes, tag, exact)

        return make_round

    return [
        Workload("W1", f"W1 single-event appends, {count} writers", True, make(count))
        for count in writer_counts
    ]


async def measure(args: argparse.Namespace, progress: Callable[[str], None]) -> Series:
    """Run the rows on every selected database; the medians per side and writer count."""
    sizes = replace(FULL, writers=max(args.writers))
    rows = _rows(args.writers, args.events_each)
    series: Series = {}
    for database in args.databases:
        prefix = f"psc_{secrets.token_hex(4)}_"
        async with open_database(database, args, sizes, prefix, list(CHART_SIDES)) as target:
            report = await run_workloads(target, rows, sizes, args.rounds, progress=progress)
            for note in target.notes:
                progress(f"{target.name}: note: {note}")
        series[report.name] = {}
        for side in CHART_SIDES:
            points = [
                (count, median)
                for count, result in zip(args.writers, report.results, strict=True)
                if (median := result.median(side)) is not None
            ]
            if points:
                series[report.name][side] = points
    return series


def draw(series: Series, out: Path, title: str) -> None:
    """Draw one panel per database; raises ``ModuleNotFoundError`` without matplotlib."""
    # Imported by name: matplotlib is optional (the bench extra), also for type checking.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4), squeeze=False)
    for axis, (name, sides) in zip(axes[0], series.items(), strict=True):
        for side, points in sides.items():
            style, label = CHART_SIDES[side]
            axis.plot(
                [writers for writers, _ in points], [rate for _, rate in points], style, label=label
            )
        axis.set_xscale("log", base=2)
        counts = sorted({writers for points in sides.values() for writers, _ in points})
        axis.set_xticks(counts, [str(c) for c in counts])
        axis.set_ylim(bottom=0)
        axis.set_title(name)
        axis.set_xlabel("concurrent writers")
        axis.set_ylabel("events/s (median)")
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def chart_table(sides: dict[Side, list[tuple[int, float]]], writers: Sequence[int]) -> list[str]:
    """One database's medians per writer count, and each side's ratio to the minimal one."""
    names = list(sides)
    others = [side for side in names if side != "minimal"] if "minimal" in sides else []
    header = "writers  " + "  ".join(f"{SIDE_SPECS[side].column:>13}" for side in names)
    header += "".join(f"  {SIDE_SPECS[side].short + '/min':>8}" for side in others)
    lines = [header]
    for count in writers:
        rates = {side: dict(points).get(count) for side, points in sides.items()}
        cells = "  ".join(_number(rates[side], ",.0f", 13) for side in names)
        minimal = rates.get("minimal")
        for side in others:
            rate = rates[side]
            ratio = None if rate is None or not minimal else rate / minimal
            cells += "  " + _number(ratio, ".2f", 8)
        lines.append(f"{count:>7}  {cells}")
    return lines


def _number(value: float | None, form: str, width: int) -> str:
    return ("-" if value is None else format(value, form)).rjust(width)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.chart", description="W1 throughput against concurrent writers."
    )
    parser.add_argument("--db", choices=(*DATABASES, "all"), default="all")
    parser.add_argument("--writers", default="1,2,4,8,16")
    parser.add_argument("--events-each", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="docs/images/throughput-vs-writers.png")
    parser.add_argument("--json", default=None, help="also save the medians to this file")
    parser.add_argument("--postgres-url", default=postgres.DEFAULT_URL)
    parser.add_argument("--mysql-url", default=mysql.DEFAULT_URL)
    parser.add_argument("--sqlite-path", default=None)
    args = parser.parse_args(argv)
    args.writers = sorted({int(w) for w in args.writers.split(",") if w.strip()})
    if not args.writers or min(args.writers) < 1:
        parser.error("--writers needs positive counts")
    if args.rounds < 3:
        parser.error("--rounds must be 3 or more")
    args.databases = list(DATABASES) if args.db == "all" else [args.db]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, save and draw; return the exit code."""
    args = parse_args(argv)
    drawing = importlib.util.find_spec("matplotlib") is not None
    if not drawing and not args.json:
        print(
            "matplotlib is not installed (pip install 'pupsourcing-async[bench]'); "
            "pass --json FILE to measure without drawing",
            file=sys.stderr,
        )
        return 2
    sizes = replace(FULL, writers=max(args.writers))
    print(format_machine(sizes, args.rounds, False), flush=True)
    series = asyncio.run(measure(args, lambda line: print(line, file=sys.stderr, flush=True)))
    for name, sides in series.items():
        print(
            f"\n{name}: W1 events/s (median of {args.rounds} rounds), {args.events_each} "
            "events per writer"
        )
        for line in chart_table(sides, args.writers):
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(series, indent=2))
    if drawing:
        draw(
            series,
            Path(args.out),
            "W1 single-event appends: throughput against concurrent writers",
        )
        print(f"\nchart: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
