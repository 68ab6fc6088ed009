"""MySQL/MariaDB: the target that opens every side, and the same-SQL side (``raw``).

:func:`open_target` opens the library, this module's same-SQL side and the minimal
baseline (:mod:`bench.minimal_mysql`), each on its own tables. eventsourcing has no MySQL
recorder, so the target notes that it does not run here.

The same-SQL side is hand-written aiomysql that sends the library's own SQL work, so it
shows what the library costs over its SQL:

- appends, per transaction on a pooled connection: upsert the aggregate's head row
  (``INSERT ... ON DUPLICATE KEY UPDATE aggregate_version =
  LAST_INSERT_ID(aggregate_version + VALUES(aggregate_version))``: the new version comes
  back as the insert id, or is the appended count when the row was inserted), then
  ``INSERT`` the event (its position is ``cursor.lastrowid``) or ``executemany`` the rows
  (one multi-row ``INSERT``; ``lastrowid`` is the first position), then ``COMMIT``;
- reads, one transaction per page or stream: ``SELECT`` every event column, ``fetchall``
  the tuples, ``COMMIT``;
- projections (W4, W6), one transaction per batch on one held connection: the
  checkpoint, the next page, per event the read-model upsert (W4's upsert handler, a
  cursor each, as the library's handler does), the checkpoint upsert, ``COMMIT``.

The same-SQL side does not register appends in the in-flight table: that registration
is what the library adds for gap-safe reading, and part of what this benchmark measures.
The library's migration gives the events table a trigger that registers every insert of
a session that has not registered itself; the same-SQL side's sessions mark themselves
registered (``SAME_SQL_SESSION``), so the trigger only checks the mark.

Every side has a pool of ``Sizes.writers`` connections with ``utf8mb4`` and the
library's session settings (``SESSION_SETUP``: READ COMMITTED, time zone UTC; see
:mod:`bench.mysql_driver`), ``autocommit=False`` here; the library's and the same-SQL
side's tables are made by the library's migration. Resets ``TRUNCATE`` the side's
tables, which also restarts positions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiomysql

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.adapters.mysql import SESSION_SETUP
from pupsourcing_async.adapters.mysql.sql import REGISTERED
from pupsourcing_async.migrations import in_flight_table

from . import minimal_mysql, peer_eventsourcing
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
from .minimal_mysql import schema as minimal_schema
from .mysql_driver import Connection, Cursor, Pool, close_pool, connect_options, create_pool
from .sides import SIDE_SPECS, library_sides

__all__ = ["DEFAULT_URL", "MysqlReadModel", "MysqlTarget", "RawMysql", "open_target"]

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"

#: The same-SQL side's session setup: the library's, and the mark that tells the events
#: table's registration trigger this session needs no registration.
SAME_SQL_SESSION = f"{SESSION_SETUP}; SET {REGISTERED} = 1"

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
        self.upsert_head = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (%s, %s, %s, %s, CURRENT_TIMESTAMP(6)) "
            "ON DUPLICATE KEY UPDATE "
            "aggregate_version = LAST_INSERT_ID(aggregate_version + VALUES(aggregate_version)), "
            "updated_at = VALUES(updated_at)"
        )
        placeholders = ", ".join(["%s"] * 13)
        self.insert_event = f"INSERT INTO {events} ({COLUMNS}) VALUES ({placeholders})"
        self.read_page = (
            f"SELECT global_position, {COLUMNS} FROM {events} WHERE global_position > %s "
            "ORDER BY global_position LIMIT %s"
        )
        self.read_stream = (
            f"SELECT global_position, {COLUMNS} FROM {events} WHERE bounded_context = %s "
            "AND aggregate_type = %s AND aggregate_id = %s ORDER BY aggregate_version"
        )
        checkpoints = config.checkpoints_table
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = %s"
        )
        self.update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE "
            "last_global_position = VALUES(last_global_position), "
            "updated_at = VALUES(updated_at)"
        )


class MysqlReadModel:
    """W4's read model on MySQL/MariaDB: one row per aggregate, upserted per event.

    Args:
        table: The read-model table.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (aggregate_id VARCHAR(255) PRIMARY KEY, "
            "events BIGINT NOT NULL, last_position BIGINT NOT NULL)"
        )
        self.sql = (
            f"INSERT INTO {table} (aggregate_id, events, last_position) VALUES (%s, 1, %s) "
            "ON DUPLICATE KEY UPDATE events = events + 1, last_position = VALUES(last_position)"
        )

    async def upsert(self, tx: Any, aggregate_id: str, position: int) -> None:
        """One cursor and one ``execute`` on ``tx`` (an aiomysql connection)."""
        async with tx.cursor() as cursor:
            await cursor.execute(self.sql, (aggregate_id, position))


