"""``python -m bench``: the library against hand-written driver code and its peer, per database.

Usage::

    python -m bench --db postgres|sqlite|mysql|all [--quick] [--rounds N] [--only W1,W2,...]
                    [--sides library,raw,minimal,eventsourcing]
                    [--postgres-url URL] [--mysql-url URL] [--sqlite-path PATH]
                    [--expected any|exact]

Each database runs the selected workloads (see ``bench.workloads``) on every side (see
``bench.sides``): the library; hand-written driver code (asyncpg, aiosqlite, aiomysql)
that sends the library's own SQL; the minimal hand-written baseline; and the peer library
eventsourcing (PostgreSQL and SQLite, when installed). Rounds alternate between the
sides after an untimed warm-up, and each database prints a table: events/s of each side
(median of the rounds) and the ratios library/minimal, library/same-SQL and
eventsourcing/minimal. Every table the run creates has a unique ``psb_<hex>_`` prefix and
is dropped at the end, also on errors and Ctrl-C. ``--quick`` is a smoke run of a few
seconds per database; its numbers mean little.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

from . import mysql, postgres, sqlite
from .common import FULL, QUICK, Side, Sizes, Target
from .latency import run_latency
from .runner import DatabaseReport, format_machine, format_report, run_workloads
from .sides import SIDE_SPECS, parse_sides
from .workloads import REGISTRY, implemented, select, select_comparisons, select_latency

__all__ = ["DATABASES", "main", "parse_args", "run"]

DATABASES = ("postgres", "sqlite", "mysql")


def parse_args(argv: Sequence[str] | None, prog: str = "python -m bench") -> argparse.Namespace:
    """The command line's options, checked.

    Args:
        argv: The arguments (``sys.argv[1:]`` when ``None``).
        prog: The program name for usage messages.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare pupsourcing_async with hand-written driver code and eventsourcing.",
        epilog="workloads: " + "; ".join(f"{key} {spec.summary}" for key, spec in REGISTRY.items()),
    )
    parser.add_argument(
        "--db", choices=(*DATABASES, "all"), default="all", help="which database (default all)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per side, 3 or more (default 5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a few seconds in all, for smoke runs"
    )
    parser.add_argument(
        "--only",
        default=",".join(implemented()),
        help=f"comma-separated workloads to run (default {','.join(implemented())})",
    )
    parser.add_argument(
        "--sides",
        default=",".join(SIDE_SPECS),
        help=f"comma-separated sides to run (default {','.join(SIDE_SPECS)})",
    )
    parser.add_argument(
        "--expected",
        choices=("any", "exact"),
        default="any",
        help="expected version of appends: Any() (default) or Exact(n)",
    )
    parser.add_argument(
        "--postgres-url", default=postgres.DEFAULT_URL, help=f"default {postgres.DEFAULT_URL}"
    )
    parser.add_argument(
        "--mysql-url", default=mysql.DEFAULT_URL, help=f"default {mysql.DEFAULT_URL}"
    )
    parser.add_argument(
        "--sqlite-path",
        default=None,
        help="SQLite database file (default: a new file in a temporary directory)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.rounds < 3:
        parser.error("--rounds must be 3 or more")
    args.only = [key.strip().upper() for key in args.only.split(",") if key.strip()]
    if not args.only:
        parser.error("--only names no workload")
    try:
        select(args.only, FULL)
    except ValueError as err:
        parser.error(f"--only: {err}")
    try:
        args.sides = parse_sides(args.sides)
    except ValueError as err:
        parser.error(f"--sides: {err}")
    args.databases = list(DATABASES) if args.db == "all" else [args.db]
    return args


def open_database(
    database: str,
    args: argparse.Namespace,
    sizes: Sizes,
    prefix: str,
    sides: Sequence[Side] | None = None,
) -> AbstractAsyncContextManager[Target]:
    """Open ``database`` for a run with ``sides`` (default ``args.sides``), tables ``prefix...``."""
    wanted = args.sides if sides is None else sides
    if database == "postgres":
        return postgres.open_target(args.postgres_url, sizes, prefix, wanted)
    if database == "sqlite":
        return sqlite.open_target(args.sqlite_path, sizes, prefix, wanted)
    return mysql.open_target(args.mysql_url, sizes, prefix, wanted)


async def run(
    args: argparse.Namespace,
    emit: Callable[[str], None],
    progress: Callable[[str], None],
) -> int:
    """Run every selected database in turn; return the exit code.

    A database that fails is reported on stderr and the others still run.

    Args:
        args: The checked options (:func:`parse_args`).
        emit: Prints a finished section of the report.
        progress: Prints a line of progress.
    """
    sizes = QUICK if args.quick else FULL
    exact = args.expected == "exact"
    workloads = select(args.only, sizes)
    latency_workloads = select_latency(args.only, sizes)
    comparisons = select_comparisons(args.only)
    emit(format_machine(sizes, args.rounds, exact))
    failed = 0
    for database in args.databases:
        prefix = f"psb_{secrets.token_hex(4)}_"
        started = time.perf_counter()
        try:
            async with open_database(database, args, sizes, prefix) as target:
                report: DatabaseReport = await run_workloads(
                    target, workloads, sizes, args.rounds, exact=exact, progress=progress
                )
                report.latencies = await run_latency(
                    target, latency_workloads, sizes, args.rounds, prefix, progress=progress
                )
                # The comparisons measure the library against itself, on its side's tables.
                tables = [
                    await compare(target, sizes, args.rounds, progress)
                    for compare in (comparisons if "library" in target.sides else [])
                ]
        except Exception as err:
            failed += 1
            print(f"error: {database} benchmark failed: {err!r}", file=sys.stderr, flush=True)
            continue
        emit(f"\n{format_report(report)}\n({time.perf_counter() - started:.1f} s)")
        for table in tables:
            emit(f"\n{table}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m bench") -> int:
    """Run the benchmark and print its tables; return the exit code."""
    args = parse_args(argv, prog)

    def emit(text: str) -> None:
        print(text, flush=True)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    try:
        code = asyncio.run(run(args, emit, progress))
    except KeyboardInterrupt:
        # The tables were dropped on the way out; a warning above names any that were not.
        print("interrupted", file=sys.stderr)
        return 130
    print(f"\n(total run time {time.perf_counter() - started:.1f} s)")
    return code
