"""The peer library ``eventsourcing``, measured through its recorders.

The benchmark drives eventsourcing's storage layer directly, not its domain model: an
``ApplicationRecorder`` (``PostgresApplicationRecorder``, ``SQLiteApplicationRecorder``)
for events and a ``TrackingRecorder`` for projection positions, with its default
settings, on tables of its own (PostgreSQL: a schema of its own; SQLite: a database file
of its own). It has no MySQL recorder, so it does not run on MariaDB.

Each of our events becomes one ``StoredEvent``: ``originator_id`` the aggregate id,
``originator_version`` its version (1, 2, ...), ``topic`` a constant, ``state`` a JSON
object of the event id, creation time, correlation id, metadata and payload (what the
other sides store in columns). Building it is timed, as the other sides' row building is.

- W1: ``insert_events([one])`` per event; W2: ``insert_events(batch)`` per batch. The
  writer owns its aggregate and knows each version; a duplicate version fails with its
  ``IntegrityError`` (its conflict). On PostgreSQL each call is one transaction that
  takes an ``EXCLUSIVE`` lock on the events table (so positions commit in order: its
  gap safety), sends ``NOTIFY`` and inserts the rows from a composite-type array,
  pipelined; on SQLite one transaction of one ``INSERT`` per event.
- W3: ``select_notifications(position, page, inclusive_of_start=False)`` until empty,
  ``Notification`` objects as it returns them. W5: ``select_events(aggregate_id)``.
- W4: pages of ``select_notifications`` as in W3; per page, the no-op handler records
  ``insert_tracking`` of the page's last id, and the upsert handler runs, in one
  transaction of the tracking recorder's datastore, the read-model upsert per event and
  the tracking record (what its materialised views do; its own ``ProjectionRunner``
  records one tracking per event, which would be slower). The start is
  ``max_tracking_id``.
- W6 is not run: its subscriptions are blocking iterators on threads of their own, with
  no counterpart of the writer-in-another-process row.

eventsourcing is synchronous: each writer (8 in W1's 8-writer row) and each reader runs
in a thread of its own, from an executor with one thread per writer, so the event loop
only waits. Its connection pool has as many connections as the other sides' pools.

eventsourcing and its PostgreSQL driver (psycopg, psycopg-pool) are optional (the
``bench`` extra): :func:`unavailable` says what is missing, and the side is skipped.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import json
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from pupsourcing_async import es

__all__ = [
    "EventsourcingSide",
    "TOPIC",
    "open_postgres",
    "open_sqlite",
    "stored_event",
    "unavailable",
]

T = TypeVar("T")

#: The topic of every stored event (eventsourcing names an event's class this way).
TOPIC = "bench.events:MoneyDeposited"

_NEEDS = {"postgres": ("eventsourcing", "psycopg", "psycopg_pool"), "sqlite": ("eventsourcing",)}


def unavailable(database: str) -> str | None:
    """Why eventsourcing cannot run on ``database`` (``postgres``, ``sqlite``, ``mysql``),
    or ``None`` if it can."""
    if database not in _NEEDS:
        return "eventsourcing has no MySQL recorder; not run on this database"
    missing = [name for name in _NEEDS[database] if not _installed(name)]
    if missing:
        return (
            f"eventsourcing skipped: {', '.join(missing)} not installed (pip install -e '.[bench]')"
        )
    return None


def _installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _module(name: str) -> Any:
    # Imported by name: eventsourcing is optional (the bench extra), also for type checking.
    return importlib.import_module(name)


def stored_event(stored_event_class: Any, event: es.Event, version: int) -> Any:
    """``event`` at aggregate ``version`` as eventsourcing's ``StoredEvent``."""
    state = b"".join(
        (
            b'{"event_id":"',
            str(event.event_id).encode(),
            b'","created_at":"',
            event.created_at.isoformat().encode(),
            b'","correlation_id":',
            json.dumps(event.correlation_id).encode(),
            b',"metadata":',
            event.metadata or b"null",
            b',"payload":',
            event.payload,
            b"}",
        )
    )
    return stored_event_class(
        originator_id=event.aggregate_id, originator_version=version, topic=TOPIC, state=state
    )