def raw_row(event: es.Event, version: int) -> tuple[object, ...]:
    """The INSERT arguments of ``event`` at aggregate ``version`` (``COLUMNS`` order)."""
    return (
        event.bounded_context,
        event.aggregate_type,
        event.aggregate_id,
        version,
        event.event_id.bytes,
        event.event_type,
        event.event_version,
        event.payload,
        event.trace_id,
        event.correlation_id,
        event.causation_id,
        None if event.metadata is None else event.metadata.decode(),
        event.created_at.astimezone(UTC).replace(tzinfo=None),
    )


async def upsert_head(cursor: Cursor, sql: RawSQL, event: es.Event, count: int) -> int:
    """Move the aggregate's head by ``count``; return its new version (one round trip)."""
    affected = await cursor.execute(
        sql.upsert_head, (event.bounded_context, event.aggregate_type, event.aggregate_id, count)
    )
    # 1 row affected: inserted at ``count``; 2: updated, the new version is the insert id.
    return count if affected == 1 else cursor.lastrowid


class RawMysql:
    """The same-SQL side: hand-written aiomysql on its own pool and tables.

    Args:
        pool: The same-SQL side's pool, the same size and session settings as the library's.
        sql: The statements, on the same-SQL side's tables.
        read_model: The same-SQL side's read model.
    """

    def __init__(self, pool: Pool, sql: RawSQL, read_model: MysqlReadModel) -> None:
        self.pool = pool
        self.sql = sql
        self.read_model = read_model

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """Per event: head upsert, ``INSERT`` (position = ``lastrowid``), ``COMMIT``."""
        sql = self.sql
        version = 0
        for event in events:
            async with self.pool.acquire() as conn:
                try:
                    async with conn.cursor() as cursor:
                        new_version = await upsert_head(cursor, sql, event, 1)
                        if exact and new_version != version + 1:
                            raise RawConflictError(
                                f"expected version {version}, head is {new_version - 1}"
                            )
                        await cursor.execute(sql.insert_event, raw_row(event, new_version))
                        if not cursor.lastrowid:
                            raise RuntimeError("the INSERT returned no position")
                    await conn.commit()
                except Exception:
                    await conn.rollback()
                    raise
            version = new_version

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """Per batch: head upsert, ``executemany`` (one multi-row INSERT), ``COMMIT``."""
        sql = self.sql
        for batch in batches:
            count = len(batch)
            async with self.pool.acquire() as conn:
                try:
                    async with conn.cursor() as cursor:
                        head = await upsert_head(cursor, sql, batch[0], count)
                        base = head - count
                        if exact and base != version:
                            raise RawConflictError(f"expected version {version}, head is {base}")
                        await cursor.executemany(
                            sql.insert_event,
                            [raw_row(event, base + i) for i, event in enumerate(batch, 1)],
                        )
                        if not cursor.lastrowid:
                            raise RuntimeError("the INSERT returned no position")
                    await conn.commit()
                except Exception:
                    await conn.rollback()
                    raise
            version = head

    async def read_all(self, page: int) -> int:
        """The whole log, one transaction per page, rows as tuples."""
        position = 0
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                async with conn.cursor() as cursor:
                    await cursor.execute(self.sql.read_page, (position, page))
                    rows = await cursor.fetchall()
                await conn.commit()
            if not rows:
                return total
            position = rows[-1][0]
            total += len(rows)

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, in one transaction."""
        async with self.pool.acquire() as conn:
            async with conn.cursor() as cursor:
                await cursor.execute(
                    self.sql.read_stream, (bounded_context, aggregate_type, aggregate_id)
                )
                rows = await cursor.fetchall()
            await conn.commit()
        return len(rows)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection held for a whole catch-up or follow; closed, not reused,
        if the block ends in an error or a cancellation (as the library does)."""
        async with self.pool.acquire() as conn:
            clean = False
            try:
                yield conn
                clean = True
            finally:
                if not clean:
                    conn.close()

    async def projection_batch(
        self, conn: Connection, name: str, batch: int, upsert: bool, seen: Seen | None
    ) -> int:
        """See :meth:`bench.common.RawBatches.projection_batch`."""
        sql = self.sql
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql.get_checkpoint, (name,))
                found = await cursor.fetchall()
                await cursor.execute(sql.read_page, (int(found[0][0]) if found else 0, batch))
                rows = await cursor.fetchall()
                for row in rows:
                    if upsert:
                        await self.read_model.upsert(conn, row[3], row[0])
                    if seen is not None:
                        seen(row[3])
                if rows:
                    now = datetime.now(UTC).replace(tzinfo=None)
                    await cursor.execute(sql.update_checkpoint, (name, rows[-1][0], now))
            await conn.commit()
        except Exception:
            await conn.rollback()
            raise
        return len(rows)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """See :meth:`bench.common.StoreSide.catch_up`."""
        return await raw_catch_up(self, projection_name, batch, upsert)

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """See :meth:`bench.common.FollowingSide.follow`."""
        await raw_follow(self, projection_name, seen)


