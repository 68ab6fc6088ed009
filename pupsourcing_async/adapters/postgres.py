"""PostgreSQL adapter, on asyncpg.

``Store`` works on any asyncpg connection the caller holds in a transaction; users who
own a pool use it directly, everyone else goes through ``pupsourcing_async.connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import Any, TypeAlias

import asyncpg
import asyncpg.exceptions as pgerr
from asyncpg.pool import PoolConnectionProxy

from .. import es, projection
from .._async import shielded
from .._holes import HoleTracker, PendingHole
from .._signals import Signal, Watch
from .._url import DatabaseURL
from ..errors import (
    OptimisticConcurrencyError,
    SchemaError,
    StoreUnavailableError,
)
from ..log import Logger, get_logger
from ..migrations import schema_statements
from ..observe import observed_append
from ..projection.config import ProcessorConfig
from ..store import StoreConfig, default_store_config
from ._shared import (
    AppendTracker,
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
    conflict_error,
    lease_key,
    wait_for_lock,
)
from .base import BackendBase, CheckpointRow

__all__ = [
    "Connection",
    "PostgresBackend",
    "Processor",
    "Store",
    "StoreConfig",
    "default_store_config",
]

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

# In the order es.make_persisted takes them.
_EVENT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, event_type, payload, event_id, "
    "event_version, convert_to(metadata::text, 'UTF8') AS metadata, trace_id, correlation_id, "
    "causation_id, created_at, global_position, aggregate_version"
)
_POSITION = 12

# The event columns after the aggregate key and version, with their types, in the order
# the append statement takes them as parameters.
_COLUMNS = (
    ("event_id", "uuid"),
    ("event_type", "text"),
    ("event_version", "int4"),
    ("payload", "bytea"),
    ("trace_id", "text"),
    ("correlation_id", "text"),
    ("causation_id", "text"),
    ("metadata", "text"),
    ("created_at", "timestamptz"),
)
# In a batch, a column whose values are all equal is sent once, as a scalar: arrays cost
# asyncpg several type checks per element, and events of one command often share their
# type, metadata and correlation ids. Ids, payloads and timestamps always vary.
_SHAREABLE = frozenset(
    {"event_type", "event_version", "trace_id", "correlation_id", "causation_id", "metadata"}
)

# Each append is one statement: the aggregate's head row is written first, which assigns
# the transaction its id before the INSERT draws positions from the sequence (the order
# gap-safe reading relies on). The events INSERT reads the head's new version, so it
# cannot run before the head write. An expected-version mismatch makes the head CTE return
# no row, so nothing is inserted. An event id that is already stored (or is being stored
# by a concurrent transaction that then commits) is skipped by ON CONFLICT rather than
# raised, so the caller's transaction stays usable; the store then undoes the append.
_HEADS = {
    "any": """
