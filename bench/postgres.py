"""PostgreSQL: the target that opens every side, and the same-SQL side (``raw``).

:func:`open_target` opens the library, this module's same-SQL side, the minimal baseline
(:mod:`bench.minimal_postgres`) and eventsourcing (:mod:`bench.peer_eventsourcing`, in a
schema of its own, when installed), each on its own tables.

The same-SQL side is hand-written asyncpg that sends the library's own SQL work, so it
shows what the library costs over its SQL:

- appends, per transaction on a pooled connection: upsert the aggregate's head row
  (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING aggregate_version``), then ``INSERT``
  the event ``RETURNING global_position`` (single events) or ``executemany`` the rows
  (batches; asyncpg's ``executemany`` returns no positions);
- reads, one transaction per page or stream: ``conn.fetch`` of every event column, with
  ``global_position > $1 ORDER BY global_position LIMIT $2`` (the log) or the aggregate's
  key ``ORDER BY aggregate_version`` (a stream); asyncpg records, no conversion;
- projections (W4, W6), one transaction per batch on one held connection: ``fetchval``
  the checkpoint, ``fetch`` the next page as above, per event the read-model upsert (W4's
  upsert handler), then the checkpoint upsert.

Every side has a pool of ``Sizes.writers`` connections; the library's and the same-SQL
side's tables are made by the library's own migration. Resets ``TRUNCATE ... RESTART
IDENTITY`` the side's tables and run ``CHECKPOINT`` (when the role may), so every append
round starts from the same state.

The appends run on tables that start empty, so the server plans (and caches) each
prepared statement while its tables are small, as in a new deployment or a test suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

import pupsourcing_async
from pupsourcing_async import StoreConfig, es

from . import minimal_postgres, peer_eventsourcing
from .common import (
    MinimalTables,
    RawConflictError,
    Seen,
    Side,
    Sizes,
    StoreSide,
    cleanup,
    raw_catch_up,
    raw_follow,
    read_model_table,
    side_configs,
)
from .minimal_postgres import schema as minimal_schema
from .sides import SIDE_SPECS, library_sides

__all__ = ["DEFAULT_URL", "PgReadModel", "PostgresTarget", "RawPostgres", "open_target"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
Proxy: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)


class RawSQL:
    """The same-SQL side's statements, for one set of tables.

    Args:
        config: The tables (same schema as the library's, created by its migration).
    """

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
            f"INSERT INTO {events} ({COLUMNS}) VALUES ({values}) RETURNING global_position"
        )
        self.insert_event = f"INSERT INTO {events} ({COLUMNS}) VALUES ({values})"
        self.read_page = f"""
SELECT global_position, {COLUMNS} FROM {events}
WHERE global_position > $1 ORDER BY global_position LIMIT $2"""
        self.read_stream = f"""
SELECT global_position, {COLUMNS} FROM {events}
WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
ORDER BY aggregate_version"""
        checkpoints = config.checkpoints_table
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = $1"
        )
        self.update_checkpoint = f"""
INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (projection_name) DO UPDATE
    SET last_global_position = EXCLUDED.last_global_position, updated_at = EXCLUDED.updated_at"""


class PgReadModel:
    """W4's read model on PostgreSQL: one row per aggregate, upserted per event.

    Args:
        table: The read-model table.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (aggregate_id TEXT PRIMARY KEY, "
            "events BIGINT NOT NULL, last_position BIGINT NOT NULL)"
        )
        self.sql = (
            f"INSERT INTO {table} AS r (aggregate_id, events, last_position) VALUES ($1, 1, $2) "
            "ON CONFLICT (aggregate_id) DO UPDATE "
            "SET events = r.events + 1, last_position = EXCLUDED.last_position"
        )

    async def upsert(self, tx: Any, aggregate_id: str, position: int) -> None:
        """One ``execute`` of the upsert on ``tx`` (an asyncpg connection)."""
        await tx.execute(self.sql, aggregate_id, position)


def raw_row(event: es.Event, version: int) -> tuple[object, ...]:
    """The INSERT arguments of ``event`` at aggregate ``version`` (``COLUMNS`` order)."""
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


class RawPostgres:
    """The same-SQL side: hand-written asyncpg on its own pool and tables.

    Args:
        pool: The same-SQL side's pool, the same size as the library's.
        sql: The statements, on the same-SQL side's tables.
        read_model: The same-SQL side's read model.
    """

    def __init__(self, pool: Pool, sql: RawSQL, read_model: PgReadModel) -> None:
        self.pool = pool
        self.sql = sql
        self.read_model = read_model

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """Per event, in a transaction: head upsert, then ``INSERT ... RETURNING``."""
        sql = self.sql
        version = 0
        for event in events:
            async with self.pool.acquire() as conn, conn.transaction():
                new_version: int = await conn.fetchval(
                    sql.upsert_head,
                    event.bounded_context,
                    event.aggregate_type,
                    event.aggregate_id,
                    1,
                )
                if exact and new_version != version + 1:
                    raise RawConflictError(f"expected version {version}, head is {new_version - 1}")
                # The position comes back, as an event store must return it.
                await conn.fetchval(sql.insert_event_returning, *raw_row(event, new_version))
            version = new_version

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """Per batch, in a transaction: head upsert, then ``executemany`` of the rows."""
        sql = self.sql
        for batch in batches:
            first = batch[0]
            count = len(batch)
            async with self.pool.acquire() as conn, conn.transaction():
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

    async def read_all(self, page: int) -> int:
        """The whole log, one transaction per page: ``conn.fetch``, records as they come."""
        position = 0
        total = 0
        while True:
            async with self.pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(self.sql.read_page, position, page)
            if not rows:
                return total
            position = rows[-1][0]
            total += len(rows)

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                self.sql.read_stream, bounded_context, aggregate_type, aggregate_id
            )
        return len(rows)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Proxy]:
        """A pooled connection, held for a whole catch-up (as the library's lease is)."""
        async with self.pool.acquire() as conn:
            yield conn

    async def projection_batch(
        self, conn: Proxy, name: str, batch: int, upsert: bool, seen: Seen | None
    ) -> int:
        """See :meth:`bench.common.RawBatches.projection_batch`."""
        sql = self.sql
        async with conn.transaction():
            position: int | None = await conn.fetchval(sql.get_checkpoint, name)
            rows = await conn.fetch(sql.read_page, position or 0, batch)
            if not rows:
                return 0
            for row in rows:
                if upsert:
                    await self.read_model.upsert(conn, row[3], row[0])
                if seen is not None:
                    seen(row[3])
            await conn.execute(sql.update_checkpoint, name, rows[-1][0])
        return len(rows)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """See :meth:`bench.common.StoreSide.catch_up`."""
        return await raw_catch_up(self, projection_name, batch, upsert)

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """See :meth:`bench.common.FollowingSide.follow`."""
        await raw_follow(self, projection_name, seen)