class MysqlTarget:
    """MySQL or MariaDB opened for a run; see :class:`bench.common.Target`.

    Args:
        name: ``MariaDB`` or ``MySQL``.
        url: The database's URL.
        facts: The server's version and settings.
        notes: Why sides are missing.
        sides: The sides opened.
        tables: Each side's tables, its events table first.
        admin: A separate autocommit connection for resets and counts.
        configs: The library-schema tables of the library and same-SQL sides.
    """

    def __init__(
        self,
        name: str,
        url: str,
        facts: list[str],
        notes: list[str],
        sides: Mapping[Side, StoreSide],
        tables: Mapping[Side, Sequence[str]],
        admin: Connection,
        configs: Mapping[Side, StoreConfig],
    ) -> None:
        self.name = name
        self.url = url
        self.facts = facts
        self.notes = notes
        self.sides = sides
        self.tables = tables
        self.configs = configs
        self._admin = admin

    async def reset(self, side: Side) -> None:
        """``TRUNCATE`` ``side``'s tables, which restarts positions."""
        async with self._admin.cursor() as cursor:
            for table in self.tables[side]:
                await cursor.execute(f"TRUNCATE TABLE {table}")

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        async with self._admin.cursor() as cursor:
            await cursor.execute(f"SELECT COUNT(*) FROM {self.tables[side][0]}")
            rows = await cursor.fetchall()
        return int(rows[0][0])


async def _admin_connection(url: str) -> Any:
    connection = await aiomysql.connect(autocommit=True, connect_timeout=10, **connect_options(url))
    async with connection.cursor() as cursor:
        # Never wait forever on a table lock a stray transaction holds.
        await cursor.execute("SET SESSION lock_wait_timeout = 30")
    return connection


async def _query(connection: Connection, sql: str) -> Sequence[tuple[Any, ...]]:
    async with connection.cursor() as cursor:
        await cursor.execute(sql)
        return await cursor.fetchall()


async def server_facts(admin: Connection) -> tuple[str, list[str]]:
    """The server's name, and its version and the settings that change throughput."""
    version = str((await _query(admin, "SELECT VERSION()"))[0][0])
    names = (
        "innodb_flush_log_at_trx_commit",
        "sync_binlog",
        "log_bin",
        "innodb_buffer_pool_size",
        "innodb_autoinc_lock_mode",
    )
    values = (await _query(admin, "SELECT " + ", ".join(f"@@{name}" for name in names)))[0]
    settings = ", ".join(f"{name}={value}" for name, value in zip(names, values, strict=True))
    name = "MariaDB" if "mariadb" in version.lower() else "MySQL"
    return name, [
        f"server: {name} {version} ({settings}), on this machine",
        f"every pool's sessions: {SESSION_SETUP} (same-SQL: also SET {REGISTERED} = 1)",
    ]


async def drop_tables(url: str, prefix: str) -> list[str]:
    """Drop every table of the database whose name starts with ``prefix``.

    Uses a connection of its own, so that it works whatever state the run left.
    """
    admin = await _admin_connection(url)
    try:
        async with admin.cursor() as cursor:
            await cursor.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND LEFT(table_name, %s) = %s",
                (len(prefix), prefix),
            )
            names = [str(row[0]) for row in await cursor.fetchall()]
            if names:
                await cursor.execute(
                    "DROP TABLE IF EXISTS " + ", ".join(f"`{name}`" for name in names)
                )
        return names
    finally:
        admin.close()