class EventsourcingSide:
    """eventsourcing's recorders as a benchmark side; see the module docstring.

    Args:
        recorder: Its application recorder, on its own tables.
        tracking: Its tracking recorder, on the same datastore.
        upsert: The read-model upsert (aggregate id, position) in the datastore's
            parameter style.
        threads: The executor's threads: one per concurrent writer.
    """

    def __init__(self, recorder: Any, tracking: Any, upsert: str, threads: int) -> None:
        self._recorder = recorder
        self._tracking = tracking
        self._upsert = upsert
        persistence = _module("eventsourcing.persistence")
        self._stored_event = persistence.StoredEvent
        self._tracking_class = persistence.Tracking
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="eventsourcing")

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    def close(self) -> None:
        """Wait for running calls, then close the connections."""
        self._executor.shutdown(wait=True)
        self._recorder.datastore.close()

    # The synchronous work, each call on one executor thread.

    def _append_singles(self, events: Sequence[es.Event]) -> None:
        insert, make = self._recorder.insert_events, self._stored_event
        for version, event in enumerate(events, 1):
            insert([stored_event(make, event, version)])

    def _append_batches(self, batches: Sequence[Sequence[es.Event]], version: int) -> None:
        insert, make = self._recorder.insert_events, self._stored_event
        for batch in batches:
            insert([stored_event(make, event, version + i) for i, event in enumerate(batch, 1)])
            version += len(batch)

    def _pages(self, page: int, start: int) -> Any:
        select = self._recorder.select_notifications
        position = start
        while notifications := select(position, page, inclusive_of_start=False):
            position = notifications[-1].id
            yield notifications

    def _read_all(self, page: int) -> int:
        return sum(len(notifications) for notifications in self._pages(page, 0))

    def _read_stream(self, aggregate_id: str) -> int:
        return len(self._recorder.select_events(aggregate_id))

    def _catch_up(self, name: str, batch: int, upsert: bool) -> int:
        tracking = self._tracking
        total = 0
        for notifications in self._pages(batch, tracking.max_tracking_id(name) or 0):
            record = self._tracking_class(name, notifications[-1].id)
            if upsert:
                with tracking.datastore.transaction(commit=True) as cursor:
                    for notification in notifications:
                        cursor.execute(self._upsert, (notification.originator_id, notification.id))
                    # What a materialised view's command does: its state and the
                    # tracking record in one transaction.
                    tracking._insert_tracking(cursor, record)
            else:
                tracking.insert_tracking(record)
            total += len(notifications)
        return total

    # The side's operations (bench.common.StoreSide).

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """``insert_events`` per event, in a thread; see the module docstring."""
        del exact  # the writer owns the aggregate and gives every version
        await self._in_thread(self._append_singles, events)

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """``insert_events`` per batch, in a thread."""
        del exact
        await self._in_thread(self._append_batches, batches, version)

    async def read_all(self, page: int) -> int:
        """``select_notifications`` pages until empty, in a thread."""
        return await self._in_thread(self._read_all, page)

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """``select_events`` of the aggregate, in a thread."""
        del bounded_context, aggregate_type  # its stream key is the originator id alone
        return await self._in_thread(self._read_stream, aggregate_id)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """Pages of notifications with a tracking record each, in a thread."""
        return await self._in_thread(self._catch_up, projection_name, batch, upsert)


def postgres_schema(prefix: str) -> str:
    """The PostgreSQL schema that holds eventsourcing's tables and types."""
    return f"{prefix}es"


#: eventsourcing's table names (in its own schema or file).
EVENTS_TABLE = "events"
TRACKING_TABLE = "tracking"
READ_MODEL_TABLE = "readmodel"


@asynccontextmanager
async def open_postgres(url: str, prefix: str, size: int) -> AsyncIterator[EventsourcingSide]:
    """eventsourcing on PostgreSQL in the (existing, empty) schema for ``prefix``.

    Creates its tables there, with a pool of ``size`` connections and ``size`` threads.
    """
    postgres = _module("eventsourcing.postgres")
    parts = urlsplit(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    schema = postgres_schema(prefix)
    datastore = postgres.PostgresDatastore(
        parts.path.lstrip("/") or "postgres",
        parts.hostname or "localhost",
        parts.port or 5432,
        unquote(parts.username or "postgres"),
        unquote(parts.password or ""),
        pool_size=size,
        schema=schema,
        originator_id_type="text",
    )
    side: EventsourcingSide | None = None
    try:
        recorder = postgres.PostgresApplicationRecorder(datastore, events_table_name=EVENTS_TABLE)
        tracking = postgres.PostgresTrackingRecorder(datastore, tracking_table_name=TRACKING_TABLE)
        read_model = f"{schema}.{READ_MODEL_TABLE}"

        def create() -> None:
            recorder.create_table()
            tracking.create_table()
            with datastore.transaction(commit=True) as cursor:
                cursor.execute(
                    f"CREATE TABLE {read_model} (aggregate_id TEXT PRIMARY KEY, "
                    "events BIGINT NOT NULL, last_position BIGINT NOT NULL)"
                )

        await asyncio.to_thread(create)
        upsert = (
            f"INSERT INTO {read_model} AS r (aggregate_id, events, last_position) "
            "VALUES (%s, 1, %s) ON CONFLICT (aggregate_id) "
            "DO UPDATE SET events = r.events + 1, last_position = EXCLUDED.last_position"
        )
        side = EventsourcingSide(recorder, tracking, upsert, size)
        yield side
    finally:
        if side is not None:
            await asyncio.to_thread(side.close)
        else:
            await asyncio.to_thread(datastore.close)


@asynccontextmanager
async def open_sqlite(
    path: str, size: int, busy_timeout: float
) -> AsyncIterator[EventsourcingSide]:
    """eventsourcing on SQLite in the database file ``path`` (its own).

    Creates its tables there, with a pool of ``size`` connections and ``size`` threads.
    """
    sqlite = _module("eventsourcing.sqlite")
    datastore = sqlite.SQLiteDatastore(
        path,
        pool_size=size,
        max_overflow=0,
        lock_timeout=int(busy_timeout),
        originator_id_type="text",
    )
    side: EventsourcingSide | None = None
    try:
        recorder = sqlite.SQLiteApplicationRecorder(datastore, events_table_name=EVENTS_TABLE)
        tracking = sqlite.SQLiteTrackingRecorder(datastore)

        def create() -> None:
            recorder.create_table()
            tracking.create_table()
            with datastore.transaction(commit=True) as cursor:
                cursor.execute(
                    f"CREATE TABLE {READ_MODEL_TABLE} (aggregate_id TEXT PRIMARY KEY, "
                    "events INTEGER NOT NULL, last_position INTEGER NOT NULL)"
                )

        await asyncio.to_thread(create)
        upsert = (
            f"INSERT INTO {READ_MODEL_TABLE} (aggregate_id, events, last_position) "
            "VALUES (?, 1, ?) ON CONFLICT (aggregate_id) "
            "DO UPDATE SET events = events + 1, last_position = excluded.last_position"
        )
        side = EventsourcingSide(recorder, tracking, upsert, size)
        yield side
    finally:
        if side is not None:
            await asyncio.to_thread(side.close)
        else:
            await asyncio.to_thread(datastore.close)
