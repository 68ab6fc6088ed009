"""Throughput against concurrent writers (W1), library and raw, drawn as a PNG.

Usage::

    python -m bench.chart [--db postgres|sqlite|mysql|all] [--writers 1,2,4,8,16]
                          [--events-each 200] [--rounds 3]
                          [--out docs/images/throughput-vs-writers.png] [--json FILE]
                          [--postgres-url URL] [--mysql-url URL] [--sqlite-path PATH]

For each database, W1 (single-event appends, each writer on its own aggregate) runs with
every writer count, library and raw alternating as in ``python -m bench``, on pools as
large as the largest count. It prints the medians and draws one panel per database with
a line per side. Drawing needs matplotlib (``pip install 'pupsourcing-async[bench]'``);
without it the command only runs with ``--json FILE`` (it measures, prints and saves).
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
from .common import FULL, SIDES, Side, Sizes
from .runner import format_machine, run_workloads
from .workloads import Round, Workload, build_w1

__all__ = ["draw", "main", "measure"]

#: ``{database name: {side: [(writers, median events/s), ...]}}``
Series = dict[str, dict[Side, list[tuple[int, float]]]]


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
        async with open_database(database, args, sizes, prefix) as target:
            report = await run_workloads(target, rows, sizes, args.rounds, progress=progress)
        series[report.name] = {
            side: [
                (count, result.median(side))
                for count, result in zip(args.writers, report.results, strict=True)
            ]
            for side in SIDES
        }
    return series


def draw(series: Series, out: Path, title: str) -> None:
    """Draw one panel per database; raises ``ModuleNotFoundError`` without matplotlib."""
    # Imported by name: matplotlib is optional (the bench extra), also for type checking.
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4), squeeze=False)
    for axis, (name, sides) in zip(axes[0], series.items(), strict=True):
        for side, style in zip(SIDES, ("o-", "s--"), strict=True):
            points = sides[side]
            axis.plot(
                [writers for writers, _ in points],
                [rate for _, rate in points],
                style,
                label="pupsourcing_async" if side == "library" else "raw driver",
            )
        axis.set_xscale("log", base=2)
        counts = [writers for writers, _ in sides["library"]]
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
        print("writers  " + "  ".join(f"{side:>10}" for side in SIDES) + "  ratio")
        for index, count in enumerate(args.writers):
            rates = [sides[side][index][1] for side in SIDES]
            cells = "  ".join(f"{rate:>10,.0f}" for rate in rates)
            print(f"{count:>7}  {cells}  {rates[0] / rates[1]:5.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(series, indent=2))
    if drawing:
        draw(series, Path(args.out), "W1 single-event appends: throughput against writers")
        print(f"\nchart: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
