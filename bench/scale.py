"""Scale runs: memory over a long log, partitioned workers, appends into a big table.

Usage::

    python -m bench.scale memory --url URL [--events 1000000] [--batch 1000]
                                 [--handler count|upsert]
    python -m bench.scale partitions --url URL [--events 100000] [--rounds 3] [--batch 100]
                                     [--handler upsert|count]
    python -m bench.scale latency-vs-size --url URL [--existing 1000000] [--rounds 5]

``URL`` is ``postgresql://...``, ``mysql://...`` or ``sqlite:////absolute/file.db``. Each run
works on tables of its own (``pss_<hex>_...``), filled server-side (see ``fill_log`` in
``bench.postgres``, ``bench.sqlite``, ``bench.mysql``) and dropped at the end.

- ``memory``: fills a log, then runs one ``RunMode.ONE_OFF`` processor over all of it
  and prints the process's resident memory every 100,000 events and at its peak. Run it
  under ``/usr/bin/time -v`` for the kernel's own peak ("Maximum resident set size"). The
  default handler counts events per aggregate in a dict (bounded by the number of
  aggregates); ``--handler upsert`` writes a read-model row per event instead.
- ``partitions``: fills a log, then alternates one worker process (``total_partitions=1``)
  with two concurrent worker processes (``total_partitions=2``, keys 0 and 1), each
  handling its events with a read-model upsert per event (``--handler count``: a count
  per aggregate in memory, no SQL); prints wall times, the speed-up, CPU use, and
  (PostgreSQL) how many event rows the server fetched.
- ``latency-vs-size``: W1 (one writer, and eight) on empty tables and on tables that
  already hold ``--existing`` events, library and raw, alternating rounds in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

from . import mysql, postgres, sqlite
from .common import FULL, SCHEMA_SIDES, ReadModel, Side, Sizes, Target, cleanup
from .workloads import build_w1

__all__ = ["main"]

_ROOT = Path(__file__).resolve().parent.parent

#: Aggregates a filled log is spread over, round-robin (100 events each per million).
FILL_AGGREGATES = 10_000


# --------------------------------------------------------------------------------------
# Databases


def dialect(url: str) -> str:
    """``postgres``, ``sqlite`` or ``mysql`` for ``url``."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    if scheme in ("mysql", "mariadb"):
        return "mysql"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(f"unsupported URL scheme: {scheme}")


def store_config(prefix: str) -> StoreConfig:
    """The tables of a scale run."""
    return StoreConfig(
        events_table=f"{prefix}events",
        aggregate_heads_table=f"{prefix}heads",
        checkpoints_table=f"{prefix}checkpoints",
    )


def read_model(url: str, table: str) -> Any:
    """The dialect's read model (``create``, ``table``, ``upsert``) on ``table``."""
    kind = dialect(url)
    if kind == "postgres":
        return postgres.PgReadModel(table)
    if kind == "sqlite":
        return sqlite.SqliteReadModel(table)
    return mysql.MysqlReadModel(table)


async def fill(url: str, config: StoreConfig, events: int) -> float:
    """Fill ``config``'s (empty) tables with ``events`` events; the seconds it took."""
    started = time.perf_counter()
    kind = dialect(url)
    filler = {"postgres": postgres.fill_log, "sqlite": sqlite.fill_log, "mysql": mysql.fill_log}
    await filler[kind](url, config, events, FILL_AGGREGATES)
    return time.perf_counter() - started