class PostgresTarget:
    """PostgreSQL opened for a run; see :class:`bench.common.Target`.

    Args:
        url: The database's URL.
        facts: The server's version and settings.
        notes: Why sides are missing, if any are.
        sides: The sides opened.
        tables: Each side's tables, its events table first.
        admin: A separate connection for resets and counts.
        configs: The library-schema tables of the library and same-SQL sides.
    """

    name = "PostgreSQL"

    def __init__(
        self,
        url: str,
        facts: list[str],
        notes: list[str],
        sides: Mapping[Side, StoreSide],
        tables: Mapping[Side, Sequence[str]],
        admin: Conn,
        configs: Mapping[Side, StoreConfig],
    ) -> None:
        self.url = url
        self.facts = facts
        self.notes = notes
        self.sides = sides
        self.tables = tables
        self.configs = configs
        self._admin = admin
        self._checkpoint = True

    async def reset(self, side: Side) -> None:
        """Empty ``side``'s tables and flush dirty pages, so that each round starts alike."""
        await self._admin.execute(f"TRUNCATE {', '.join(self.tables[side])} RESTART IDENTITY")
        if self._checkpoint:
            try:
                await self._admin.execute("CHECKPOINT")
            except asyncpg.InsufficientPrivilegeError:
                self._checkpoint = False  # needs superuser or pg_checkpoint; rounds still reset

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        value: int = await self._admin.fetchval(f"SELECT count(*) FROM {self.tables[side][0]}")
        return value


def raw_dsn(url: str) -> str:
    """``url`` in the form asyncpg accepts (without a SQLAlchemy ``+asyncpg`` suffix)."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def server_facts(admin: Conn) -> list[str]:
    """The server's version and the settings that change write throughput."""
    server: str = await admin.fetchval("SHOW server_version")
    settings = []
    for name in ("fsync", "synchronous_commit", "wal_sync_method", "shared_buffers"):
        settings.append(f"{name}={await admin.fetchval(f'SHOW {name}')}")
    return [f"server: PostgreSQL {server} ({', '.join(settings)}), on this machine"]


async def drop_tables(url: str, prefix: str) -> list[str]:
    """Drop every table of the current schema, and every schema, named ``prefix...``.

    Uses a connection of its own, so that it works whatever state the run left.
    """
    admin: Conn = await asyncpg.connect(raw_dsn(url), timeout=10)
    try:
        schemas: list[str] = [
            row[0]
            for row in await admin.fetch(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", prefix
            )
        ]
        for name in schemas:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
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
        return schemas + names
    finally:
        await admin.close()


