"""SQLite: the minimal hand-written baseline, plain aiosqlite on a table of its own.

This is what a user who hand-writes an event table with aiosqlite reaches for, and
nothing more; the library is measured against it.

- The table (:func:`schema`): the library's event columns with the library's types,
  ``global_position INTEGER PRIMARY KEY AUTOINCREMENT``, ``UNIQUE (bounded_context,
  aggregate_type, aggregate_id, aggregate_version)`` and ``UNIQUE (event_id)``. No head
  table, no other index.
- Connections as the library opens its own: autocommit (``isolation_level=None``), WAL,
  the same busy timeout; one per writer, handed out last in, first out
  (:class:`bench.sqlite_pool.SqlitePool`).
- Single events (W1, W6): one ``INSERT`` per event in autocommit (SQLite makes it a
  transaction of its own), on a connection the writer holds for all its events. The
  writer owns its aggregate, so it knows the next version and reads nothing first.
- Batches (W2): ``BEGIN``, ``executemany`` of the one-row ``INSERT``, ``COMMIT`` on a
  held connection (its first statement writes, so the write lock is taken at once, under
  the busy timeout).
- Reads (W3, W5): ``execute_fetchall`` of every column on a held connection, outside any
  explicit transaction (``global_position > ? ORDER BY global_position LIMIT ?`` for the
  log, the aggregate's key ``ORDER BY aggregate_version`` for a stream); rows as tuples.
- Projections (W4): with the no-op handler, the plain read loop above in pages of the
  batch size, and nothing else; with the upsert handler, the page is read the same way
  and then one ``BEGIN`` ... ``COMMIT`` per page upserts each event's read-model row and
  the checkpoint (read once at the start).
- W6: the same read, polled every ``RAW_POLL_INTERVAL`` on a held connection, the
  position kept in memory.

It guarantees: each event is stored once; a second event at the same (aggregate,
version) or with the same event id fails with :class:`~bench.common.RawConflictError`;
a batch is all or nothing; a projection's read-model rows and checkpoint move together.
SQLite has one writer at a time, so positions commit in order and paging by position
skips nothing here.

It does not: return positions; check an expected version beyond uniqueness (a writer
that does not own its aggregate has to read the head first); keep aggregate heads;
notify readers; validate events; retry; record a checkpoint for the no-op projection.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC

import aiosqlite

from pupsourcing_async import es

from .common import FOLLOW_PAGE, RAW_POLL_INTERVAL, MinimalTables, RawConflictError, Seen
from .sqlite_pool import SqlitePool

__all__ = ["MinimalSqlite", "connect", "schema"]

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
#: The library's text format of timestamps, so that every side stores the same data.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


def schema(tables: MinimalTables) -> list[str]:
    """The ``CREATE TABLE`` statements of the minimal side."""
    return [
        f"""CREATE TABLE {tables.events} (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    trace_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version)
)""",
        f"CREATE TABLE {tables.checkpoints} (projection_name TEXT PRIMARY KEY, "
        "last_global_position INTEGER NOT NULL)",
        f"CREATE TABLE {tables.read_model} (aggregate_id TEXT PRIMARY KEY, "
        "events INTEGER NOT NULL, last_position INTEGER NOT NULL)",
    ]


def row(event: es.Event, version: int) -> tuple[object, ...]:
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


@asynccontextmanager
async def _transaction(conn: aiosqlite.Connection, begin: str) -> AsyncIterator[None]:
    """``begin`` ... ``COMMIT``, or ``ROLLBACK`` if the block does not end cleanly."""
    await conn.execute(begin)
    committed = False
    try:
        yield
        await conn.execute("COMMIT")
        committed = True
    finally:
        if not committed:
            # A cancelled statement still runs on the connection's thread; the ROLLBACK
            # queues behind it, so the connection goes back to the pool clean.
            with contextlib.suppress(sqlite3.OperationalError):
                await asyncio.shield(conn.execute("ROLLBACK"))


class MinimalSqlite:
    """The minimal side on SQLite; see the module docstring.

    Args:
        pool: Its connections; each operation holds one for all its work.
        tables: Its tables.
    """

    def __init__(self, pool: SqlitePool, tables: MinimalTables) -> None:
        self.pool = pool
        self.tables = tables
        placeholders = ", ".join("?" * 13)
        self._insert = f"INSERT INTO {tables.events} ({COLUMNS}) VALUES ({placeholders})"
        self._read_page = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE global_position > ? ORDER BY global_position LIMIT ?"
        )
        self._read_stream = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE bounded_context = ? AND aggregate_type = ? AND aggregate_id = ? "
            "ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {tables.checkpoints} WHERE projection_name = ?"
        )
        self._set_checkpoint = (
            f"INSERT INTO {tables.checkpoints} (projection_name, last_global_position) "
            "VALUES (?, ?) ON CONFLICT (projection_name) "
            "DO UPDATE SET last_global_position = excluded.last_global_position"
        )
        self._upsert = (
            f"INSERT INTO {tables.read_model} (aggregate_id, events, last_position) "
            "VALUES (?, 1, ?) ON CONFLICT (aggregate_id) "
            "DO UPDATE SET events = events + 1, last_position = excluded.last_position"
        )

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """One autocommit ``INSERT`` per event on a held connection, versions 1, 2, ..."""
        del exact  # the writer owns the aggregate: it knows every version
        insert = self._insert
        async with self.pool.acquire() as conn:
            try:
                for version, event in enumerate(events, 1):
                    await conn.execute(insert, row(event, version))
            except sqlite3.IntegrityError as err:
                raise RawConflictError(str(err)) from err

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """Per batch ``BEGIN``, ``executemany``, ``COMMIT`` on a held connection."""
        del exact
        async with self.pool.acquire() as conn:
            for batch in batches:
                rows = [row(event, version + i) for i, event in enumerate(batch, 1)]
                async with _transaction(conn, "BEGIN"):
                    try:
                        await conn.executemany(self._insert, rows)
                    except sqlite3.IntegrityError as err:
                        raise RawConflictError(str(err)) from err
                version += len(batch)

    async def read_all(self, page: int) -> int:
        """The whole log, a plain ``execute_fetchall`` per page on a held connection."""
        position = 0
        total = 0
        async with self.pool.acquire() as conn:
            while rows := list(await conn.execute_fetchall(self._read_page, (position, page))):
                position = rows[-1][0]
                total += len(rows)
        return total

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, one plain ``execute_fetchall``."""
        async with self.pool.acquire() as conn:
            rows = await conn.execute_fetchall(
                self._read_stream, (bounded_context, aggregate_type, aggregate_id)
            )
        return len(list(rows))

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """No-op: the plain read loop. Upsert: per page, one transaction of upserts and
        the checkpoint."""
        if not upsert:
            return await self.read_all(batch)
        total = 0
        async with self.pool.acquire() as conn:
            found = list(await conn.execute_fetchall(self._get_checkpoint, (projection_name,)))
            position: int = found[0][0] if found else 0
            while rows := list(await conn.execute_fetchall(self._read_page, (position, batch))):
                position = rows[-1][0]
                async with _transaction(conn, "BEGIN IMMEDIATE"):
                    # One statement per event, as the other sides' handlers run it.
                    for event_row in rows:
                        await conn.execute(self._upsert, (event_row[3], event_row[0]))
                    await conn.execute(self._set_checkpoint, (projection_name, position))
                total += len(rows)
        return total

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """Poll the plain read; the position is kept in memory, from 0."""
        del projection_name
        position = 0
        async with self.pool.acquire() as conn:
            while True:
                rows = list(await conn.execute_fetchall(self._read_page, (position, FOLLOW_PAGE)))
                if not rows:
                    await asyncio.sleep(RAW_POLL_INTERVAL)
                    continue
                for event_row in rows:
                    seen(event_row[3])
                position = rows[-1][0]


@asynccontextmanager
async def connect(path: str, tables: MinimalTables, size: int) -> AsyncIterator[MinimalSqlite]:
    """The minimal side on existing tables in ``path``, with ``size`` connections."""
    pool = SqlitePool(path, size)
    try:
        await pool.open()
        yield MinimalSqlite(pool, tables)
    finally:
        await pool.close()
