"""MySQL/MariaDB: the library's store against hand-written aiomysql doing the same SQL work.

The raw side is what a careful hand-written aiomysql event store sends:

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

The raw side does not register appends in the in-flight table: that registration is
what the library adds for gap-safe reading, and part of what this benchmark measures.

Both sides have aiomysql pools of the same size, ``autocommit=False``, ``utf8mb4``, and
the library's session settings (``SESSION_SETUP``: READ COMMITTED, time zone UTC); each
side has its own tables, made by the library's migration. Resets ``TRUNCATE`` the side's
tables, which also restarts positions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiomysql

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.adapters.mysql import SESSION_SETUP
from pupsourcing_async.migrations import in_flight_table

from .common import (
    SIDES,
    LibrarySide,
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

__all__ = ["DEFAULT_URL", "MysqlReadModel", "MysqlTarget", "RawMysql", "open_target"]

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)


class Cursor(Protocol):
    """The part of ``aiomysql.Cursor`` used here."""

    @property
    def lastrowid(self) -> int:
        """The insert id of the last statement (``LAST_INSERT_ID(expr)`` sets it too)."""

    async def execute(self, query: str, args: Sequence[object] | None = None) -> int:
        """Run one statement; return the affected row count."""

    async def executemany(self, query: str, args: Sequence[Sequence[object]]) -> int | None:
        """Run an ``INSERT ... VALUES`` for many rows, as multi-row statements."""

    async def fetchall(self) -> Sequence[tuple[Any, ...]]:
        """The rows of the last statement."""


class Connection(Protocol):
    """The part of ``aiomysql.Connection`` used here."""

    def cursor(self) -> AbstractAsyncContextManager[Cursor]:
        """A new cursor, closed when the block ends."""

    async def commit(self) -> None:
        """COMMIT."""

    async def rollback(self) -> None:
        """ROLLBACK."""

    def close(self) -> None:
        """Close the socket at once (the server rolls back what is open)."""


class Pool(Protocol):
    """The part of ``aiomysql.Pool`` used here."""

    def acquire(self) -> AbstractAsyncContextManager[Connection]:
        """A pooled connection until the block ends."""


class RawSQL:
    """The raw side's statements, for one set of tables.

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
    """The raw side: hand-written aiomysql on its own pool and tables.

    Args:
        pool: The raw side's pool, the same size and session settings as the library's.
        sql: The statements, on the raw side's tables.
        read_model: The raw side's read model.
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

    async def append_batches(self, batches: Sequence[Sequence[es.Event]], exact: bool) -> None:
        """Per batch: head upsert, ``executemany`` (one multi-row INSERT), ``COMMIT``."""
        sql = self.sql
        version = 0
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
        """See :meth:`bench.common.StoreSide.follow`."""
        await raw_follow(self, projection_name, seen)


class MysqlTarget:
    """MySQL or MariaDB opened for a run; see :class:`bench.common.Target`.

    Args:
        name: ``MariaDB`` or ``MySQL``.
        url: The database's URL.
        facts: The server's version and settings.
        sides: Both sides.
        admin: A separate autocommit connection for resets and counts.
        configs: Each side's tables.
    """

    def __init__(
        self,
        name: str,
        url: str,
        facts: list[str],
        sides: Mapping[Side, StoreSide],
        admin: Connection,
        configs: Mapping[Side, StoreConfig],
    ) -> None:
        self.name = name
        self.url = url
        self.facts = facts
        self.sides = sides
        self.configs = configs
        self._admin = admin

    async def reset(self, side: Side) -> None:
        """``TRUNCATE`` ``side``'s tables (the library's in-flight table too)."""
        config = self.configs[side]
        tables = [config.events_table, config.aggregate_heads_table]
        if side == "library":
            tables.append(in_flight_table(config))
        async with self._admin.cursor() as cursor:
            for table in tables:
                await cursor.execute(f"TRUNCATE TABLE {table}")

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        async with self._admin.cursor() as cursor:
            await cursor.execute(f"SELECT COUNT(*) FROM {self.configs[side].events_table}")
            rows = await cursor.fetchall()
        return int(rows[0][0])


def connect_options(url: str) -> dict[str, Any]:
    """aiomysql's connection arguments for ``mysql://user:password@host:port/db``."""
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mysql+aiomysql", "mariadb", "mariadb+aiomysql"):
        raise ValueError(f"not a MySQL URL: {parts.scheme}://...")
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": parts.path.lstrip("/") or None,
        "charset": "utf8mb4",
    }


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
        f"both pools' sessions: {SESSION_SETUP}",
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
async def open_target(url: str, sizes: Sizes, prefix: str) -> AsyncIterator[MysqlTarget]:
    """Migrate both sides' tables (named ``prefix...``), open both pools, yield the target.

    Every table starting with ``prefix`` is dropped on the way out, also on errors and
    cancellation (Ctrl-C).
    """
    configs = side_configs(prefix)
    admin = await _admin_connection(url)  # nothing to drop if this fails
    try:
        pool: Any = None
        try:
            name, facts = await server_facts(admin)
            async with pupsourcing_async.connect(
                url, store_config=configs["raw"], max_size=1
            ) as migrator:
                await migrator.migrate()
            async with pupsourcing_async.connect(
                url,
                store_config=configs["library"],
                min_size=sizes.writers,
                max_size=sizes.writers,
            ) as db:
                await db.migrate()
                # The same options as the library's pool (see MysqlBackend.connect).
                pool = await aiomysql.create_pool(
                    minsize=sizes.writers,
                    maxsize=sizes.writers,
                    connect_timeout=10.0,
                    autocommit=False,
                    init_command=SESSION_SETUP,
                    **connect_options(url),
                )
                models = {side: MysqlReadModel(read_model_table(prefix, side)) for side in SIDES}
                async with admin.cursor() as cursor:
                    for model in models.values():
                        await cursor.execute(model.create)
                sides: dict[Side, StoreSide] = {
                    "library": LibrarySide(db, models["library"]),
                    "raw": RawMysql(pool, RawSQL(configs["raw"]), models["raw"]),
                }
                yield MysqlTarget(name, url, facts, sides, admin, configs)
        finally:
            if pool is not None:
                pool.close()
                await pool.wait_closed()
            admin.close()
    finally:
        await cleanup(drop_tables(url, prefix), f"MySQL tables {prefix}*")


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