WITH head AS (
    INSERT INTO {heads} AS h (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE
        SET aggregate_version = h.aggregate_version + EXCLUDED.aggregate_version,
            updated_at = EXCLUDED.updated_at
    RETURNING h.aggregate_version AS version
)""",
    "no_stream": """
WITH head AS (
    INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO NOTHING
    RETURNING aggregate_version AS version
)""",
    "exact": """
WITH head AS (
    UPDATE {heads} SET aggregate_version = aggregate_version + $4::bigint, updated_at = now()
    WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
        AND aggregate_version = $5::bigint
    RETURNING aggregate_version AS version
)""",
}

_INSERT = """,
inserted AS (
INSERT INTO {events} (
    bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type,
    event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at)
SELECT $1, $2, $3, {version}, {values}
FROM head{rows}
ON CONFLICT (event_id) DO NOTHING
RETURNING global_position, aggregate_version
)
SELECT head.version, inserted.global_position, inserted.aggregate_version{notify}
FROM head LEFT JOIN inserted ON true
"""


class _Statements:
    """The SQL text for one table configuration, built once (appends on first use)."""

    def append(self, mode: str, notify: bool, shared: frozenset[str] | None) -> str:
        """The append statement for ``mode`` ("any", "no_stream", "exact").

        ``shared`` is None for one event; for several, the columns sent once as scalars.
        """
        key = (mode, notify, shared)
        sql = self._appends.get(key)
        if sql is None:
            sql = self._appends[key] = self._build_append(mode, notify, shared)
        return sql

    def _build_append(self, mode: str, notify: bool, shared: frozenset[str] | None) -> str:
        number = 6 if mode == "exact" else 5  # after the key, the count, the expectation
        values, arrays, names = [], [], []
        for name, kind in _COLUMNS:
            json = "::jsonb" if name == "metadata" else ""
            if shared is None or name in shared:
                values.append(f"${number}::{kind}{json}")
            else:
                values.append(f"e.{name}{json}")
                arrays.append(f"${number}::{kind}[]")
                names.append(name)
            number += 1
        if shared is None:
            version, rows = "head.version", ""
        else:
            version = "head.version - $4 + e.ord"
            rows = f", unnest({', '.join(arrays)}) WITH ORDINALITY AS e({', '.join(names)}, ord)"
        channel = self._names["channel"]
        return _HEADS[mode].format(**self._names) + _INSERT.format(
            events=self._names["events"],
            version=version,
            values=", ".join(values),
            rows=rows,
            notify=f",\n    (SELECT pg_notify('{channel}', ''))" if notify else "",
        )

    def __init__(self, config: StoreConfig) -> None:
        names = {
            "events": config.events_table,
            "heads": config.aggregate_heads_table,
            "checkpoints": config.checkpoints_table,
            "channel": notify_channel(config),
        }
        self._names = names
        self._appends: dict[tuple[str, bool, frozenset[str] | None], str] = {}
        # Only after a conflict: what the head is, and which of the ids is stored. The
        # lateral lookup probes the unique index once per id, whatever the table's size.
        self.conflict_facts = """
SELECT (SELECT aggregate_version FROM {heads}
        WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3),
       (SELECT e.event_id FROM unnest($4::uuid[]) AS wanted(id)
        CROSS JOIN LATERAL (SELECT event_id FROM {events} WHERE event_id = wanted.id) AS e
        LIMIT 1)
""".format(**names)
        self.undo_head = """
UPDATE {heads} SET aggregate_version = $4
WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
""".format(**names)
        self.undo_new_head = """
DELETE FROM {heads} WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
""".format(**names)
        self.undo_events = f"DELETE FROM {config.events_table} WHERE global_position = ANY($1)"
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
        self.event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {config.events_table} "
            "ORDER BY event_type, event_version"
        )
        self.list_checkpoints = (
            "SELECT projection_name, last_global_position, updated_at "
            f"FROM {config.checkpoints_table} ORDER BY projection_name"
        )
        self.delete_checkpoints = (
            f"DELETE FROM {config.checkpoints_table} WHERE projection_name = ANY($1::text[])"
        )
        self.update_checkpoint = f"""
INSERT INTO {config.checkpoints_table} (projection_name, last_global_position, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (projection_name) DO UPDATE
    SET last_global_position = EXCLUDED.last_global_position, updated_at = EXCLUDED.updated_at
"""


_RELATION = re.compile(r'relation "([^"]+)" does not exist')


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the connection is gone or the server is not serving."""
    if isinstance(err, _UNAVAILABLE):
        return True
    # A connection the server dropped mid-query can be left between protocol states;
    # asyncpg then refuses the next query on it. Only a new connection helps.
    if isinstance(err, pgerr.InternalClientError) and "cannot switch to state" in str(err):
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


def _column_values(event: es.Event) -> tuple[object, ...]:
    """An event's values for the columns of ``_COLUMNS``, in that order."""
    return (
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
        #: Connections that appended in their open transaction (see AppendTracker).
        self.appends = AppendTracker()

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
        """Append ``events`` to one aggregate. See ``EventStore.append``."""
        observers = self._config.observers
        if not observers:
            return await self._append(tx, expected, events)
        return await observed_append(
            observers,
            "postgres",
            expected,
            events,
            lambda events: self._append(tx, expected, events),
        )

    async def _append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate in a single statement. See ``EventStore``."""
        required = es.validate_append(expected, events)
        first = events[0]
        count = len(events)
        mode = "any" if required is None else "no_stream" if required == 0 else "exact"
        args: list[object] = [first.bounded_context, first.aggregate_type, first.aggregate_id]
        args.append(count)
        if required:
            args.append(required)
        shared: frozenset[str] | None = None
        if count == 1:
            args += _column_values(first)
        else:
            columns = list(zip(*(_column_values(event) for event in events), strict=True))
            shared = frozenset(
                name
                for (name, _), values in zip(_COLUMNS, columns, strict=True)
                if name in _SHAREABLE and values.count(values[0]) == len(values)
            )
            for (name, _), values in zip(_COLUMNS, columns, strict=True):
                args.append(values[0] if name in shared else list(values))
        # In a transaction this library manages, the backend notifies after the commit.
        sql = self._sql.append(mode, not self.appends.managed(tx), shared)
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        with translated(self._location):
            try:
                rows = await tx.fetch(sql, *args)
            except pgerr.UniqueViolationError as err:
                # The version is stored, but not as the head this append locked said:
                # events written without moving their head (not by this library).
                raise conflict_error(self._log, expected, first, actual=None) from err
            if not rows or rows[0][1] is None or len(rows) < count:
                raise await self._conflict(tx, expected, events, key, rows)
        if count > 1:
            rows = sorted(rows, key=lambda row: row[2])
        stored = [
            es.persisted(event, row[1], row[2]) for event, row in zip(events, rows, strict=True)
        ]
        positions = [row[1] for row in rows]
        self.appends.note(tx)
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

    async def _conflict(
        self,
        tx: Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        key: tuple[str, str, str],
        rows: Sequence[asyncpg.Record],
    ) -> OptimisticConcurrencyError:
        """Undo what an append that hit a conflict wrote, and say what the conflict was.

        No row: the head was not at the expected version and nothing was written. A row
        with fewer events than given: some event ids are already stored, so the events that
        did go in are deleted and the head is put back.
        """
        first, ids = events[0], [event.event_id for event in events]
        if rows:
            inserted = [row[1] for row in rows if row[1] is not None]
            if inserted:
                await tx.execute(self._sql.undo_events, inserted)
            base = rows[0][0] - len(events)
            if base == 0:
                await tx.execute(self._sql.undo_new_head, *key)
            else:
                await tx.execute(self._sql.undo_head, *key, base)
        version, duplicate = await tx.fetchrow(self._sql.conflict_facts, *key, ids) or (None, None)
        return conflict_error(
            self._log,
            expected,
            first,
            actual=version or 0,
            duplicate=bool(rows),
            event_id=duplicate,
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
                from_position, [row[_POSITION] for row in rows], lambda fence: xmin >= fence
            )
            # A transaction that already has an id got it before the hole was seen, so its
            # id is no fence; a later read (the next batch) takes one instead.
            if own_xid is None and self._holes.needs_fence():
                fence: int = await tx.fetchval(self._sql.take_fence)
                self._holes.set_fence(fence)
                self._log.debug("fenced holes in the log", fence=fence)
        make = es.make_persisted
        return [make(*row[:14]) for row in rows[:count]]

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
            bounded_context, aggregate_type, aggregate_id, [es.make_persisted(*row) for row in rows]
        )

    async def get_checkpoint(self, tx: Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        with translated(self._location):
            position: int | None = await tx.fetchval(self._sql.get_checkpoint, projection_name)
        return position or 0

    async def list_checkpoints(self, tx: Connection) -> list[CheckpointRow]:
        """Every checkpoint row, by name."""
        with translated(self._location):
            rows = await tx.fetch(self._sql.list_checkpoints)
        return [CheckpointRow(row[0], row[1], row[2]) for row in rows]

    async def event_types(self, tx: Connection) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        with translated(self._location):
            rows = await tx.fetch(self._sql.event_types)
        return [(row[0], row[1]) for row in rows]

    async def delete_checkpoints(self, tx: Connection, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        with translated(self._location):
            status = await tx.execute(self._sql.delete_checkpoints, names)
        return int(status.split()[-1])

    async def update_checkpoint(self, tx: Connection, projection_name: str, position: int) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        with translated(self._location):
            await tx.execute(self._sql.update_checkpoint, projection_name, position)


# pg_advisory_xact_lock key that serializes concurrent migrate() calls (CREATE ... IF NOT
# EXISTS is not safe against itself running concurrently).
_MIGRATE_LOCK = 0x7075_7073_6D69_6772  # "pupsmigr"

# Troubles that pass: retrying the batch is the answer.
_TRANSIENT: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    pgerr.DeadlockDetectedError,
    pgerr.SerializationError,
    pgerr.LockNotAvailableError,
)


def notify_channel(config: StoreConfig) -> str:
    """The channel appends notify and processors listen on."""
    return f"{config.events_table}_appended"


class PostgresBackend(BackendBase[Store]):
    """A PostgreSQL database reached through an asyncpg pool.

    Args:
        pool: The pool to take connections from. Each running processor holds one of its
            connections for its lease, and one more listens for notifications.
        store: The store bound to this database's tables.
        location: Where the database is, for messages.
        owns_pool: Whether :meth:`aclose` closes the pool.
    """

    dialect = "postgres"

    def __init__(
        self,
        pool: asyncpg.Pool[Any],
        *,
        store: Store,
        location: str = "PostgreSQL",
        owns_pool: bool = True,
    ) -> None:
        self._pool = pool
        super().__init__(store=store, location=location)
        self._owns_pool = owns_pool
        self._listener = _Listener(pool, notify_channel(store.config), self._appended)
        self._notifier = _Notifier(pool, notify_channel(store.config))

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
                f"could not connect to PostgreSQL at {location}: {url.scrub(str(err))}",
                location=location,
            ) from err
        return cls(pool, store=Store(store_config, location=location), location=location)

    @property
    def pool(self) -> asyncpg.Pool[Any]:
        """The asyncpg pool, for running your own queries."""
        return self._pool

    def _unavailable(self, action: str, err: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{action} on PostgreSQL at {self._location} failed: {err}", location=self._location
        )

    async def _acquire(self, action: str) -> PoolConnectionProxy[Any]:
        """A pooled connection; a server that does not answer is ``StoreUnavailableError``."""
        try:
            return await self._pool.acquire()
        except Exception as err:
            if is_unavailable(err):
                raise self._unavailable(action, err) from err
            raise

    def transaction(self) -> _Transaction:
        """A pooled connection inside a transaction; see ``Database.transaction``."""
        return _Transaction(self)

    async def migrate(self) -> None:
        """Create the tables and indexes if they do not exist; safe to run concurrently."""
        async with self.transaction() as connection:
            with translated(self._location):
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                for statement in schema_statements("postgres", self._store.config):
                    await connection.execute(statement)

    async def aclose(self) -> None:
        """Stop notifying and close the pool, if this backend opened it."""
        await self._notifier.aclose()
        if self._owns_pool:
            await self._pool.close()

    def is_transient(self, err: BaseException) -> bool:
        """Whether ``err`` is a lost connection, a deadlock or a serialization failure."""
        return isinstance(err, _TRANSIENT) or is_unavailable(err)

    async def lease_held(self, name: str) -> bool:
        """Whether any session holds the advisory lock of checkpoint ``name``."""
        key = lease_key(self._store.config.events_table, name) & 0xFFFF_FFFF_FFFF_FFFF
        async with self.transaction() as connection:
            with translated(self._location):
                # pg_locks shows a bigint advisory key as two 32-bit halves.
                held: bool = await connection.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND objsubid = 1 AND classid::bigint = $1 "
                    "AND objid::bigint = $2 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database()))",
                    key >> 32,
                    key & 0xFFFF_FFFF,
                )
        return held

    @asynccontextmanager
    async def lease(self, name: str, *, poll_interval: float, log: Logger) -> AsyncIterator[_Lease]:
        """Hold a session advisory lock on checkpoint ``name`` on a connection of its own.

        The lock goes with the connection: if it dies, the server releases the lock, and
        the batch that notices fails (batches run on this same connection).
        """
        key = lease_key(self._store.config.events_table, name)
        connection = await self._acquire("getting a connection for a lease")

        async def try_lock() -> bool:
            with translated(self._location):
                # An advisory lock assigns no transaction id, so it never spoils a fence.
                locked: bool = await connection.fetchval("SELECT pg_try_advisory_lock($1)", key)
            return locked

        try:
            await wait_for_lock(try_lock, checkpoint=name, poll_interval=poll_interval, log=log)
            yield _Lease(self, connection)
        finally:
            # Releasing resets the connection, which unlocks every advisory lock it holds;
            # asyncpg shields the release from cancellation.
            await self._pool.release(connection)

    @asynccontextmanager
    async def news(self) -> AsyncIterator[_News]:
        """Wake-ups from LISTEN on the store's channel, shared by this backend's processors."""
        await self._listener.subscribe()
        try:
            yield _News(self._listener, self._appended)
        finally:
            await shielded(self._listener.unsubscribe())


class Processor(projection.Processor):
    """A projection processor on a pool you own.

    Args:
        pool: Your asyncpg pool; each running projection holds one connection for its
            lease, and one more listens for notifications.
        store: The store to read (share one per database).
        config: How to run.
    """

    def __init__(
        self, pool: asyncpg.Pool[Any], store: Store, config: ProcessorConfig | None = None
    ) -> None:
        super().__init__(PostgresBackend(pool, store=store, owns_pool=False), config)


class _Lease:
    __slots__ = ("_backend", "_connection")

    def __init__(self, backend: PostgresBackend, connection: PoolConnectionProxy[Any]) -> None:
        self._backend = backend
        self._connection = connection

    def transaction(self) -> _Transaction:
        return _Transaction(self._backend, self._connection)


class _Listener:
    """One LISTEN connection per backend, shared by its processors, reconnected on demand.

    A notification is only a hint: a lost one costs a processor at most its idle wait.
    """

    def __init__(self, pool: asyncpg.Pool[Any], channel: str, signal: Signal) -> None:
        self._pool = pool
        self._channel = channel
        self._signal = signal
        self._users = 0
        self._connection: PoolConnectionProxy[Any] | None = None
        self._lock = asyncio.Lock()
        self._log = get_logger(None, "pupsourcing_async.projection")

    def _notified(self, *_: object) -> None:
        self._signal.fire()

    async def subscribe(self) -> None:
        self._users += 1
        await self.ensure()

    async def unsubscribe(self) -> None:
        self._users -= 1
        if self._users == 0:
            async with self._lock:
                await self._drop()

    async def ensure(self) -> None:
        """Listen again if the connection died; on failure, processors just poll."""
        if self._users == 0 or _alive(self._connection):
            return
        async with self._lock:
            if _alive(self._connection):
                return
            await self._drop()
            try:
                self._connection = await self._pool.acquire()
                await self._connection.add_listener(self._channel, self._notified)
            except Exception as err:
                self._log.error(
                    "cannot listen for new events; polling instead",
                    channel=self._channel,
                    error=f"{type(err).__name__}: {err}",
                )
                await self._drop()
                return
            # Anything appended while nobody listened would be missed: look once.
            self._signal.fire()

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if _alive(connection):
            with contextlib.suppress(Exception):
                await connection.remove_listener(self._channel, self._notified)
        with contextlib.suppress(Exception):
            await self._pool.release(connection)


def _alive(connection: PoolConnectionProxy[Any] | None) -> bool:
    """Whether a pooled connection is still usable; the pool takes back one the server
    closed, after which its proxy refuses even ``is_closed()``."""
    if connection is None:
        return False
    try:
        return not connection.is_closed()
    except asyncpg.InterfaceError:
        return False


_NOTIFY_INTERVAL = 0.005


class _Notifier:
    """Sends the store's NOTIFY after appends commit, outside their transactions.

    Commits that poke it while a NOTIFY is on its way share the next one: processors only
    need to know that the log grew, not how often. The NOTIFY runs in a transaction of its
    own that writes nothing, so the lock PostgreSQL takes to order notifications is held
    for an instant instead of across a writer's WAL flush.
    """

    def __init__(self, pool: asyncpg.Pool[Any], channel: str) -> None:
        self._pool = pool
        self._channel = channel
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger(None, "pupsourcing_async.store")

    def poke(self) -> None:
        """Note that an append committed; a NOTIFY follows shortly."""
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._pending:
            self._pending = False
            try:
                async with self._pool.acquire() as connection:
                    await connection.execute("SELECT pg_notify($1, '')", self._channel)
            except Exception as err:
                # Only a hint is lost: processors elsewhere find the events by polling.
                self._log.debug("notify failed", channel=self._channel, error=str(err))
                return
            # At most one NOTIFY per interval under a stream of commits; the first one after
            # a quiet spell goes at once.
            await asyncio.sleep(_NOTIFY_INTERVAL)

    async def aclose(self) -> None:
        """Send what is pending, then stop."""
        task, self._task = self._task, None
        if task is not None:
            await shielded(task)


class _News:
    __slots__ = ("_listener", "_signal")

    def __init__(self, listener: _Listener, signal: Signal) -> None:
        self._listener = listener
        self._signal = signal

    def watch(self) -> Watch:
        return self._signal.watch()

    async def wait(self, watch: Watch, timeout: float) -> bool:
        await self._listener.ensure()
        return await watch.wait(timeout)


class _Transaction:
    """``PostgresBackend.transaction()``: a class rather than a generator, as it is on the
    path of every append and batch. With ``connection`` (a lease's) it neither acquires nor
    releases one."""

    __slots__ = ("_backend", "_connection", "_owned", "_transaction")

    def __init__(
        self, backend: PostgresBackend, connection: PoolConnectionProxy[Any] | None = None
    ) -> None:
        self._backend = backend
        self._owned = connection is None
        if connection is not None:
            self._connection = connection

    async def __aenter__(self) -> PoolConnectionProxy[Any]:
        backend = self._backend
        if self._owned:
            self._connection = await backend._acquire("getting a connection")
        connection = self._connection
        started = False
        try:
            self._transaction = connection.transaction()
            await self._transaction.start()
            started = True
        except Exception as err:
            if is_unavailable(err):
                raise backend._unavailable("BEGIN", err) from err
            raise
        finally:
            if not started and self._owned:
                await backend._pool.release(connection)
        backend._store.appends.begin(connection)
        return connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        backend = self._backend
        appended = backend._store.appends.end(self._connection)
        try:
            if exc_type is None:
                try:
                    await self._transaction.commit()
                except Exception as err:
                    if is_unavailable(err):
                        raise StoreUnavailableError(
                            f"the connection to PostgreSQL at {backend._location} failed "
                            "during COMMIT; the transaction may or may not have committed: "
                            f"{err}",
                            location=backend._location,
                        ) from err
                    raise
                if appended:
                    backend._appended.fire()
                    backend._notifier.poke()
            else:
                await _rollback_quietly(self._transaction)
        finally:
            if self._owned:
                # asyncpg shields the release itself, and rolls back what is left open.
                await backend._pool.release(self._connection)


async def _rollback_quietly(transaction: Any) -> None:
    # The block's own exception is the one worth raising; a rollback on a broken
    # connection fails too, and the pool discards that connection on release.
    try:
        await shielded(transaction.rollback())
    except Exception:
        get_logger(None, "pupsourcing_async.database").debug("rollback failed")