@asynccontextmanager
async def open_target(
    url: str, sizes: Sizes, prefix: str, sides: Collection[Side] | None = None
) -> AsyncIterator[PostgresTarget]:
    """Make the sides' tables (named ``prefix...``), open their pools, yield the target.

    Args:
        url: The database.
        sizes: ``writers`` is every side's pool size.
        prefix: The start of every table (and schema) name the run makes.
        sides: The sides to open (default: all of :data:`bench.sides.SIDE_SPECS`).

    Every table and schema starting with ``prefix`` is dropped on the way out, also on
    errors and cancellation (Ctrl-C).
    """
    wanted = list(SIDE_SPECS) if sides is None else list(sides)
    configs = side_configs(prefix)
    size = sizes.writers
    admin: Conn = await asyncpg.connect(raw_dsn(url))  # nothing to drop if this fails
    try:
        try:
            facts = await server_facts(admin)
            opened: dict[Side, StoreSide] = {}
            tables: dict[Side, list[str]] = {}
            notes: list[str] = []
            async with AsyncExitStack() as stack:
                library = configs["library"]
                if any(SIDE_SPECS[name].on_library is not None for name in wanted):
                    db = await stack.enter_async_context(
                        pupsourcing_async.connect(
                            url, store_config=library, min_size=size, max_size=size
                        )
                    )
                    await db.migrate()
                    model = PgReadModel(read_model_table(prefix, "library"))
                    await admin.execute(model.create)
                    for name, side in library_sides(db, model, wanted).items():
                        opened[name] = side
                        tables[name] = [library.events_table, library.aggregate_heads_table]
                if "raw" in wanted:
                    # The same-SQL side's tables come from the library's own migration.
                    raw = configs["raw"]
                    async with pupsourcing_async.connect(
                        url, store_config=raw, max_size=1
                    ) as migrator:
                        await migrator.migrate()
                    pool = await stack.enter_async_context(
                        asyncpg.create_pool(raw_dsn(url), min_size=size, max_size=size)
                    )
                    model = PgReadModel(read_model_table(prefix, "raw"))
                    await admin.execute(model.create)
                    opened["raw"] = RawPostgres(pool, RawSQL(raw), model)
                    tables["raw"] = [raw.events_table, raw.aggregate_heads_table]
                if "minimal" in wanted:
                    minimal = MinimalTables(prefix)
                    for statement in minimal_schema(minimal):
                        await admin.execute(statement)
                    opened["minimal"] = await stack.enter_async_context(
                        minimal_postgres.connect(raw_dsn(url), minimal, size)
                    )
                    tables["minimal"] = [minimal.events]
                if "eventsourcing" in wanted:
                    reason = peer_eventsourcing.unavailable("postgres")
                    if reason is not None:
                        notes.append(reason)
                    else:
                        schema = peer_eventsourcing.postgres_schema(prefix)
                        await admin.execute(f'CREATE SCHEMA "{schema}"')
                        opened["eventsourcing"] = await stack.enter_async_context(
                            peer_eventsourcing.open_postgres(url, prefix, size)
                        )
                        tables["eventsourcing"] = [f"{schema}.{peer_eventsourcing.EVENTS_TABLE}"]
                ordered = {name: opened[name] for name in SIDE_SPECS if name in opened}
                yield PostgresTarget(url, facts, notes, ordered, tables, admin, configs)
        finally:
            await admin.close()
    finally:
        await cleanup(drop_tables(url, prefix), f"PostgreSQL tables {prefix}*")


async def fill_log(url: str, config: StoreConfig, events: int, aggregates: int) -> None:
    """Append ``events`` events round-robin over ``aggregates`` aggregates, server-side.

    For the scale runs: one ``INSERT ... SELECT FROM generate_series`` per 100,000 events
    (about 200 bytes of JSON payload and metadata each, like the benchmark's events), the
    aggregates' head rows to match, then ``ANALYZE``. The tables must be empty.
    """
    conn: Conn = await asyncpg.connect(raw_dsn(url))
    try:
        chunk = 100_000
        for first in range(0, events, chunk):
            await conn.execute(
                f"""
INSERT INTO {config.events_table} ({COLUMNS})
SELECT 'Bench', 'Account', 'fill-' || (g % $3), g / $3 + 1, gen_random_uuid(),
    'MoneyDeposited', 1,
    convert_to(json_build_object('account_id', 'acc-' || g, 'amount_cents', 100 + g % 1000,
        'currency', 'EUR', 'memo', 'deposit ' || repeat('x', 24), 'seq', g)::text, 'UTF8'),
    NULL, 'corr-fill', NULL, '{{"source":"store_bench","user_id":"u-42"}}'::jsonb, now()
FROM generate_series($1::bigint, $2::bigint) AS g ORDER BY g""",
                first,
                min(first + chunk, events) - 1,
                aggregates,
            )
        await conn.execute(
            f"""
INSERT INTO {config.aggregate_heads_table}
    (bounded_context, aggregate_type, aggregate_id, aggregate_version, updated_at)
SELECT bounded_context, aggregate_type, aggregate_id, max(aggregate_version), now()
FROM {config.events_table} GROUP BY 1, 2, 3"""
        )
        for table in (config.events_table, config.aggregate_heads_table):
            await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()