async def drop(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix``."""
    kind = dialect(url)
    if kind == "postgres":
        await postgres.drop_tables(url, prefix)
    elif kind == "mysql":
        await mysql.drop_tables(url, prefix)
    else:
        sqlite.drop_tables(url.removeprefix("sqlite:///"), prefix)


async def execute(db: pupsourcing_async.Database, sql: str) -> None:
    """Run one statement without results in its own transaction, on any dialect."""
    async with db.transaction() as tx:
        if db.dialect == "mysql":
            async with tx.cursor() as cursor:
                await cursor.execute(sql)
        else:
            await tx.execute(sql)


def open_target(url: str, sizes: Sizes, prefix: str) -> AbstractAsyncContextManager[Target]:
    """A benchmark target on ``url``: the library and the same-SQL side (``prefix...``)."""
    kind = dialect(url)
    sides = SCHEMA_SIDES
    if kind == "postgres":
        return postgres.open_target(url, sizes, prefix, sides)
    if kind == "mysql":
        return mysql.open_target(url, sizes, prefix, sides)
    return sqlite.open_target(url.removeprefix("sqlite:///"), sizes, prefix, sides)


def rss_mib() -> float:
    """This process's resident memory now, in MiB (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# memory


class _CountingProjection:
    """Counts events per aggregate in memory (bounded by the aggregates), or upserts a
    read-model row per event; prints the RSS every ``every`` events."""

    def __init__(self, name: str, model: ReadModel | None, every: int) -> None:
        self.name = name
        self.handled = 0
        self.counts: dict[str, int] = {}
        self._model = model
        self._every = every

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if self._model is not None:
            await self._model.upsert(tx, event.aggregate_id, event.global_position)
        else:
            self.counts[event.aggregate_id] = self.counts.get(event.aggregate_id, 0) + 1
        self.handled += 1
        if self.handled % self._every == 0:
            print(
                f"  {self.handled:>9,} events handled, RSS {rss_mib():6.1f} MiB",
                flush=True,
            )


async def run_memory(url: str, events: int, batch: int, handler: str) -> None:
    """See the module docstring."""
    prefix = f"pss_{secrets.token_hex(4)}_"
    config = store_config(prefix)
    try:
        async with pupsourcing_async.connect(url, store_config=config, max_size=4) as db:
            await db.migrate()
            model = None
            if handler == "upsert":
                model = read_model(url, f"{prefix}readmodel")
                await execute(db, model.create)
            print(f"filling {events:,} events over {FILL_AGGREGATES:,} aggregates ...", flush=True)
            print(f"filled in {await fill(url, config, events):.1f} s", flush=True)
            print(f"RSS before processing: {rss_mib():.1f} MiB (peak {peak_rss_mib():.1f})")
            projection = _CountingProjection("memory", model, 100_000)
            processor = db.processor(ProcessorConfig(batch_size=batch, run_mode=RunMode.ONE_OFF))
            started = time.perf_counter()
            await processor.run(projection)
            elapsed = time.perf_counter() - started
    finally:
        await cleanup(drop(url, prefix), f"tables {prefix}*")
    print(
        f"processed {projection.handled:,} events in {elapsed:.1f} s "
        f"({projection.handled / elapsed:,.0f} events/s), batch {batch}, handler {handler}"
    )
    print(f"RSS now {rss_mib():.1f} MiB; peak RSS of this process {peak_rss_mib():.1f} MiB")


# --------------------------------------------------------------------------------------
# partitions


@dataclass
class _WorkerReport:
    started: float
    finished: float
    handled: int
    cpu: float


async def run_worker(
    url: str, prefix: str, name: str, partition: int, partitions: int, batch: int, handler: str
) -> None:
    """One partition worker: a ONE_OFF processor; prints a JSON line with its timings."""
    config = store_config(prefix)
    model = read_model(url, f"{prefix}readmodel") if handler == "upsert" else None
    async with pupsourcing_async.connect(url, store_config=config, max_size=3) as db:
        projection = _CountingProjection(name, model, 10**12)
        processor = db.processor(
            ProcessorConfig(
                batch_size=batch,
                partition_key=partition,
                total_partitions=partitions,
                run_mode=RunMode.ONE_OFF,
            )
        )
        cpu = time.process_time()
        started = time.perf_counter()
        await processor.run(projection)
        finished = time.perf_counter()
        cpu = time.process_time() - cpu
    report = _WorkerReport(started, finished, projection.handled, cpu)
    print(json.dumps(report.__dict__), flush=True)


async def _spawn_workers(
    url: str, prefix: str, name: str, partitions: int, batch: int, handler: str
) -> list[_WorkerReport]:
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.scale",
            "worker",
            "--url",
            url,
            "--prefix",
            prefix,
            "--name",
            name,
            "--partition",
            str(key),
            "--of",
            str(partitions),
            "--batch",
            str(batch),
            "--handler",
            handler,
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
        )
        for key in range(partitions)
    ]
    try:
        outputs = [await process.communicate() for process in processes]
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    reports = []
    for process, (out, _) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"a worker failed with exit code {process.returncode}")
        reports.append(_WorkerReport(**json.loads(out.decode().strip().splitlines()[-1])))
    return reports


