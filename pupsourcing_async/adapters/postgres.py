"""PostgreSQL adapter, on asyncpg.

``Store`` works on any asyncpg connection the caller holds in a transaction; users who
own a pool use it directly, everyone else goes through ``pupsourcing_async.connect``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias

import asyncpg
import asyncpg.exceptions as pgerr
from asyncpg.pool import PoolConnectionProxy

from .. import es
from .._async import shielded
from .._holes import HoleTracker, PendingHole
from .._url import DatabaseURL
from ..errors import (
    OptimisticConcurrencyError,
    SchemaError,
    StoreUnavailableError,
)
from ..log import get_logger
from ..migrations import schema_statements
from ..store import StoreConfig, default_store_config
from ._shared import (
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
    conflict_error,
)

__all__ = ["Connection", "PostgresBackend", "Store", "StoreConfig", "default_store_config"]

#: What the store methods accept as ``tx``: a connection, or a pool's proxy of one.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# Errors after which the connection is gone or the server refuses work for now.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    pgerr.TooManyConnectionsError,
    pgerr.IdleSessionTimeoutError,
    pgerr.IdleInTransactionSessionTimeoutError,
)

_EVENT_COLUMNS = (
    "global_position, bounded_context, aggregate_type, aggregate_id, aggregate_version, "
    "event_id, event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "convert_to(metadata::text, 'UTF8') AS metadata, created_at"
)

_INSERT_EVENTS = """
INSERT INTO {events} (
    bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type,
    event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at)
SELECT $1, $2, $3, head.version - $4 + e.ord, e.event_id, e.event_type, e.event_version,
    e.payload, e.trace_id, e.correlation_id, e.causation_id, e.metadata::jsonb, e.created_at
FROM head, unnest($5::uuid[], $6::text[], $7::int4[], $8::bytea[], $9::text[], $10::text[],
    $11::text[], $12::text[], $13::timestamptz[]) WITH ORDINALITY
    AS e(event_id, event_type, event_version, payload, trace_id, correlation_id,
         causation_id, metadata, created_at, ord)
