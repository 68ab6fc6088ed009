"""SQLite: the target that opens every side, and the same-SQL side (``raw``).

:func:`open_target` opens the library, this module's same-SQL side and the minimal
baseline (:mod:`bench.minimal_sqlite`) on one database file, each on its own tables, and
eventsourcing (:mod:`bench.peer_eventsourcing`, when installed) on a database file of its
own beside it (its tracking table has a fixed name), attached to the admin connection.

The same-SQL side is hand-written aiosqlite that sends the library's own SQL work, so
it shows what the library costs over its SQL:

- appends, per transaction: ``BEGIN IMMEDIATE`` (take the write lock before reading the
  head, as the library does), upsert the aggregate's head row ``RETURNING
  aggregate_version``, ``INSERT`` the event (``execute_insert``: its position comes back
  in the same call) or ``executemany`` the rows (batches; no positions come back), then
  ``COMMIT``;
- reads, one transaction per page or stream: ``BEGIN`` (deferred: a reader needs no
  write lock), ``execute_fetchall`` of every event column as tuples, ``COMMIT``;
- projections (W4, W6), one transaction per batch on one held connection: ``BEGIN
  IMMEDIATE`` (the batch writes its checkpoint; the library begins every transaction so),
  the checkpoint, the next page, per event the read-model upsert (W4's upsert handler),
  the checkpoint upsert, ``COMMIT``.

Every side opens one connection per writer (``Sizes.writers`` each; the hand-written
sides' are handed out last in, first out, see :mod:`bench.sqlite_pool`), in WAL mode
with the same busy timeout; the library's and the same-SQL side's tables are made by the
library's migration. Timestamps are stored in the library's text format by every
hand-written side, so reads parse the same data. Resets delete the side's rows, restart
its positions and checkpoint the WAL (``wal_checkpoint(TRUNCATE)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiosqlite

import pupsourcing_async
from pupsourcing_async import StoreConfig, es

from . import minimal_sqlite, peer_eventsourcing
from .common import (
    MinimalTables,
    RawConflictError,
    Seen,
    Side,
    Sizes,
    StoreSide,
    raw_catch_up,
    raw_follow,
    read_model_table,
    side_configs,
)
from .minimal_sqlite import schema as minimal_schema
from .sides import SIDE_SPECS, library_sides
from .sqlite_pool import BUSY_TIMEOUT, SqlitePool, open_connection

__all__ = [
    "BUSY_TIMEOUT",
    "RawSqlite",
    "SqlitePool",
    "SqliteReadModel",
    "SqliteTarget",
    "open_target",
]

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class RawSQL:
    """The same-SQL side's statements, for one set of tables.

    Args:
        config: The tables (same schema as the library's, created by its migration).
    """

    def __init__(self, config: StoreConfig) -> None:
        events, heads = config.events_table, config.aggregate_heads_table
        self.upsert_head = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) "
            "VALUES (?, ?, ?, ?, strftime('%Y-%m-%d %H:%M:%f', 'now')) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE SET "
            "aggregate_version = aggregate_version + excluded.aggregate_version, "
            "updated_at = excluded.updated_at RETURNING aggregate_version"
        )
        placeholders = ", ".join("?" * 13)
        self.insert_event = f"INSERT INTO {events} ({COLUMNS}) VALUES ({placeholders})"
        self.read_page = (
            f"SELECT global_position, {COLUMNS} FROM {events} WHERE global_position > ? "
            "ORDER BY global_position LIMIT ?"
        )
        self.read_stream = (
            f"SELECT global_position, {COLUMNS} FROM {events} WHERE bounded_context = ? "
            "AND aggregate_type = ? AND aggregate_id = ? ORDER BY aggregate_version"
        )
        checkpoints = config.checkpoints_table
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = ?"
        )
        self.update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (?, ?, ?) ON CONFLICT (projection_name) DO UPDATE SET "
            "last_global_position = excluded.last_global_position, "
            "updated_at = excluded.updated_at"
        )


class SqliteReadModel:
    """W4's read model on SQLite: one row per aggregate, upserted per event.

    Args:
        table: The read-model table.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (aggregate_id TEXT PRIMARY KEY, "
            "events INTEGER NOT NULL, last_position INTEGER NOT NULL)"
        )
        self.sql = (
            f"INSERT INTO {table} (aggregate_id, events, last_position) VALUES (?, 1, ?) "
            "ON CONFLICT (aggregate_id) DO UPDATE "
            "SET events = events + 1, last_position = excluded.last_position"
        )

    async def upsert(self, tx: Any, aggregate_id: str, position: int) -> None:
        """One ``execute`` of the upsert on ``tx`` (an aiosqlite connection)."""
        await tx.execute(self.sql, (aggregate_id, position))


def raw_row(event: es.Event, version: int) -> tuple[object, ...]:
    """The INSERT arguments of ``event`` at aggregate ``version`` (``COLUMNS`` order)."""
    return (
        event.bounded_context,
        event.aggregate_type,
        event.aggregate_id,
        version,
        str(event.event_id),
        event.event_type,
        event.event_version,
        event.payload,
        event.trace_id,
        event.correlation_id,
        event.causation_id,
        None if event.metadata is None else event.metadata.decode(),
        event.created_at.astimezone(UTC).strftime(TIMESTAMP_FORMAT),
    )


class RawSqlite:
    """The same-SQL side: hand-written aiosqlite on its own connections and tables.

    Args:
        pool: The same-SQL side's connections, as many as the library's.
        sql: The statements, on the same-SQL side's tables.
        read_model: The same-SQL side's read model.
    """

    def __init__(self, pool: SqlitePool, sql: RawSQL, read_model: SqliteReadModel) -> None:
        self.pool = pool
        self.sql = sql
        self.read_model = read_model

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """Per event: ``BEGIN IMMEDIATE``, head upsert, ``execute_insert``, ``COMMIT``."""
        sql = self.sql
        version = 0
        for event in events:
            async with self.pool.acquire() as conn:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    head = await conn.execute_fetchall(
                        sql.upsert_head,
                        (event.bounded_context, event.aggregate_type, event.aggregate_id, 1),
                    )
                    new_version: int = next(iter(head))[0]
                    if exact and new_version != version + 1:
                        raise RawConflictError(
                            f"expected version {version}, head is {new_version - 1}"
                        )
                    # The position comes back in the same call, as an event store must
                    # return it.
                    await conn.execute_insert(sql.insert_event, raw_row(event, new_version))
                except Exception:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            version = new_version

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """Per batch: ``BEGIN IMMEDIATE``, head upsert, ``executemany``, ``COMMIT``."""
        sql = self.sql
        for batch in batches:
            first = batch[0]
            count = len(batch)
            async with self.pool.acquire() as conn:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    rows = await conn.execute_fetchall(
                        sql.upsert_head,
                        (first.bounded_context, first.aggregate_type, first.aggregate_id, count),
                    )
                    head: int = next(iter(rows))[0]
                    base = head - count
                    if exact and base != version:
                        raise RawConflictError(f"expected version {version}, head is {base}")
                    await conn.executemany(
                        sql.insert_event,
                        [raw_row(event, base + i) for i, event in enumerate(batch, 1)],
                    )
                except Exception:
                    await conn.execute("ROLLBACK")
                    raise
                await conn.execute("COMMIT")
            version = head

    async def read_all(self, page: int) -> int:
        """The whole log, one deferred transaction per page, rows as tuples."""
        position = 0
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                await conn.execute("BEGIN")
                try:
                    rows = list(await conn.execute_fetchall(self.sql.read_page, (position, page)))
                finally:
                    await conn.execute("COMMIT")
            if not rows:
                return total
            position = rows[-1][0]
            total += len(rows)

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, in one deferred transaction."""
        async with self.pool.acquire() as conn:
            await conn.execute("BEGIN")
            try:
                rows = await conn.execute_fetchall(
                    self.sql.read_stream, (bounded_context, aggregate_type, aggregate_id)
                )
            finally:
                await conn.execute("COMMIT")
        return len(list(rows))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection held for a whole catch-up or follow.

        A cancelled statement still runs on the connection's thread, so a block that does
        not end cleanly queues a ``ROLLBACK`` behind it before the connection goes back.
        """
        async with self.pool.acquire() as conn:
            clean = False
            try:
                yield conn
                clean = True
            finally:
                if not clean:
                    with contextlib.suppress(sqlite3.OperationalError):
                        await asyncio.shield(conn.execute("ROLLBACK"))

    async def projection_batch(
        self, conn: aiosqlite.Connection, name: str, batch: int, upsert: bool, seen: Seen | None
    ) -> int:
        """See :meth:`bench.common.RawBatches.projection_batch`."""
        sql = self.sql
        await conn.execute("BEGIN IMMEDIATE")
        try:
            found = await conn.execute_fetchall(sql.get_checkpoint, (name,))
            position: int = next(iter(found), (0,))[0]
            rows = list(await conn.execute_fetchall(sql.read_page, (position, batch)))
            for row in rows:
                if upsert:
                    await self.read_model.upsert(conn, row[3], row[0])
                if seen is not None:
                    seen(row[3])
            if rows:
                now = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
                await conn.execute(sql.update_checkpoint, (name, rows[-1][0], now))
        except Exception:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return len(rows)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """See :meth:`bench.common.StoreSide.catch_up`."""
        return await raw_catch_up(self, projection_name, batch, upsert)

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """See :meth:`bench.common.FollowingSide.follow`."""
        await raw_follow(self, projection_name, seen)


class SqliteTarget:
    """SQLite opened for a run; see :class:`bench.common.Target`.

    Args:
        url: The database's URL (``sqlite:////absolute/path``).
        facts: The library version and settings.
        notes: Why sides are missing, if any are.
        sides: The sides opened.
        tables: Each side's tables, its events table first (eventsourcing's in the
            attached database ``es``).
        admin: A separate connection for resets and counts.
        configs: The library-schema tables of the library and same-SQL sides.
    """

    name = "SQLite"

    def __init__(
        self,
        url: str,
        facts: list[str],
        notes: list[str],
        sides: Mapping[Side, StoreSide],
        tables: Mapping[Side, Sequence[str]],
        admin: aiosqlite.Connection,
        configs: Mapping[Side, StoreConfig],
    ) -> None:
        self.url = url
        self.facts = facts
        self.notes = notes
        self.sides = sides
        self.tables = tables
        self.configs = configs
        self._admin = admin

    async def reset(self, side: Side) -> None:
        """Delete ``side``'s rows, restart its positions and empty the WAL."""
        tables = self.tables[side]
        admin = self._admin
        await admin.execute("BEGIN IMMEDIATE")
        for table in tables:
            await admin.execute(f"DELETE FROM {table}")
        marks = ", ".join("?" * len(tables))
        await admin.execute(f"DELETE FROM sqlite_sequence WHERE name IN ({marks})", tables)
        await admin.execute("COMMIT")
        await admin.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        rows = await self._admin.execute_fetchall(f"SELECT count(*) FROM {self.tables[side][0]}")
        value: int = next(iter(rows))[0]
        return value


async def _facts(connection: aiosqlite.Connection, path: str) -> list[str]:
    pragmas = []
    for name in ("journal_mode", "synchronous", "busy_timeout", "page_size"):
        rows = await connection.execute_fetchall(f"PRAGMA {name}")
        pragmas.append(f"{name}={next(iter(rows))[0]}")
    return [
        f"SQLite {sqlite3.sqlite_version} (aiosqlite {aiosqlite.__version__}), "
        f"file {path}; connections: {', '.join(pragmas)} (synchronous 2 = FULL)"
    ]


def drop_tables(path: str, prefix: str) -> None:
    """Drop every table of the file whose name starts with ``prefix``."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        names = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
                (len(prefix), prefix),
            )
        ]
        for name in names:
            connection.execute(f'DROP TABLE IF EXISTS "{name}"')
    finally:
        connection.close()


def _remove(path: str, directory: str | None) -> None:
    """Remove the benchmark's own files: its temporary directory, or a file it created."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)


def _choose_file(path: str | None) -> tuple[str, str | None, bool]:
    """The absolute database file, the temporary directory made for it (if any), and
    whether the run creates the file."""
    directory = None
    if path is None:
        directory = tempfile.mkdtemp(prefix="pupsourcing-bench-")
        path = os.path.join(directory, "bench.db")
    path = os.path.abspath(path)
    return path, directory, not os.path.exists(path)


def _peer_file(path: str, prefix: str) -> str:
    """The eventsourcing side's database file, beside ``path`` and new for this run."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}-{prefix}eventsourcing.db")


@asynccontextmanager
async def open_target(
    path: str | None, sizes: Sizes, prefix: str, sides: Collection[Side] | None = None
) -> AsyncIterator[SqliteTarget]:
    """Open ``path`` (a new temporary file when ``None``), make the sides, yield the target.

    Args:
        path: The database file.
        sizes: ``writers`` is every side's number of connections.
        prefix: The start of every table name the run makes.
        sides: The sides to open (default: all of :data:`bench.sides.SIDE_SPECS`).

    On the way out, also on errors and cancellation (Ctrl-C): a temporary directory or a
    file this run created is removed, and eventsourcing's file; in a file that existed,
    every table starting with ``prefix`` is dropped.
    """
    wanted = list(SIDE_SPECS) if sides is None else list(sides)
    path, directory, created = _choose_file(path)
    configs = side_configs(prefix)
    size = sizes.writers
    url = "sqlite:///" + path
    peer_file = _peer_file(path, prefix)
    try:
        admin = await open_connection(path)
        try:
            opened: dict[Side, StoreSide] = {}
            tables: dict[Side, list[str]] = {}
            notes: list[str] = []
            async with AsyncExitStack() as stack:
                library = configs["library"]
                if any(SIDE_SPECS[name].on_library is not None for name in wanted):
                    db = await stack.enter_async_context(
                        pupsourcing_async.connect(
                            url,
                            store_config=library,
                            min_size=size,
                            max_size=size,
                            pool_options={"busy_timeout": BUSY_TIMEOUT},
                        )
                    )
                    await db.migrate()
                    model = SqliteReadModel(read_model_table(prefix, "library"))
                    await admin.execute(model.create)
                    for name, side in library_sides(db, model, wanted).items():
                        opened[name] = side
                        tables[name] = [library.events_table, library.aggregate_heads_table]
                if "raw" in wanted:
                    raw = configs["raw"]
                    async with pupsourcing_async.connect(
                        url, store_config=raw, max_size=1
                    ) as migrator:
                        await migrator.migrate()
                    pool = SqlitePool(path, size)
                    stack.push_async_callback(pool.close)
                    await pool.open()
                    model = SqliteReadModel(read_model_table(prefix, "raw"))
                    await admin.execute(model.create)
                    opened["raw"] = RawSqlite(pool, RawSQL(raw), model)
                    tables["raw"] = [raw.events_table, raw.aggregate_heads_table]
                if "minimal" in wanted:
                    minimal = MinimalTables(prefix)
                    for statement in minimal_schema(minimal):
                        await admin.execute(statement)
                    opened["minimal"] = await stack.enter_async_context(
                        minimal_sqlite.connect(path, minimal, size)
                    )
                    tables["minimal"] = [minimal.events]
                if "eventsourcing" in wanted:
                    reason = peer_eventsourcing.unavailable("sqlite")
                    if reason is not None:
                        notes.append(reason)
                    else:
                        opened["eventsourcing"] = await stack.enter_async_context(
                            peer_eventsourcing.open_sqlite(peer_file, size, BUSY_TIMEOUT)
                        )
                        await admin.execute("ATTACH DATABASE ? AS es", (peer_file,))
                        tables["eventsourcing"] = [f"es.{peer_eventsourcing.EVENTS_TABLE}"]
                facts = await _facts(admin, path)
                ordered = {name: opened[name] for name in SIDE_SPECS if name in opened}
                yield SqliteTarget(url, facts, notes, ordered, tables, admin, configs)
        finally:
            await admin.close()
    finally:
        _remove(peer_file, None)
        if directory is not None or created:
            _remove(path, directory)
        else:
            try:
                drop_tables(path, prefix)
            except sqlite3.Error as err:
                print(
                    f"warning: could not drop SQLite tables {prefix}* in {path}: {err!r}",
                    file=sys.stderr,
                )


async def fill_log(url: str, config: StoreConfig, events: int, aggregates: int) -> None:
    """Append ``events`` events round-robin over ``aggregates`` aggregates, in SQL.

    For the scale runs: one ``INSERT ... SELECT`` over a recursive counter per 100,000
    events (about 200 bytes of JSON payload and metadata each, like the benchmark's
    events), the aggregates' head rows to match, then ``ANALYZE``. The tables must be empty.
    """
    path = url.removeprefix("sqlite:///")
    connection = await open_connection(path)
    try:
        chunk = 100_000
        uuid_text = (
            "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || "
            "substr(h, 17, 4) || '-' || substr(h, 21, 12)"
        )
        for first in range(0, events, chunk):
            last = min(first + chunk, events) - 1
            await connection.execute("BEGIN IMMEDIATE")
            await connection.execute(
                f"""
WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?),
ids(n, h) AS (SELECT n, lower(hex(randomblob(16))) FROM g)
INSERT INTO {config.events_table} ({COLUMNS})
SELECT 'Bench', 'Account', 'fill-' || (n % ?), n / ? + 1, {uuid_text}, 'MoneyDeposited', 1,
    CAST(json_object('account_id', 'acc-' || n, 'amount_cents', 100 + n % 1000,
        'currency', 'EUR', 'memo', 'deposit ' || printf('%.24c', 'x'), 'seq', n) AS BLOB),
    NULL, 'corr-fill', NULL, '{{"source":"store_bench","user_id":"u-42"}}',
    strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM ids ORDER BY n""",
                (first, last, aggregates, aggregates),
            )
            await connection.execute("COMMIT")
        await connection.execute("BEGIN IMMEDIATE")
        await connection.execute(
            f"""
INSERT INTO {config.aggregate_heads_table}
    (bounded_context, aggregate_type, aggregate_id, aggregate_version, updated_at)
SELECT bounded_context, aggregate_type, aggregate_id, max(aggregate_version),
    strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM {config.events_table} GROUP BY 1, 2, 3"""
        )
        await connection.execute("COMMIT")
        await connection.execute("ANALYZE")
        await connection.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await connection.close()