async def _rows_fetched(url: str, table: str) -> int | None:
    """Event rows the PostgreSQL server has fetched from ``table`` (scans + index fetches)."""
    if dialect(url) != "postgres":
        return None
    import asyncpg

    conn = await asyncpg.connect(postgres.raw_dsn(url))
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        value: int = await conn.fetchval(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_user_tables WHERE relname = $1",
            table,
        )
        return value
    finally:
        await conn.close()


async def run_partitions(url: str, events: int, rounds: int, batch: int, handler: str) -> None:
    """See the module docstring."""
    prefix = f"pss_{secrets.token_hex(4)}_"
    config = store_config(prefix)
    model = read_model(url, f"{prefix}readmodel")
    results: dict[int, list[float]] = {1: [], 2: []}
    try:
        async with pupsourcing_async.connect(url, store_config=config, max_size=2) as db:
            await db.migrate()
            await execute(db, model.create)
            print(f"filling {events:,} events over {FILL_AGGREGATES:,} aggregates ...", flush=True)
            print(f"filled in {await fill(url, config, events):.1f} s", flush=True)
            for number in range(rounds):
                for partitions in (1, 2):
                    await execute(db, f"DELETE FROM {model.table}")
                    fetched = await _rows_fetched(url, config.events_table)
                    busy = busy_cpu_seconds()
                    reports = await _spawn_workers(
                        url, prefix, f"part_{number}_{partitions}", partitions, batch, handler
                    )
                    busy = busy_cpu_seconds() - busy
                    await asyncio.sleep(1.5)  # let the servers' statistics settle
                    after = await _rows_fetched(url, config.events_table)
                    wall = max(r.finished for r in reports) - min(r.started for r in reports)
                    results[partitions].append(wall)
                    handled = sum(r.handled for r in reports)
                    if handled != events:
                        raise RuntimeError(f"handled {handled} events, expected {events}")
                    clients = sum(r.cpu for r in reports)
                    rows = "" if fetched is None or after is None else f", {after - fetched:,} "
                    rows += "event rows fetched by the server" if rows else ""
                    print(
                        f"round {number}: {partitions} worker(s): {wall:6.2f} s, "
                        f"{events / wall:,.0f} events/s; handled "
                        f"{' + '.join(f'{r.handled:,}' for r in reports)}; client CPU "
                        f"{clients:.1f} s, machine busy {busy:.1f} s "
                        f"(of {2 * wall:.1f} s on 2 cores){rows}",
                        flush=True,
                    )
    finally:
        await cleanup(drop(url, prefix), f"tables {prefix}*")
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(
        f"median wall time: 1 worker {one:.2f} s, 2 workers {two:.2f} s; "
        f"speed-up {one / two:.2f}x (batch {batch}, {handler} handler, {events:,} events)"
    )


# --------------------------------------------------------------------------------------
# latency-vs-size


