"""SQLite: the library's store against hand-written aiosqlite doing the same SQL work.

The raw side is what a careful hand-written aiosqlite event store sends:

- appends, per transaction: ``BEGIN IMMEDIATE`` (take the write lock before reading the
  head, as the library does), upsert the aggregate's head row ``RETURNING
  aggregate_version``, ``INSERT`` the event (``execute_insert``: its position comes back
  in the same call) or ``executemany`` the rows (batches; no positions come back), then
  ``COMMIT``;
- reads, one transaction per page or stream: ``BEGIN`` (deferred: a reader needs no
  write lock), ``execute_fetchall`` of every event column as tuples, ``COMMIT``.

Both sides open one connection per writer (``Sizes.writers`` each, handed out last in,
first out), in WAL mode with the same busy timeout, on one database file; each side has
its own tables, made by the library's migration. Timestamps are stored in the library's
text format on both sides, so reads parse the same data. Resets delete the side's rows,
restart its positions and checkpoint the WAL (``wal_checkpoint(TRUNCATE)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC

import aiosqlite

import pupsourcing_async
from pupsourcing_async import StoreConfig, es

from .common import SIDES, LibrarySide, RawConflictError, Side, Sizes, StoreSide, side_configs

__all__ = ["BUSY_TIMEOUT", "RawSqlite", "SqlitePool", "SqliteTarget", "open_target"]

#: Seconds a writer waits for the write lock; given to the library and the raw side alike.
BUSY_TIMEOUT = 10.0

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


class RawSQL:
    """The raw side's statements, for one set of tables.

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


async def open_connection(path: str) -> aiosqlite.Connection:
    """A connection as the library opens its own: autocommit, busy timeout, WAL."""
    connection = await aiosqlite.connect(path, isolation_level=None)
    await connection.execute_fetchall(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    await connection.execute_fetchall("PRAGMA journal_mode = WAL")
    return connection


class SqlitePool:
    """``size`` connections (each runs its own thread), handed out last in, first out.

    Args:
        path: The database file.
        size: How many connections.
    """

    def __init__(self, path: str, size: int) -> None:
        self._path = path
        self._size = size
        self._idle: list[aiosqlite.Connection] = []
        self._all: list[aiosqlite.Connection] = []
        self._free = asyncio.Semaphore(size)

    async def open(self) -> None:
        """Open every connection."""
        for _ in range(self._size):
            connection = await open_connection(self._path)
            self._all.append(connection)
            self._idle.append(connection)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection of one's own until the block ends."""
        async with self._free:
            connection = self._idle.pop()
            try:
                yield connection
            finally:
                self._idle.append(connection)

    async def close(self) -> None:
        """Close every connection."""
        for connection in self._all:
            await connection.close()
        self._all.clear()
        self._idle.clear()


class RawSqlite:
    """The raw side: hand-written aiosqlite on its own connections and tables.

    Args:
        pool: The raw side's connections, as many as the library's.
        sql: The statements, on the raw side's tables.
    """

    def __init__(self, pool: SqlitePool, sql: RawSQL) -> None:
        self.pool = pool
        self.sql = sql

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

    async def append_batches(self, batches: Sequence[Sequence[es.Event]], exact: bool) -> None:
        """Per batch: ``BEGIN IMMEDIATE``, head upsert, ``executemany``, ``COMMIT``."""
        sql = self.sql
        version = 0
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


class SqliteTarget:
    """SQLite opened for a run; see :class:`bench.common.Target`.

    Args:
        facts: The library version and settings.
        sides: Both sides.
        admin: A separate connection for resets and counts.
        configs: Each side's tables.
    """

    name = "SQLite"

    def __init__(
        self,
        facts: list[str],
        sides: Mapping[Side, StoreSide],
        admin: aiosqlite.Connection,
        configs: Mapping[Side, StoreConfig],
    ) -> None:
        self.facts = facts
        self.sides = sides
        self._admin = admin
        self._configs = configs

    async def reset(self, side: Side) -> None:
        """Delete ``side``'s rows, restart its positions and empty the WAL."""
        config = self._configs[side]
        admin = self._admin
        await admin.execute("BEGIN IMMEDIATE")
        await admin.execute(f"DELETE FROM {config.events_table}")
        await admin.execute(f"DELETE FROM {config.aggregate_heads_table}")
        await admin.execute("DELETE FROM sqlite_sequence WHERE name = ?", (config.events_table,))
        await admin.execute("COMMIT")
        await admin.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def count(self, side: Side) -> int:
        """How many events ``side``'s table holds."""
        rows = await self._admin.execute_fetchall(
            f"SELECT count(*) FROM {self._configs[side].events_table}"
        )
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


@asynccontextmanager
async def open_target(path: str | None, sizes: Sizes, prefix: str) -> AsyncIterator[SqliteTarget]:
    """Open ``path`` (a new temporary file when ``None``), migrate, yield the target.

    On the way out, also on errors and cancellation (Ctrl-C): a temporary directory or a
    file this run created is removed; in a file that existed, every table starting with
    ``prefix`` is dropped.
    """
    path, directory, created = _choose_file(path)
    configs = side_configs(prefix)
    url = "sqlite:///" + path
    try:
        pool = SqlitePool(path, sizes.writers)
        admin = await open_connection(path)
        try:
            async with pupsourcing_async.connect(
                url, store_config=configs["raw"], max_size=1
            ) as migrator:
                await migrator.migrate()
            async with pupsourcing_async.connect(
                url,
                store_config=configs["library"],
                min_size=sizes.writers,
                max_size=sizes.writers,
                pool_options={"busy_timeout": BUSY_TIMEOUT},
            ) as db:
                await db.migrate()
                await pool.open()
                sides: dict[Side, StoreSide] = {
                    "library": LibrarySide(db),
                    "raw": RawSqlite(pool, RawSQL(configs["raw"])),
                }
                facts = await _facts(admin, path)
                yield SqliteTarget(facts, sides, admin, {side: configs[side] for side in SIDES})
        finally:
            await pool.close()
            await admin.close()
    finally:
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
