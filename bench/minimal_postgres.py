"""PostgreSQL: the minimal hand-written baseline, plain asyncpg on a table of its own.

This is what a user who hand-writes an event table with asyncpg reaches for, and nothing
more; the library is measured against it.

- The table (:func:`schema`): the library's event columns with the library's types,
  ``global_position BIGSERIAL PRIMARY KEY``, ``UNIQUE (bounded_context, aggregate_type,
  aggregate_id, aggregate_version)`` and ``UNIQUE (event_id)``. No head table, no other
  index.
- Single events (W1, W6): one ``INSERT`` per event, in autocommit, on a connection the
  writer holds for all its events. The writer owns its aggregate, so it knows the next
  version and reads nothing first.
- Batches (W2): one ``executemany`` of the one-row ``INSERT`` on a held connection;
  asyncpg sends the rows with a single Sync, so the batch is one implicit transaction.
- Reads (W3, W5): ``conn.fetch`` of every column on a held connection, outside any
  explicit transaction (``global_position > $1 ORDER BY global_position LIMIT $2`` for
  the log, the aggregate's key ``ORDER BY aggregate_version`` for a stream); asyncpg
  records as they come.
- Projections (W4): with the no-op handler, the plain read loop above in pages of the
  batch size, and nothing else; with the upsert handler, the page is read the same way
  and then one transaction per page upserts each event's read-model row and the
  checkpoint (read once at the start).
- W6: the same read, polled every ``RAW_POLL_INTERVAL`` on a held connection, the
  position kept in memory.

It guarantees: each event is stored once; a second event at the same (aggregate,
version) or with the same event id fails with :class:`~bench.common.RawConflictError`
(the unique violation is the conflict); a batch is all or nothing; a projection's
read-model rows and checkpoint move together.

It does not: return positions; check an expected version beyond uniqueness (a writer
that does not own its aggregate has to read the head first); keep aggregate heads;
read gap-safely (concurrent writers' positions commit out of order, so a reader paging
by position can pass over an event that commits later below its position); notify
readers; validate events; retry; record a checkpoint for the no-op projection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg

from pupsourcing_async import es

from .common import FOLLOW_PAGE, RAW_POLL_INTERVAL, MinimalTables, RawConflictError, Seen

__all__ = ["MinimalPostgres", "connect", "schema"]

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, "
    "event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)


def schema(tables: MinimalTables) -> list[str]:
    """The ``CREATE TABLE`` statements of the minimal side."""
    return [
        f"""CREATE TABLE {tables.events} (
    global_position BIGSERIAL PRIMARY KEY,
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_version INT NOT NULL,
    payload BYTEA NOT NULL,
    trace_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL,
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version)
)""",
        f"CREATE TABLE {tables.checkpoints} (projection_name TEXT PRIMARY KEY, "
        "last_global_position BIGINT NOT NULL)",
        f"CREATE TABLE {tables.read_model} (aggregate_id TEXT PRIMARY KEY, "
        "events BIGINT NOT NULL, last_position BIGINT NOT NULL)",
    ]


def row(event: es.Event, version: int) -> tuple[object, ...]:
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


class MinimalPostgres:
    """The minimal side on PostgreSQL; see the module docstring.

    Args:
        pool: Its connections; each operation holds one for all its work.
        tables: Its tables.
    """

    def __init__(self, pool: Pool, tables: MinimalTables) -> None:
        self.pool = pool
        self.tables = tables
        values = ", ".join(f"${i}" for i in range(1, 14))
        self._insert = f"INSERT INTO {tables.events} ({COLUMNS}) VALUES ({values})"
        self._read_page = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE global_position > $1 ORDER BY global_position LIMIT $2"
        )
        self._read_stream = (
            f"SELECT global_position, {COLUMNS} FROM {tables.events} "
            "WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3 "
            "ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {tables.checkpoints} WHERE projection_name = $1"
        )
        self._set_checkpoint = (
            f"INSERT INTO {tables.checkpoints} (projection_name, last_global_position) "
            "VALUES ($1, $2) ON CONFLICT (projection_name) "
            "DO UPDATE SET last_global_position = EXCLUDED.last_global_position"
        )
        self._upsert = (
            f"INSERT INTO {tables.read_model} AS r (aggregate_id, events, last_position) "
            "VALUES ($1, 1, $2) ON CONFLICT (aggregate_id) "
            "DO UPDATE SET events = r.events + 1, last_position = EXCLUDED.last_position"
        )

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """One autocommit ``INSERT`` per event on a held connection, versions 1, 2, ..."""
        del exact  # the writer owns the aggregate: it knows every version
        insert = self._insert
        async with self.pool.acquire() as conn:
            try:
                for version, event in enumerate(events, 1):
                    await conn.execute(insert, *row(event, version))
            except asyncpg.UniqueViolationError as err:
                raise RawConflictError(str(err)) from err

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """One ``executemany`` per batch on a held connection (atomic per batch)."""
        del exact
        async with self.pool.acquire() as conn:
            try:
                for batch in batches:
                    await conn.executemany(
                        self._insert, [row(event, version + i) for i, event in enumerate(batch, 1)]
                    )
                    version += len(batch)
            except asyncpg.UniqueViolationError as err:
                raise RawConflictError(str(err)) from err

    async def read_all(self, page: int) -> int:
        """The whole log, a plain ``fetch`` per page on a held connection."""
        position = 0
        total = 0
        async with self.pool.acquire() as conn:
            while rows := await conn.fetch(self._read_page, position, page):
                position = rows[-1][0]
                total += len(rows)
        return total

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """One aggregate's rows in version order, one plain ``fetch``."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                self._read_stream, bounded_context, aggregate_type, aggregate_id
            )
        return len(rows)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """No-op: the plain read loop. Upsert: per page, one transaction of upserts and
        the checkpoint."""
        if not upsert:
            return await self.read_all(batch)
        total = 0
        async with self.pool.acquire() as conn:
            position: int = await conn.fetchval(self._get_checkpoint, projection_name) or 0
            while rows := await conn.fetch(self._read_page, position, batch):
                position = rows[-1][0]
                async with conn.transaction():
                    # One statement per event, as the other sides' handlers run it.
                    for found in rows:
                        await conn.execute(self._upsert, found[3], found[0])
                    await conn.execute(self._set_checkpoint, projection_name, position)
                total += len(rows)
        return total

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """Poll the plain read; the position is kept in memory, from 0."""
        del projection_name
        position = 0
        async with self.pool.acquire() as conn:
            while True:
                rows = await conn.fetch(self._read_page, position, FOLLOW_PAGE)
                if not rows:
                    await asyncio.sleep(RAW_POLL_INTERVAL)
                    continue
                for found in rows:
                    seen(found[3])
                position = rows[-1][0]


@asynccontextmanager
async def connect(dsn: str, tables: MinimalTables, size: int) -> AsyncIterator[MinimalPostgres]:
    """The minimal side on existing tables, with a pool of ``size`` connections."""
    async with asyncpg.create_pool(dsn, min_size=size, max_size=size) as pool:
        yield MinimalPostgres(pool, tables)