async def run_latency_vs_size(url: str, existing: int, rounds: int) -> None:
    """See the module docstring."""
    sizes = FULL
    rows = build_w1(sizes)
    empty_prefix = f"pss_{secrets.token_hex(4)}_"
    big_prefix = f"pss_{secrets.token_hex(4)}_"
    rates: dict[tuple[str, str, Side], list[float]] = {}
    async with (
        open_target(url, sizes, empty_prefix) as empty,
        open_target(url, sizes, big_prefix) as big,
    ):
        for side in SCHEMA_SIDES:
            print(f"filling {existing:,} events into the {side} side ...", flush=True)
            print(f"filled in {await fill(url, big.configs[side], existing):.1f} s", flush=True)
        targets = {"0": empty, f"{existing:,}": big}
        for row in rows:
            for number in range(-1, rounds):  # round -1 warms up
                for size, target in targets.items():
                    for side in SCHEMA_SIDES:
                        count, run = row.make_round(sizes, f"s{number}", False)
                        if target is empty:
                            await target.reset(side)
                        started = time.perf_counter()
                        await run(target.sides[side])
                        elapsed = time.perf_counter() - started
                        if number >= 0:
                            rates.setdefault((row.label, size, side), []).append(count / elapsed)
            for side in SCHEMA_SIDES:
                at_zero = statistics.median(rates[(row.label, "0", side)])
                at_big = statistics.median(rates[(row.label, f"{existing:,}", side)])
                # With one writer, appends run one after another: 1/rate is their mean time.
                mean = (
                    f"; mean append time {1000 / at_zero:.2f} ms -> {1000 / at_big:.2f} ms"
                    if row.label.endswith(" 1 writer")
                    else ""
                )
                print(
                    f"{row.label}, {side}: {at_zero:,.0f} ev/s at 0 events, {at_big:,.0f} ev/s "
                    f"at {existing:,} ({at_big / at_zero - 1:+.1%}){mean}",
                    flush=True,
                )
            for size in targets:
                for side in SCHEMA_SIDES:
                    rounds_text = " ".join(f"{r:,.0f}" for r in rates[(row.label, size, side)])
                    print(f"    {size:>9} events, {side:<7}: {rounds_text}")


# --------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    memory = commands.add_parser("memory", help="peak RSS while a projection reads a long log")
    memory.add_argument("--url", required=True)
    memory.add_argument("--events", type=int, default=1_000_000)
    memory.add_argument("--batch", type=int, default=1000)
    memory.add_argument("--handler", choices=("count", "upsert"), default="count")
    partitions = commands.add_parser("partitions", help="1 worker process against 2")
    partitions.add_argument("--url", required=True)
    partitions.add_argument("--events", type=int, default=100_000)
    partitions.add_argument("--rounds", type=int, default=3)
    partitions.add_argument("--batch", type=int, default=100)
    partitions.add_argument("--handler", choices=("upsert", "count"), default="upsert")
    size = commands.add_parser("latency-vs-size", help="W1 on empty and on big tables")
    size.add_argument("--url", required=True)
    size.add_argument("--existing", type=int, default=1_000_000)
    size.add_argument("--rounds", type=int, default=5)
    worker = commands.add_parser("worker", help="(internal) one partition worker")
    worker.add_argument("--url", required=True)
    worker.add_argument("--prefix", required=True)
    worker.add_argument("--name", required=True)
    worker.add_argument("--partition", type=int, required=True)
    worker.add_argument("--of", type=int, required=True)
    worker.add_argument("--batch", type=int, required=True)
    worker.add_argument("--handler", choices=("upsert", "count"), required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scale command; return the exit code."""
    args = parse_args(argv)
    commands: dict[str, Callable[[], Awaitable[None]]] = {
        "memory": lambda: run_memory(args.url, args.events, args.batch, args.handler),
        "partitions": lambda: run_partitions(
            args.url, args.events, args.rounds, args.batch, args.handler
        ),
        "latency-vs-size": lambda: run_latency_vs_size(args.url, args.existing, args.rounds),
        "worker": lambda: run_worker(
            args.url, args.prefix, args.name, args.partition, args.of, args.batch, args.handler
        ),
    }
    try:
        asyncio.run(_call(commands[args.command]))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


async def _call(command: Callable[[], Awaitable[None]]) -> None:
    await command()


if __name__ == "__main__":
    sys.exit(main())