RETURNING global_position, aggregate_version
"""

# Each append is one statement: the aggregate's head row is written first, which assigns
# the transaction its id before the INSERT draws positions from the sequence (the order
# gap-safe reading relies on). The events INSERT reads the head's new version, so it
# cannot run before the head write. An expected-version mismatch or an already stored
# event id makes the head CTE return no row, so nothing is inserted and the caller's
# transaction stays usable.
_NO_DUPLICATES = "NOT EXISTS (SELECT 1 FROM {events} WHERE event_id = ANY($5::uuid[]))"

_HEAD_ANY = f"""
WITH head AS (
    INSERT INTO {{heads}} AS h (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    SELECT $1::text, $2::text, $3::text, $4::bigint, now() WHERE {_NO_DUPLICATES}
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE
        SET aggregate_version = h.aggregate_version + EXCLUDED.aggregate_version,
            updated_at = EXCLUDED.updated_at
    RETURNING h.aggregate_version AS version
)"""

_HEAD_NO_STREAM = f"""
WITH head AS (
    INSERT INTO {{heads}} (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    SELECT $1::text, $2::text, $3::text, $4::bigint, now() WHERE {_NO_DUPLICATES}
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO NOTHING
    RETURNING aggregate_version AS version
)"""

_HEAD_EXACT = f"""
WITH head AS (
    UPDATE {{heads}} SET aggregate_version = aggregate_version + $4::bigint, updated_at = now()
    WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
        AND aggregate_version = $14::bigint AND {_NO_DUPLICATES}
    RETURNING aggregate_version AS version
)"""


class _Statements:
    """The SQL text for one table configuration, built once."""

    def __init__(self, config: StoreConfig) -> None:
        names = {
            "events": config.events_table,
            "heads": config.aggregate_heads_table,
            "checkpoints": config.checkpoints_table,
        }
        insert = _INSERT_EVENTS.format(**names)
        self.append_any = _HEAD_ANY.format(**names) + insert
        self.append_no_stream = _HEAD_NO_STREAM.format(**names) + insert
        self.append_exact = _HEAD_EXACT.format(**names) + insert
        self.conflict_facts = """
SELECT (SELECT aggregate_version FROM {heads}
        WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3),
       (SELECT event_id FROM {events} WHERE event_id = ANY($4::uuid[]) LIMIT 1)
""".format(**names)
        # The snapshot's xmin and whether this transaction already has an id come from the
        # same statement, hence the same snapshot, as the rows (InitPlans run once).
        self.read_events = f"""
SELECT {_EVENT_COLUMNS},
    (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) AS snapshot_xmin,
    (SELECT pg_current_xact_id_if_assigned()::text::bigint) AS own_xid
FROM {config.events_table}
WHERE global_position > $1 ORDER BY global_position LIMIT $2
"""
        self.take_fence = "SELECT pg_current_xact_id()::text::bigint"
        self.latest_position = (
            f"SELECT COALESCE(MAX(global_position), 0) FROM {config.events_table}"
        )
        self.stream = f"""
SELECT {_EVENT_COLUMNS} FROM {config.events_table}
WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
    AND aggregate_version >= $4 AND aggregate_version <= $5
ORDER BY aggregate_version
"""
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {config.checkpoints_table} "
            "WHERE projection_name = $1"
        )
        self.update_checkpoint = f"""
INSERT INTO {config.checkpoints_table} (projection_name, last_global_position, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (projection_name) DO UPDATE
    SET last_global_position = EXCLUDED.last_global_position, updated_at = EXCLUDED.updated_at
"""


def _event(row: asyncpg.Record) -> es.PersistedEvent:
    return es.PersistedEvent(
        row[1],
        row[2],
        row[3],
        row[6],
        row[8],
        event_id=row[5],
        event_version=row[7],
        metadata=row[12],
        trace_id=row[9],
        correlation_id=row[10],
        causation_id=row[11],
        created_at=row[13],
        global_position=row[0],
        aggregate_version=row[4],
    )


_RELATION = re.compile(r'relation "([^"]+)" does not exist')


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the connection is gone or the server is not serving."""
    if isinstance(err, _UNAVAILABLE):
        return True
    # A pool releases a connection on its own when the server closes it; the proxy the
    # caller holds then refuses every call.
    message = str(err)
    return isinstance(err, asyncpg.InterfaceError) and (
        "closed" in message or "released back to the pool" in message
    )


@contextmanager
def translated(location: str) -> Iterator[None]:
    """Translate asyncpg's errors into this library's, naming ``location``."""
    try:
        yield
    except pgerr.UndefinedTableError as err:
        match = _RELATION.search(str(err))
        table = match.group(1) if match else None
        raise SchemaError(
            f"{err}: the event store's tables are missing; run `await db.migrate()` "
            "or `pupsourcing-async migrate --url URL`",
            table=table,
        ) from err
    except pgerr.UndefinedColumnError as err:
        raise SchemaError(
            f"{err}: the event store's tables do not have the expected columns; "
            "they may come from an older schema",
        ) from err
    except Exception as err:
        if is_unavailable(err):
            raise StoreUnavailableError(
                f"lost the connection to PostgreSQL at {location}: {err}", location=location
            ) from err
        raise


class Store:
    """The event store on PostgreSQL.

    Gap-safe reading keeps what it learns about holes in the log on this object, so share
    one ``Store`` among all readers of a database.

    Args:
        config: Table names and logger; the defaults when omitted.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig | None = None, *, location: str = "PostgreSQL") -> None:
        self._config = config or default_store_config()
        self._sql = _Statements(self._config)
        self._holes: HoleTracker[int] = HoleTracker()
        self._location = location
        self._log = get_logger(self._config.logger, "pupsourcing_async.store")

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        return self._config

    def pending_holes(self) -> list[PendingHole]:
        """Holes readers of this store wait on, lowest first."""
        return self._holes.pending()

    async def append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate in a single statement. See ``EventStore``."""
        required = es.validate_append(expected, events)
        first = events[0]
        count = len(events)
        ids = [e.event_id for e in events]
        args: list[object] = [
            first.bounded_context,
            first.aggregate_type,
            first.aggregate_id,
            count,
            ids,
            [e.event_type for e in events],
            [e.event_version for e in events],
            [e.payload for e in events],
            [e.trace_id for e in events],
            [e.correlation_id for e in events],
            [e.causation_id for e in events],
            [None if e.metadata is None else e.metadata.decode() for e in events],
            [e.created_at for e in events],
        ]
        if required is None:
            sql = self._sql.append_any
        elif required == 0:
            sql = self._sql.append_no_stream
        else:
            sql = self._sql.append_exact
            args.append(required)
        with translated(self._location):
            try:
                rows = await tx.fetch(sql, *args)
            except pgerr.UniqueViolationError as err:
                # A concurrent transaction stored the same event id or version first.
                raise self._unique_violation(err, expected, first) from err
            if not rows:
                version, duplicate = await tx.fetchrow(
                    self._sql.conflict_facts,
                    first.bounded_context,
                    first.aggregate_type,
                    first.aggregate_id,
                    ids,
                ) or (None, None)
                raise conflict_error(
                    self._log, expected, first, actual=version or 0, event_id=duplicate
                )
        if count > 1:
            rows = sorted(rows, key=lambda row: row[1])
        stored = [
            es.persisted(event, row[0], row[1]) for event, row in zip(events, rows, strict=True)
        ]
        positions = [row[0] for row in rows]
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=stored[0].aggregate_version,
            to_version=stored[-1].aggregate_version,
            positions=positions,
        )
        return es.AppendResult(stored, positions)

    def _unique_violation(
        self, err: pgerr.UniqueViolationError, expected: es.ExpectedVersion, first: es.Event
    ) -> OptimisticConcurrencyError:
        detail = getattr(err, "detail", None) or ""
        constraint = getattr(err, "constraint_name", None) or ""
        if "event_id" not in constraint and "(event_id)" not in detail:
            return conflict_error(self._log, expected, first, actual=None)
        match = re.search(r"\(event_id\)=\(([0-9a-fA-F-]{36})\)", detail)
        event_id = uuid.UUID(match.group(1)) if match else None
        return conflict_error(
            self._log, expected, first, actual=None, duplicate=True, event_id=event_id
        )

    async def read_events(
        self, tx: Connection, from_position: int = 0, limit: int = 100
    ) -> list[es.PersistedEvent]:
        """Read events after ``from_position``, gap-safe. See ``EventStore.read_events``.

        Delivery stops at the first hole (a missing position below a visible one) that is
        not proven dead. The proof: right after the read that saw the hole, take a fresh
        transaction id as the fence; any id assigned earlier, including the id of the
        transaction that drew the missing position, is smaller. A later read whose snapshot
        has ``xmin >= fence`` knows all those transactions ended, so a position still
        missing in that snapshot was rolled back and can be passed.
        """
        check_position("from_position", from_position)
        check_limit(limit)
        with translated(self._location):
            rows = await tx.fetch(self._sql.read_events, from_position, limit)
            if not rows:
                return []
            xmin: int = rows[0][14]
            own_xid: int | None = rows[0][15]
            count = self._holes.deliverable(
                from_position, [row[0] for row in rows], lambda fence: xmin >= fence
            )
            # A transaction that already has an id got it before the hole was seen, so its
            # id is no fence; a later read (the next batch) takes one instead.
            if own_xid is None and self._holes.needs_fence():
                fence: int = await tx.fetchval(self._sql.take_fence)
                self._holes.set_fence(fence)
                self._log.debug("fenced holes in the log", fence=fence)
        return [_event(row) for row in rows[:count]]

    async def latest_global_position(self, tx: Connection) -> int:
        """The highest committed global position, 0 when the log is empty."""
        with translated(self._location):
            position: int = await tx.fetchval(self._sql.latest_position)
        return position

    async def read_aggregate_stream(
        self,
        tx: Connection,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> es.Stream:
        """Read one aggregate's events in version order; both bounds inclusive."""
        low, high = check_stream_args(
            bounded_context, aggregate_type, aggregate_id, from_version, to_version
        )
        with translated(self._location):
            rows = await tx.fetch(
                self._sql.stream, bounded_context, aggregate_type, aggregate_id, low, high
            )
        return es.Stream(
            bounded_context, aggregate_type, aggregate_id, [_event(row) for row in rows]
        )

    async def get_checkpoint(self, tx: Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        with translated(self._location):
            position: int | None = await tx.fetchval(self._sql.get_checkpoint, projection_name)
        return position or 0

    async def update_checkpoint(self, tx: Connection, projection_name: str, position: int) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        with translated(self._location):
            await tx.execute(self._sql.update_checkpoint, projection_name, position)


# pg_advisory_xact_lock key that serializes concurrent migrate() calls (CREATE ... IF NOT
# EXISTS is not safe against itself running concurrently).
_MIGRATE_LOCK = 0x7075_7073_6D69_6772  # "pupsmigr"


def scrub(text: str, url: DatabaseURL) -> str:
    """``text`` with the URL's password, if any, replaced by ``***``."""
    password = url.parts.password
    return text.replace(password, "***") if password else text


class PostgresBackend:
    """A PostgreSQL database reached through an asyncpg pool.

    Args:
        pool: The pool to take connections from.
        store: The store bound to this database's tables.
        location: Where the database is, for messages.
        owns_pool: Whether :meth:`aclose` closes the pool.
    """

    dialect = "postgres"

    def __init__(
        self, pool: asyncpg.Pool[Any], *, store: Store, location: str, owns_pool: bool = True
    ) -> None:
        self._pool = pool
        self._store = store
        self._location = location
        self._owns_pool = owns_pool

    @classmethod
    async def connect(
        cls,
        url: DatabaseURL,
        *,
        store_config: StoreConfig,
        min_size: int,
        max_size: int,
        connect_timeout: float,
        pool_options: Mapping[str, Any],
    ) -> PostgresBackend:
        """Open a pool on ``url``; fail fast if the server does not answer."""
        location = url.location
        try:
            pool = await asyncpg.create_pool(
                url.url,
                min_size=max(min_size, 1),
                max_size=max_size,
                timeout=connect_timeout,
                **pool_options,
            )
        except Exception as err:
            raise StoreUnavailableError(
                f"could not connect to PostgreSQL at {location}: {scrub(str(err), url)}",
                location=location,
            ) from err
        return cls(pool, store=Store(store_config, location=location), location=location)

    @property
    def location(self) -> str:
        """Where the database is; never includes a password."""
        return self._location

    @property
    def store(self) -> Store:
        """The event store bound to this database's tables."""
        return self._store

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        """The asyncpg pool, for running your own queries."""
        return self._pool

    def _unavailable(self, action: str, err: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{action} on PostgreSQL at {self._location} failed: {err}", location=self._location
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PoolConnectionProxy[Any]]:
        """A pooled connection inside a transaction; see ``Database.transaction``."""
        try:
            connection = await self._pool.acquire()
        except Exception as err:
            if is_unavailable(err):
                raise self._unavailable("getting a connection", err) from err
            raise
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
            except Exception as err:
                if is_unavailable(err):
                    raise self._unavailable("BEGIN", err) from err
                raise
            finished = False
            try:
                yield connection
                finished = True
            finally:
                if finished:
                    try:
                        await shielded(transaction.commit())
                    except Exception as err:
                        if is_unavailable(err):
                            raise StoreUnavailableError(
                                f"the connection to PostgreSQL at {self._location} failed "
                                f"during COMMIT; the transaction may or may not have "
                                f"committed: {err}",
                                location=self._location,
                            ) from err
                        raise
                else:
                    await _rollback_quietly(transaction)
        finally:
            await shielded(self._pool.release(connection))

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist; safe to run concurrently."""
        async with self.transaction() as connection:
            with translated(self._location):
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                for statement in schema_statements("postgres", self._store.config):
                    await connection.execute(statement)

    async def aclose(self) -> None:
        """Close the pool, if this backend opened it."""
        if self._owns_pool:
            await self._pool.close()


async def _rollback_quietly(transaction: Any) -> None:
    # The block's own exception is the one worth raising; a rollback on a broken
    # connection fails too, and the pool discards that connection on release.
    try:
        await shielded(transaction.rollback())
    except Exception:
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
