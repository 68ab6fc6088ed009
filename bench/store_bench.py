"""The library's PostgreSQL store against hand-written asyncpg doing the same SQL work.

Run it against a PostgreSQL database it may create and drop tables in::

    python -m bench.store_bench --url postgresql://postgres@127.0.0.1:5432/test [--rounds 5]
    python -m bench.store_bench --url ... --quick        # a few seconds, for smoke runs

Workloads (events/s, higher is better):

- **W1** single-event appends, one transaction each, 8 concurrent writers, each on its own
  aggregate. Library: ``db.transaction()`` + ``db.store.append``. Raw: per event, in a
  transaction on a pooled connection, upsert the aggregate's head row (``INSERT ... ON
  CONFLICT DO UPDATE ... RETURNING aggregate_version``) and ``INSERT`` the event ``RETURNING
  global_position``.
- **W2** appends of 100 events each (one transaction each), one writer. Raw: the same head
  upsert, then ``executemany`` of the 100 rows.
- **W3** reading the whole log in pages of 1000. Library: ``db.store.read_events`` (gap-safe,
  returns ``PersistedEvent`` objects). Raw: ``conn.fetch`` of every event column with
  ``global_position > $1 ORDER BY global_position LIMIT 1000`` (asyncpg records, no
  conversion).

Each side gets its own freshly migrated tables (a unique ``psb_<hex>_`` prefix) and its own
pool of the same size. Rounds alternate library and raw (L, R, L, R, ...) after an untimed
warm-up of each; W1 and W2 truncate the tables and run ``CHECKPOINT`` (when the role may)
before each timed round, so that every round starts from the same state. The table shows
the median events/s of each side and ``ratio = median library / median raw``. Every table
the run created is dropped at the end, also when it fails. Nothing here asserts on timings.

The appends run on tables that start empty, so the server plans (and caches) each prepared
statement while its tables are small, as in a new deployment or a test suite; a statement
whose cached plan scans a small table sequentially keeps doing so as the table grows within
a round.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import asyncpg

import pupsourcing_async
from pupsourcing_async import Database, StoreConfig, es

__all__ = ["Sizes", "WorkloadResult", "main", "run_benchmark"]

Side: TypeAlias = Literal["library", "raw"]
SIDES: tuple[Side, Side] = ("library", "raw")
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

BOUNDED_CONTEXT = "Bench"
AGGREGATE_TYPE = "Account"
EVENT_TYPE = "MoneyDeposited"
METADATA = b'{"source":"store_bench","user_id":"u-42"}'
PAYLOAD_SIZE = 100


@dataclass(frozen=True)
class Sizes:
    """How much work one timed round does.

    Attributes:
        writers: Concurrent W1 writers; also the pool size of both sides.
        w1_events: Events each W1 writer appends, one per transaction.
        w2_appends: Appends the single W2 writer makes.
        w2_batch: Events per W2 append.
        w3_events: Events in the log that W3 reads.
        w3_page: Events per W3 read.
    """

    writers: int = 8
    w1_events: int = 500
    w2_appends: int = 100
    w2_batch: int = 100
    w3_events: int = 20_000
    w3_page: int = 1000

    def warmup(self) -> Sizes:
        """The sizes of the untimed warm-up round (W3 always reads its whole log)."""
        return Sizes(
            writers=self.writers,
            w1_events=min(self.w1_events, 20),
            w2_appends=min(self.w2_appends, 5),
            w2_batch=self.w2_batch,
            w3_events=self.w3_events,
            w3_page=self.w3_page,
        )


FULL = Sizes()
QUICK = Sizes(w1_events=25, w2_appends=5, w3_events=2_000)


@dataclass
class WorkloadResult:
    """The measurements of one workload.

    Attributes:
        key: ``W1``, ``W2`` or ``W3``.
        title: What the workload does, for the table.
        events_per_round: Events appended or read in one timed round.
        rates: Events/s of every timed round, per side, in the order they ran.
    """

    key: str
    title: str
    events_per_round: int
    rates: dict[Side, list[float]] = field(default_factory=lambda: {"library": [], "raw": []})

    def median(self, side: Side) -> float:
        """The median events/s of ``side``."""
        return statistics.median(self.rates[side])

    @property
    def ratio(self) -> float:
        """Median library events/s divided by median raw events/s."""
        return self.median("library") / self.median("raw")


# --------------------------------------------------------------------------------------
# Events and SQL shared by both sides


def payload(seq: int) -> bytes:
    """A JSON payload of about :data:`PAYLOAD_SIZE` bytes (exactly, for realistic ``seq``)."""
    body = {
        "account_id": f"acc-{seq % 1_000_000:06d}",
        "amount_cents": 100 + seq % 100_000,
        "currency": "EUR",
        "memo": "",
        "seq": seq,
    }
    pad = PAYLOAD_SIZE - len(json.dumps(body, separators=(",", ":")))
    body["memo"] = "deposit " + "x" * max(pad - 8, 0)
    return json.dumps(body, separators=(",", ":")).encode()


def make_events(aggregate_id: str, count: int, first_seq: int = 0) -> list[es.Event]:
    """``count`` events for one aggregate; both sides append these same objects."""
    return [
        es.Event(
            BOUNDED_CONTEXT,
            AGGREGATE_TYPE,
            aggregate_id,
            EVENT_TYPE,
            payload(first_seq + i),
            metadata=METADATA,
            correlation_id=f"corr-{aggregate_id}",
        )
        for i in range(count)
    ]


def table_config(prefix: str, name: str) -> StoreConfig:
    """The table names of one side of one workload, all starting with ``prefix``."""
    return StoreConfig(
        events_table=f"{prefix}{name}_events",
        aggregate_heads_table=f"{prefix}{name}_heads",
        checkpoints_table=f"{prefix}{name}_checkpoints",
    )


class RawSQL:
    """What a careful hand-written asyncpg event store would send, for one set of tables.

    Args:
        config: The tables (same schema as the library's, created by its migration).
    """

    COLUMNS = (
        "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
        "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
        "metadata, created_at"
    )

    def __init__(self, config: StoreConfig) -> None:
        events, heads = config.events_table, config.aggregate_heads_table
        self.events = events
        self.heads = heads
        self.upsert_head = f"""
INSERT INTO {heads} AS h (bounded_context, aggregate_type, aggregate_id, aggregate_version,
    updated_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE
    SET aggregate_version = h.aggregate_version + EXCLUDED.aggregate_version,
        updated_at = EXCLUDED.updated_at
RETURNING h.aggregate_version"""
        values = ", ".join(f"${i}" for i in range(1, 14))
        self.insert_event_returning = (
            f"INSERT INTO {events} ({self.COLUMNS}) VALUES ({values}) RETURNING global_position"
        )
        self.insert_event = f"INSERT INTO {events} ({self.COLUMNS}) VALUES ({values})"
        self.read_page = f"""
SELECT global_position, {self.COLUMNS} FROM {events}
WHERE global_position > $1 ORDER BY global_position LIMIT $2"""


def raw_row(event: es.Event, version: int) -> tuple[object, ...]:
    """The INSERT arguments of ``event`` at aggregate ``version`` (``RawSQL.COLUMNS`` order)."""
    return (
        event.bounded_context,
        event.aggregate_type,
        event.aggregate_id,
        version,
        event.event_id,
        event.event_type,
        event.event_version,
        event.payload,
        event.trace_id,
        event.correlation_id,
        event.causation_id,
        None if event.metadata is None else event.metadata.decode(),
        event.created_at,
    )


def expected_version(exact: bool, version: int) -> es.ExpectedVersion:
    """``Exact(version)`` when checking versions, else ``Any()``."""
    return es.Exact(version) if exact else es.Any()


class RawConflictError(RuntimeError):
    """The raw side's head was not at the version its writer expected."""


# --------------------------------------------------------------------------------------
# The two sides of each workload


async def lib_append_singles(db: Database, events: Sequence[es.Event], exact: bool) -> None:
    """Append ``events`` one per transaction through the library."""
    version = 0
    for event in events:
        async with db.transaction() as tx:
            result = await db.store.append(tx, expected_version(exact, version), [event])
        version = result.to_version


async def raw_append_singles(
    pool: Pool, sql: RawSQL, events: Sequence[es.Event], exact: bool
) -> None:
    """Append ``events`` one per transaction: head upsert, then INSERT ... RETURNING."""
    version = 0
    for event in events:
        async with pool.acquire() as conn, conn.transaction():
            new_version: int = await conn.fetchval(
                sql.upsert_head,
                event.bounded_context,
                event.aggregate_type,
                event.aggregate_id,
                1,
            )
            if exact and new_version != version + 1:
                raise RawConflictError(f"expected version {version}, head is {new_version - 1}")
            await conn.fetchval(sql.insert_event_returning, *raw_row(event, new_version))
        version = new_version


async def lib_append_batches(
    db: Database, batches: Sequence[Sequence[es.Event]], exact: bool
) -> None:
    """Append each batch in its own transaction through the library."""
    version = 0
    for batch in batches:
        async with db.transaction() as tx:
            result = await db.store.append(tx, expected_version(exact, version), batch)
        version = result.to_version


async def raw_append_batches(
    pool: Pool, sql: RawSQL, batches: Sequence[Sequence[es.Event]], exact: bool
) -> None:
    """Append each batch in its own transaction: head upsert, then ``executemany``."""
    version = 0
    for batch in batches:
        first = batch[0]
        count = len(batch)
        async with pool.acquire() as conn, conn.transaction():
            head: int = await conn.fetchval(
                sql.upsert_head,
                first.bounded_context,
                first.aggregate_type,
                first.aggregate_id,
                count,
            )
            base = head - count
            if exact and base != version:
                raise RawConflictError(f"expected version {version}, head is {base}")
            await conn.executemany(
                sql.insert_event,
                [raw_row(event, base + i) for i, event in enumerate(batch, 1)],
            )
        version = head


async def lib_read_all(db: Database, page: int) -> int:
    """Read the whole log through the library, one transaction per page; return the count."""
    position = 0
    total = 0
    while True:
        async with db.transaction() as tx:
            events = await db.store.read_events(tx, position, page)
        if not events:
            return total
        position = events[-1].global_position
        total += len(events)


async def raw_read_all(pool: Pool, sql: RawSQL, page: int) -> int:
    """Read the whole log with plain asyncpg, one transaction per page; return the count."""
    position = 0
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(sql.read_page, position, page)
        if not rows:
            return total
        position = rows[-1][0]
        total += len(rows)


# --------------------------------------------------------------------------------------
# Running a workload


@dataclass
class Setup:
    """One workload's two sides: the library's database and the raw pool, on their tables.

    Attributes:
        db: The library's database (its pool, store and tables).
        pool: The raw side's asyncpg pool, the same size as the library's.
        sql: The raw side's statements, on its own tables.
        admin: A separate connection for truncating, counting and checkpoints.
        exact: Whether appends check ``Exact(version)`` rather than ``Any()``.
        checkpoint: Whether resets run ``CHECKPOINT`` (turned off when the role may not).
    """

    db: Database
    pool: Pool
    sql: RawSQL
    admin: Conn
    exact: bool
    checkpoint: bool = True

    def tables(self, side: Side) -> tuple[str, str]:
        """The events and heads tables of ``side``."""
        if side == "library":
            config = self.db.store.config
            return config.events_table, config.aggregate_heads_table
        return self.sql.events, self.sql.heads

    async def reset(self, side: Side) -> None:
        """Empty ``side``'s tables and flush dirty pages, so that each round starts alike."""
        events, heads = self.tables(side)
        await self.admin.execute(f"TRUNCATE {events}, {heads} RESTART IDENTITY")
        if self.checkpoint:
            try:
                await self.admin.execute("CHECKPOINT")
            except asyncpg.InsufficientPrivilegeError:
                self.checkpoint = False  # needs superuser or pg_checkpoint; rounds still reset

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        events, _ = self.tables(side)
        value: int = await self.admin.fetchval(f"SELECT count(*) FROM {events}")
        return value


# A workload is a factory of one round: given the sizes and a round tag, it returns the
# number of events and one coroutine function per side (untimed inputs already built).
RoundFn: TypeAlias = Callable[[Side], Awaitable[None]]
Round: TypeAlias = tuple[int, RoundFn]


def w1_round(setup: Setup, sizes: Sizes, tag: str) -> Round:
    """W1: ``sizes.writers`` writers, each appending single events to its own aggregate."""
    streams = [
        make_events(f"w1-{tag}-{writer}", sizes.w1_events) for writer in range(sizes.writers)
    ]

    async def run(side: Side) -> None:
        if side == "library":
            writers = [lib_append_singles(setup.db, s, setup.exact) for s in streams]
        else:
            writers = [raw_append_singles(setup.pool, setup.sql, s, setup.exact) for s in streams]
        await asyncio.gather(*writers)

    return sizes.writers * sizes.w1_events, run


def w2_round(setup: Setup, sizes: Sizes, tag: str) -> Round:
    """W2: one writer appending batches of ``sizes.w2_batch`` events to one aggregate."""
    events = make_events(f"w2-{tag}", sizes.w2_appends * sizes.w2_batch)
    batches = [events[i : i + sizes.w2_batch] for i in range(0, len(events), sizes.w2_batch)]

    async def run(side: Side) -> None:
        if side == "library":
            await lib_append_batches(setup.db, batches, setup.exact)
        else:
            await raw_append_batches(setup.pool, setup.sql, batches, setup.exact)

    return len(events), run


def w3_round(setup: Setup, sizes: Sizes, tag: str) -> Round:
    """W3: one reader reading the whole prepared log in pages of ``sizes.w3_page``."""

    async def run(side: Side) -> None:
        if side == "library":
            total = await lib_read_all(setup.db, sizes.w3_page)
        else:
            total = await raw_read_all(setup.pool, setup.sql, sizes.w3_page)
        if total != sizes.w3_events:
            raise RuntimeError(f"W3 {side} read {total} events, expected {sizes.w3_events}")

    return sizes.w3_events, run


async def w3_load(setup: Setup, sizes: Sizes) -> None:
    """Fill both sides' logs with the same ``sizes.w3_events`` events (untimed)."""
    per_aggregate = 100
    aggregates = -(-sizes.w3_events // per_aggregate)
    for side in SIDES:
        await setup.reset(side)
    for index in range(aggregates):
        count = min(per_aggregate, sizes.w3_events - index * per_aggregate)
        batch = make_events(f"w3-{index}", count, index * per_aggregate)
        await lib_append_batches(setup.db, [batch], exact=False)
        await raw_append_batches(setup.pool, setup.sql, [batch], exact=False)
    for side in SIDES:
        events, heads = setup.tables(side)
        await setup.admin.execute(f"VACUUM (ANALYZE) {events}, {heads}")
        if await setup.count(side) != sizes.w3_events:
            raise RuntimeError(f"W3 {side} log was not loaded completely")


@dataclass(frozen=True)
class Workload:
    """One row of the table.

    Attributes:
        key: ``W1``, ``W2`` or ``W3``.
        title: What it does.
        make_round: Builds one round's inputs and runner.
        appends: Whether it writes (tables are reset before each round and counted after).
    """

    key: str
    title: str
    make_round: Callable[[Setup, Sizes, str], Round]
    appends: bool


def workloads(sizes: Sizes) -> list[Workload]:
    """W1, W2 and W3 for ``sizes``."""
    return [
        Workload(
            "W1",
            f"single-event appends, {sizes.writers} writers",
            w1_round,
            appends=True,
        ),
        Workload("W2", f"appends of {sizes.w2_batch} events, 1 writer", w2_round, appends=True),
        Workload("W3", f"read the log, pages of {sizes.w3_page}", w3_round, appends=False),
    ]


async def timed_round(setup: Setup, workload: Workload, side: Side, run: RoundFn) -> float:
    """Run one side of one round; return its duration in seconds (resets and checks untimed)."""
    if workload.appends:
        await setup.reset(side)
    gc.collect()
    started = time.perf_counter()
    await run(side)
    return time.perf_counter() - started


async def run_workload(
    url: str, prefix: str, admin: Conn, workload: Workload, sizes: Sizes, rounds: int, exact: bool
) -> WorkloadResult:
    """Migrate both sides' tables, warm both up, then time ``rounds`` alternating rounds."""
    key = workload.key.lower()
    lib_config = table_config(prefix, f"{key}l")
    raw_config = table_config(prefix, f"{key}r")
    # The raw side's tables come from the library's own migration: the same schema.
    async with pupsourcing_async.connect(url, store_config=raw_config, max_size=1) as migrator:
        await migrator.migrate()
    async with (
        pupsourcing_async.connect(
            url, store_config=lib_config, min_size=sizes.writers, max_size=sizes.writers
        ) as db,
        asyncpg.create_pool(raw_dsn(url), min_size=sizes.writers, max_size=sizes.writers) as pool,
    ):
        await db.migrate()
        setup = Setup(db, pool, RawSQL(raw_config), admin, exact)
        if workload.key == "W3":
            await w3_load(setup, sizes)
        _, run = workload.make_round(setup, sizes.warmup(), "warm")
        for side in SIDES:
            await timed_round(setup, workload, side, run)
        result = WorkloadResult(workload.key, workload.title, 0)
        for number in range(rounds):
            count, run = workload.make_round(setup, sizes, f"r{number}")
            result.events_per_round = count
            for side in SIDES:
                elapsed = await timed_round(setup, workload, side, run)
                if workload.appends and await setup.count(side) != count:
                    raise RuntimeError(f"{workload.key} {side} round {number} lost events")
                result.rates[side].append(count / elapsed)
        return result


def raw_dsn(url: str) -> str:
    """``url`` in the form asyncpg accepts (without a SQLAlchemy ``+asyncpg`` suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def drop_tables(admin: Conn, prefix: str) -> list[str]:
    """Drop every table of the current schema whose name starts with ``prefix``."""
    names: list[str] = [
        row[0]
        for row in await admin.fetch(
            "SELECT tablename FROM pg_tables "
            "WHERE schemaname = current_schema() AND starts_with(tablename, $1)",
            prefix,
        )
    ]
    for name in names:
        await admin.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    return names


@dataclass
class Report:
    """Everything the run prints.

    Attributes:
        server: PostgreSQL's version string.
        settings: Server settings that change write throughput.
        results: One entry per workload.
    """

    server: str
    settings: dict[str, str]
    results: list[WorkloadResult]


async def run_benchmark(
    url: str,
    sizes: Sizes,
    rounds: int,
    *,
    exact: bool = False,
    only: Sequence[str] = ("W1", "W2", "W3"),
    progress: Callable[[str], None] = lambda _: None,
) -> Report:
    """Run the selected workloads and return their measurements.

    Args:
        url: A PostgreSQL URL the run may create and drop tables in.
        sizes: How much work each round does.
        rounds: Timed rounds per side (alternating library, raw).
        exact: Append with ``Exact(version)`` instead of ``Any()``.
        only: The workload keys to run.
        progress: Called with a line of text as each workload starts.

    Returns:
        The server's version and settings, and one result per workload.
    """
    prefix = f"psb_{secrets.token_hex(4)}_"
    admin: Conn = await asyncpg.connect(raw_dsn(url))
    try:
        server: str = await admin.fetchval("SHOW server_version")
        settings = {
            name: str(await admin.fetchval(f"SHOW {name}"))
            for name in ("fsync", "synchronous_commit", "shared_buffers")
        }
        results = []
        for workload in workloads(sizes):
            if workload.key not in only:
                continue
            progress(f"{workload.key}: {workload.title} ...")
            results.append(await run_workload(url, prefix, admin, workload, sizes, rounds, exact))
        return Report(server, settings, results)
    finally:
        try:
            await drop_tables(admin, prefix)
        finally:
            await admin.close()


# --------------------------------------------------------------------------------------
# Output and command line


def format_report(report: Report, sizes: Sizes, rounds: int, exact: bool) -> str:
    """The report as a readable table, with the per-round numbers below it."""
    cpus = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = cpus or 0
    settings = ", ".join(f"{name}={value}" for name, value in report.settings.items())
    lines = [
        "pupsourcing_async PostgreSQL store: library vs raw asyncpg",
        f"PostgreSQL {report.server} ({settings})",
        f"CPUs: {cpus} (usable by this process: {usable}); Python {platform.python_version()}; "
        f"asyncpg {asyncpg.__version__}; pupsourcing_async {pupsourcing_async.__version__}",
        f"pool size {sizes.writers} per side; {rounds} timed rounds per side, alternating "
        f"library/raw after a warm-up; expected version {'Exact(n)' if exact else 'Any()'}; "
        f"payload {len(payload(0))} B JSON, metadata {len(METADATA)} B JSON",
        "",
    ]
    header = ("workload", "events/round", "library ev/s", "raw ev/s", "ratio lib/raw")
    rows = [
        (
            f"{r.key} {r.title}",
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

    lines.append(line(header))
    lines.append("  ".join("-" * width for width in widths))
    lines.extend(line(row) for row in rows)
    lines.append("")
    lines.append("medians of the rounds below; events/s of each round, in order:")
    for r in report.results:
        for side in SIDES:
            rates = " ".join(f"{rate:,.0f}" for rate in r.rates[side])
            lines.append(f"  {r.key} {side:<7}  {rates}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_bench",
        description="Compare pupsourcing_async's PostgreSQL store with raw asyncpg.",
    )
    parser.add_argument("--url", required=True, help="postgresql://user@host:port/db")
    parser.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per side, 3 or more (default 5)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a few seconds, for smoke runs"
    )
    parser.add_argument(
        "--expected",
        choices=("any", "exact"),
        default="any",
        help="expected version of appends: Any() (default) or Exact(n)",
    )
    parser.add_argument(
        "--only",
        default="W1,W2,W3",
        help="comma-separated workloads to run (default W1,W2,W3)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 3 if args.quick else 5
    if args.rounds < 3:
        parser.error("--rounds must be 3 or more")
    args.only = [key.strip().upper() for key in args.only.split(",") if key.strip()]
    unknown = set(args.only) - {"W1", "W2", "W3"}
    if unknown or not args.only:
        parser.error(f"--only takes W1, W2 and/or W3, got {args.only}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its table; return the exit code."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    exact = args.expected == "exact"

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    started = time.perf_counter()
    report = asyncio.run(
        run_benchmark(args.url, sizes, args.rounds, exact=exact, only=args.only, progress=progress)
    )
    print(format_report(report, sizes, args.rounds, exact))
    print(f"\n(total run time {time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