@asynccontextmanager
async def open_target(
    url: str, sizes: Sizes, prefix: str, sides: Collection[Side] | None = None
) -> AsyncIterator[MysqlTarget]:
    """Make the sides' tables (named ``prefix...``), open their pools, yield the target.

    Args:
        url: The database.
        sizes: ``writers`` is every side's pool size.
        prefix: The start of every table name the run makes.
        sides: The sides to open (default: all of :data:`bench.sides.SIDE_SPECS`).

    Every table starting with ``prefix`` is dropped on the way out, also on errors and
    cancellation (Ctrl-C).
    """
    wanted = list(SIDE_SPECS) if sides is None else list(sides)
    configs = side_configs(prefix)
    size = sizes.writers
    admin = await _admin_connection(url)  # nothing to drop if this fails
    try:
        try:
            name, facts = await server_facts(admin)
            opened: dict[Side, StoreSide] = {}
            tables: dict[Side, list[str]] = {}
            notes: list[str] = []
            async with AsyncExitStack() as stack:
                library = configs["library"]
                if any(SIDE_SPECS[side].on_library is not None for side in wanted):
                    db = await stack.enter_async_context(
                        pupsourcing_async.connect(
                            url, store_config=library, min_size=size, max_size=size
                        )
                    )
                    await db.migrate()
                    model = MysqlReadModel(read_model_table(prefix, "library"))
                    await _execute(admin, model.create)
                    for side_name, side in library_sides(db, model, wanted).items():
                        opened[side_name] = side
                        tables[side_name] = [
                            library.events_table,
                            library.aggregate_heads_table,
                            in_flight_table(library),
                        ]
                if "raw" in wanted:
                    raw = configs["raw"]
                    async with pupsourcing_async.connect(
                        url, store_config=raw, max_size=1
                    ) as migrator:
                        await migrator.migrate()
                    pool = await create_pool(
                        url, size, autocommit=False, init_command=SAME_SQL_SESSION
                    )
                    stack.push_async_callback(close_pool, pool)
                    model = MysqlReadModel(read_model_table(prefix, "raw"))
                    await _execute(admin, model.create)
                    opened["raw"] = RawMysql(pool, RawSQL(raw), model)
                    tables["raw"] = [raw.events_table, raw.aggregate_heads_table]
                if "minimal" in wanted:
                    minimal = MinimalTables(prefix)
                    for statement in minimal_schema(minimal):
                        await _execute(admin, statement)
                    opened["minimal"] = await stack.enter_async_context(
                        minimal_mysql.connect(url, minimal, size)
                    )
                    tables["minimal"] = [minimal.events]
                if "eventsourcing" in wanted:
                    notes.append(str(peer_eventsourcing.unavailable("mysql")))
                ordered = {side: opened[side] for side in SIDE_SPECS if side in opened}
                yield MysqlTarget(name, url, facts, notes, ordered, tables, admin, configs)
        finally:
            admin.close()
    finally:
        await cleanup(drop_tables(url, prefix), f"MySQL tables {prefix}*")


async def _execute(connection: Connection, statement: str) -> None:
    async with connection.cursor() as cursor:
        await cursor.execute(statement)


async def fill_log(url: str, config: StoreConfig, events: int, aggregates: int) -> None:
    """Append ``events`` events round-robin over ``aggregates`` aggregates, server-side.

    For the scale runs: one ``INSERT ... SELECT`` over a recursive counter per 100,000
    events (about 200 bytes of JSON payload and metadata each, like the benchmark's
    events), the aggregates' head rows to match, then ``ANALYZE TABLE``. The tables must
    be empty.
    """
    admin = await _admin_connection(url)
    try:
        async with admin.cursor() as cursor:
            await cursor.execute("SET time_zone = '+00:00'")
            # Both stop recursive CTEs early by default (1000 rows here), each its own way.
            version = str((await _query(admin, "SELECT VERSION()"))[0][0]).lower()
            limit = (
                "max_recursive_iterations" if "mariadb" in version else "cte_max_recursion_depth"
            )
            await cursor.execute(f"SET SESSION {limit} = 1000000")
            chunk = 100_000
            for first in range(0, events, chunk):
                last = min(first + chunk, events) - 1
                await cursor.execute(
                    f"""
INSERT INTO {config.events_table} ({COLUMNS})
WITH RECURSIVE g(n) AS (SELECT %s UNION ALL SELECT n + 1 FROM g WHERE n < %s)
SELECT 'Bench', 'Account', CONCAT('fill-', n MOD %s), n DIV %s + 1,
    UNHEX(REPLACE(UUID(), '-', '')), 'MoneyDeposited', 1,
    CAST(JSON_OBJECT('account_id', CONCAT('acc-', n), 'amount_cents', 100 + n MOD 1000,
        'currency', 'EUR', 'memo', CONCAT('deposit ', REPEAT('x', 24)), 'seq', n) AS BINARY),
    NULL, 'corr-fill', NULL, '{{"source":"store_bench","user_id":"u-42"}}',
    UTC_TIMESTAMP(6)
FROM g ORDER BY n""",
                    (first, last, aggregates, aggregates),
                )
            await cursor.execute(
                f"""
INSERT INTO {config.aggregate_heads_table}
    (bounded_context, aggregate_type, aggregate_id, aggregate_version, updated_at)
SELECT bounded_context, aggregate_type, aggregate_id, MAX(aggregate_version), UTC_TIMESTAMP(6)
FROM {config.events_table} GROUP BY bounded_context, aggregate_type, aggregate_id"""
            )
            for table in (config.events_table, config.aggregate_heads_table):
                await cursor.execute(f"ANALYZE TABLE {table}")
                await cursor.fetchall()
    finally:
        admin.close()
