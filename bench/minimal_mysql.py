"""MySQL/MariaDB: the minimal hand-written baseline, plain aiomysql on a table of its own.

This is what a user who hand-writes an event table with aiomysql reaches for, and
nothing more; the library is measured against it.

- The table (:func:`schema`): the library's event columns with the library's types
  (InnoDB, ``utf8mb4_bin``), ``global_position BIGINT AUTO_INCREMENT PRIMARY KEY``,
  ``UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version)`` and
  ``UNIQUE (event_id)``. No head table, no in-flight table, no other index.
- A pool of autocommit connections with the library's session settings
  (:func:`bench.mysql_driver.create_pool`: READ COMMITTED, time zone UTC).
- Single events (W1, W6): one ``INSERT`` per event in autocommit, on a connection the
  writer holds for all its events. The writer owns its aggregate, so it knows the next
  version and reads nothing first.
- Batches (W2): one multi-row ``INSERT ... VALUES (...), (...), ...`` per batch, built
  here, in autocommit: one statement, so one round trip and all or nothing.
- Reads (W3, W5): ``SELECT`` every column, ``fetchall`` the tuples, on a held
  connection in autocommit (each statement its own snapshot): ``global_position > %s
  ORDER BY global_position LIMIT %s`` for the log, the aggregate's key ``ORDER BY
  aggregate_version`` for a stream.
- Projections (W4): with the no-op handler, the plain read loop above in pages of the
  batch size, and nothing else; with the upsert handler, the page is read the same way
  and then one transaction (``BEGIN`` ... ``COMMIT``) per page upserts each event's
  read-model row and the checkpoint (read once at the start).
- W6: the same read, polled every ``RAW_POLL_INTERVAL`` on a held connection, the
  position kept in memory.

It guarantees: each event is stored once; a second event at the same (aggregate,
version) or with the same event id fails with :class:`~bench.common.RawConflictError`
(the duplicate key is the conflict); a batch is all or nothing; a projection's
read-model rows and checkpoint move together.

It does not: return positions; check an expected version beyond uniqueness (a writer
that does not own its aggregate has to read the head first); keep aggregate heads; read
gap-safely (InnoDB hands out auto-increment values before commit, so concurrent writers'
positions commit out of order and a reader paging by position can pass over an event
that commits later below its position: what the library's in-flight registration
prevents); notify readers; validate events; retry; record a checkpoint for the no-op
projection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC
from typing import Any

import pymysql

from pupsourcing_async import es

from .common import FOLLOW_PAGE, RAW_POLL_INTERVAL, MinimalTables, RawConflictError, Seen
from .mysql_driver import Connection, Cursor, Pool, close_pool, create_pool

__all__ = ["MinimalMysql", "connect", "schema"]

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
_ROW = "(" + ", ".join(["%s"] * 13) + ")"
_DUPLICATE_KEY = 1062


def schema(tables: MinimalTables) -> list[str]:
    """The ``CREATE TABLE`` statements of the minimal side."""
    options = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
    return [
        f"""CREATE TABLE {tables.events} (
    global_position BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    bounded_context VARCHAR(255) NOT NULL,
    aggregate_type VARCHAR(255) NOT NULL,
    aggregate_id VARCHAR(255) NOT NULL,
    aggregate_version BIGINT NOT NULL,
    event_id BINARY(16) NOT NULL UNIQUE,
    event_type VARCHAR(255) NOT NULL,
    event_version INT NOT NULL,
    payload LONGBLOB NOT NULL,
    trace_id VARCHAR(255) NULL,
    correlation_id VARCHAR(255) NULL,
    causation_id VARCHAR(255) NULL,
    metadata JSON NULL,
    created_at TIMESTAMP(6) NOT NULL,
    UNIQUE KEY aggregate_version_key
        (bounded_context, aggregate_type, aggregate_id, aggregate_version)
) {options}""",
        f"CREATE TABLE {tables.checkpoints} (projection_name VARCHAR(255) PRIMARY KEY, "
        f"last_global_position BIGINT NOT NULL) {options}",
        f"CREATE TABLE {tables.read_model} (aggregate_id VARCHAR(255) PRIMARY KEY, "
        f"events BIGINT NOT NULL, last_position BIGINT NOT NULL) {options}",
    ]


def row(event: es.Event, version: int) -> tuple[object, ...]:
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


async def _insert(cursor: Cursor, statement: str, args: Sequence[object]) -> None:
    try:
        await cursor.execute(statement, args)
    except pymysql.err.IntegrityError as err:
        if err.args and err.args[0] == _DUPLICATE_KEY:
            raise RawConflictError(str(err)) from err
        raise


class MinimalMysql:
    """The minimal side on MySQL/MariaDB; see the module docstring.

    Args:
        pool: Its autocommit connections; each operation holds one for all its work.
        tables: Its tables.
    """

    def __init__(self, pool: Pool, tables: MinimalTables) -> None:
        self.pool = pool
        self.tables = tables
        self._insert_head = f"INSERT INTO {tables.events} ({COLUMNS}) VALUES "
        self._inserts: dict[int, str] = {}
        self._read_page = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE global_position > %s ORDER BY global_position LIMIT %s"
        )
        self._read_stream = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE bounded_context = %s AND aggregate_type = %s AND aggregate_id = %s "
            "ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {tables.checkpoints} WHERE projection_name = %s"
        )
        self._set_checkpoint = (
            f"INSERT INTO {tables.checkpoints} (projection_name, last_global_position) "
            "VALUES (%s, %s) ON DUPLICATE KEY UPDATE "
            "last_global_position = VALUES(last_global_position)"
        )
        self._upsert = (
            f"INSERT INTO {tables.read_model} (aggregate_id, events, last_position) "
            "VALUES (%s, 1, %s) ON DUPLICATE KEY UPDATE "
            "events = events + 1, last_position = VALUES(last_position)"
        )

    def _insert_rows(self, count: int) -> str:
        """The ``INSERT`` of ``count`` rows (made once per count)."""
        statement = self._inserts.get(count)
        if statement is None:
            statement = self._insert_head + ", ".join([_ROW] * count)
            self._inserts[count] = statement
        return statement

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """One autocommit ``INSERT`` per event on a held connection, versions 1, 2, ..."""
        del exact  # the writer owns the aggregate: it knows every version
        insert = self._insert_rows(1)
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            for version, event in enumerate(events, 1):
                await _insert(cursor, insert, row(event, version))

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """One multi-row ``INSERT`` per batch, in autocommit, on a held connection."""
        del exact
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            for batch in batches:
                args: list[object] = []
                for i, event in enumerate(batch, 1):
                    args.extend(row(event, version + i))
                await _insert(cursor, self._insert_rows(len(batch)), args)
                version += len(batch)

    async def _pages(self, conn: Connection, page: int, position: int) -> AsyncIterator[Any]:
        async with conn.cursor() as cursor:
            while True:
                await cursor.execute(self._read_page, (position, page))
                rows = await cursor.fetchall()
                if not rows:
                    return
                position = rows[-1][0]
                yield rows

    async def read_all(self, page: int) -> int:
        """The whole log, a plain ``SELECT`` per page on a held connection."""
        total = 0
        async with self.pool.acquire() as conn:
            async for rows in self._pages(conn, page, 0):
                total += len(rows)
        return total

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, one plain ``SELECT``."""
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(self._read_stream, (bounded_context, aggregate_type, aggregate_id))
            rows = await cursor.fetchall()
        return len(rows)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """No-op: the plain read loop. Upsert: per page, one transaction of upserts and
        the checkpoint."""
        if not upsert:
            return await self.read_all(batch)
        total = 0
        async with self.pool.acquire() as conn:
            async with conn.cursor() as cursor:
                await cursor.execute(self._get_checkpoint, (projection_name,))
                found = await cursor.fetchall()
            start = int(found[0][0]) if found else 0
            async for rows in self._pages(conn, batch, start):
                await self._handle(conn, projection_name, rows)
                total += len(rows)
        return total

    async def _handle(self, conn: Connection, name: str, rows: Sequence[Any]) -> None:
        """One transaction: the read-model upsert per event, then the checkpoint."""
        committed = False
        async with conn.cursor() as cursor:
            try:
                await cursor.execute("BEGIN")
                # One statement per event, as the other sides' handlers run it.
                for event_row in rows:
                    await cursor.execute(self._upsert, (event_row[3], event_row[0]))
                await cursor.execute(self._set_checkpoint, (name, rows[-1][0]))
                await conn.commit()
                committed = True
            finally:
                if not committed:
                    # The server rolls back what the closed socket left open.
                    conn.close()

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """Poll the plain read; the position is kept in memory, from 0."""
        del projection_name
        position = 0
        async with self.pool.acquire() as conn, conn.cursor() as cursor:
            while True:
                await cursor.execute(self._read_page, (position, FOLLOW_PAGE))
                rows = await cursor.fetchall()
                if not rows:
                    await asyncio.sleep(RAW_POLL_INTERVAL)
                    continue
                for event_row in rows:
                    seen(event_row[3])
                position = rows[-1][0]


@asynccontextmanager
async def connect(url: str, tables: MinimalTables, size: int) -> AsyncIterator[MinimalMysql]:
    """The minimal side on existing tables, with a pool of ``size`` autocommit connections."""
    pool = await create_pool(url, size, autocommit=True)
    try:
        yield MinimalMysql(pool, tables)
    finally:
        await close_pool(pool)
