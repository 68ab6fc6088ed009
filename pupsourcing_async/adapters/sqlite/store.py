"""The event store on SQLite: appends, reads and checkpoints."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from ... import es
from ..._holes import PendingHole
from ...errors import StoreError, TransactionRolledBackError
from ...log import get_logger
from ...observe import observed_append
from ...store import StoreConfig, default_store_config
from .._shared import (
    AppendTracker,
    as_bytes,
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
    conflict_error,
    replayed,
)
from ..base import CheckpointRow
from .errors import translated
from .parked import ParkedEvents
from .pool import rollback_quietly
from .snapshots import Snapshots
from .timestamps import format_timestamp, parse_timestamp

_EVENT_COLUMNS = (
    "global_position, bounded_context, aggregate_type, aggregate_id, aggregate_version, "
    "event_id, event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, created_at"
)
_INSERT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, "
    "event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at"
)
_ROW_PLACEHOLDERS = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LOOKUP_CHUNK = 500


def row_event(row: Sequence[Any]) -> es.PersistedEvent:
    """The event of a row (columns as ``_EVENT_COLUMNS``)."""
    payload = row[8]
    try:
        created_at = parse_timestamp(row[13])
        event_id = uuid.UUID(row[5])
    except (ValueError, TypeError, AttributeError) as err:
        # Only a writer other than this library can have stored such a row.
        raise StoreError(
            f"the event at position {row[0]} has an unreadable event_id or created_at "
            f"({row[5]!r}, {row[13]!r}): {err}; fix the row to read past it"
        ) from err
    return es.make_persisted(
        row[1],
        row[2],
        row[3],
        row[6],
        payload if isinstance(payload, bytes) else as_bytes(payload) or b"",
        event_id,
        row[7],
        as_bytes(row[12]),
        row[9],
        row[10],
        row[11],
        created_at,
        row[0],
        row[4],
    )


@dataclass(slots=True)
class _Outcome:
    """What an append's statements found: positions, or a conflict and its facts."""

    base: int = 0
    positions: list[int] | None = None
    actual: int | None = None
    stored: list[tuple[Any, ...]] | None = None


def _rows(events: Sequence[es.Event]) -> list[list[object]]:
    """The INSERT values of ``events``; each row's version (index 3) is set once the head
    is known."""
    first = events[0]
    return [
        [
            first.bounded_context,
            first.aggregate_type,
            first.aggregate_id,
            0,
            str(event.event_id),
            event.event_type,
            event.event_version,
            event.payload,
            event.trace_id,
            event.correlation_id,
            event.causation_id,
            None if event.metadata is None else event.metadata.decode(),
            format_timestamp(event.created_at),
        ]
        for event in events
    ]


async def _on_thread(
    connection: aiosqlite.Connection, function: Callable[..., _Outcome], *args: object
) -> _Outcome:
    """Run ``function(raw_connection, *args)`` on the connection's own thread, in one call.

    aiosqlite offers no public way to run code on its thread; it has ``_execute`` (every
    version this library supports). Without it the statements go one by one.
    """
    execute = getattr(connection, "_execute", None)
    if execute is None:
        raise RuntimeError("this aiosqlite version cannot run a function on its thread")

    def run() -> _Outcome:
        return function(connection._conn, *args)

    outcome: _Outcome = await execute(run)
    return outcome


class Store:
    """The event store on SQLite.

    Args:
        config: Table names and logger; the defaults when omitted.
        location: The database file, used in error messages.
    """

    def __init__(self, config: StoreConfig | None = None, *, location: str = "SQLite") -> None:
        self._config = config or default_store_config()
        self._location = location
        self._log = get_logger(self._config.logger, "pupsourcing_async.store")
        #: The aggregate snapshots kept beside this store's events.
        self.snapshots = Snapshots(self._config, location=location)
        #: The events projections parked (``OnFailure.PARK``).
        self.parked = ParkedEvents(self._config, location=location)
        events, heads = self._config.events_table, self._config.aggregate_heads_table
        checkpoints = self._config.checkpoints_table
        key = "bounded_context = ? AND aggregate_type = ? AND aggregate_id = ?"
        self._head_any = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE SET "
            "aggregate_version = aggregate_version + excluded.aggregate_version, "
            "updated_at = excluded.updated_at RETURNING aggregate_version"
        )
        self._head_no_stream = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO NOTHING "
            "RETURNING aggregate_version"
        )
        self._head_exact = (
            f"UPDATE {heads} SET aggregate_version = aggregate_version + ?, updated_at = ? "
            f"WHERE {key} AND aggregate_version = ? RETURNING aggregate_version"
        )
        self._head_exists = (
            f"UPDATE {heads} SET aggregate_version = aggregate_version + ?, updated_at = ? "
            f"WHERE {key} AND aggregate_version > 0 RETURNING aggregate_version"
        )
        self._head_version = f"SELECT aggregate_version FROM {heads} WHERE {key}"
        self._head_restore = f"UPDATE {heads} SET aggregate_version = ? WHERE {key}"
        self._head_delete = f"DELETE FROM {heads} WHERE {key}"
        self._insert_one = f"INSERT INTO {events} ({_INSERT_COLUMNS}) VALUES {_ROW_PLACEHOLDERS}"
        self._insert_one_returning = (
            self._insert_one + " RETURNING global_position, aggregate_version"
        )
        self._delete_versions_above = f"DELETE FROM {events} WHERE {key} AND aggregate_version > ?"
        self._stored_ids = f"SELECT {_EVENT_COLUMNS} FROM {events} WHERE event_id IN "
        self._read_events = (
            f"SELECT {_EVENT_COLUMNS} FROM {events} WHERE global_position > ? "
            "ORDER BY global_position LIMIT ?"
        )
        self._latest = f"SELECT COALESCE(MAX(global_position), 0) FROM {events}"
        self._stream = (
            f"SELECT {_EVENT_COLUMNS} FROM {events} WHERE {key} "
            "AND aggregate_version >= ? AND aggregate_version <= ? ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = ?"
        )
        self._event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {events} "
            "ORDER BY event_type, event_version"
        )
        self._list_checkpoints = (
            "SELECT projection_name, last_global_position, updated_at "
            f"FROM {checkpoints} ORDER BY projection_name"
        )
        self._delete_checkpoint = f"DELETE FROM {checkpoints} WHERE projection_name = ?"
        #: Connections that appended in their open transaction (see AppendTracker).
        self.appends = AppendTracker()
        self._update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (?, ?, ?) ON CONFLICT (projection_name) DO UPDATE SET "
            "last_global_position = excluded.last_global_position, "
            "updated_at = excluded.updated_at"
        )

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        return self._config

    def pending_holes(self) -> list[PendingHole]:
        """Always empty: with one writer at a time, a hole below a visible position is dead."""
        return []

    async def append(
        self, tx: aiosqlite.Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate. See ``EventStore.append``.

        Outside a transaction the append opens its own (``BEGIN IMMEDIATE``) and commits it.
        """
        return await self._observed(tx, expected, events, alone=not tx.in_transaction)

    async def append_alone(
        self,
        connection: aiosqlite.Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
    ) -> es.AppendResult:
        """Append ``events`` in a transaction of its own on ``connection`` (in none). See
        ``Database.append``.

        Whether ``connection`` is in a transaction is checked on its thread, behind the
        statements still queued there (a cancelled caller's, say), never before them.
        """
        return await self._observed(connection, expected, events, alone=True)

    async def _observed(
        self,
        tx: aiosqlite.Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        *,
        alone: bool,
    ) -> es.AppendResult:
        observers = self._config.observers
        if not observers:
            return await self._append(tx, expected, events, alone)
        return await observed_append(
            observers,
            "sqlite",
            expected,
            events,
            lambda events: self._append(tx, expected, events, alone),
        )

    async def _append(
        self,
        tx: aiosqlite.Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        alone: bool,
    ) -> es.AppendResult:
        """The append's statements run in one call on the connection's thread: each call
        into aiosqlite is a round trip to that thread, and an append needs up to five
        statements. Outside a transaction the call begins (``BEGIN IMMEDIATE``) and commits
        its own."""
        required = es.validate_append(expected, events)
        first = events[0]
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        rows = _rows(events)
        now = format_timestamp(datetime.now(UTC))
        head: tuple[str, tuple[object, ...]]
        if required is None:
            head = (self._head_any, (*key, len(events), now))
        elif required == es.STREAM_EXISTS:
            head = (self._head_exists, (len(events), now, *key))
        elif required == 0:
            head = (self._head_no_stream, (*key, len(events), now))
        else:
            head = (self._head_exact, (len(events), now, *key, required))
        try:
            with translated(self._location):
                outcome = await _on_thread(tx, self._write, key, head, rows, alone)
        except TransactionRolledBackError as err:
            if not alone:
                # A busy timeout fails only the statement; the error promises the whole
                # transaction is gone, so make it so (and refuse a later COMMIT).
                self.appends.doom(tx, err)
                await rollback_quietly(tx)
            raise
        if outcome.stored:
            stored = {event.event_id: event for event in map(row_event, outcome.stored)}
            return replayed(self._log, expected, events, stored)
        if outcome.positions is None:
            # No head moved: the expected version did not hold, or (the head moved but an
            # event could not go in) the version is taken by events written without
            # moving their head.
            raise conflict_error(self._log, expected, first, actual=outcome.actual)
        base = outcome.base
        persisted = [
            es.persisted(event, position, base + offset)
            for offset, (event, position) in enumerate(
                zip(events, outcome.positions, strict=True), 1
            )
        ]
        if not alone:
            self.appends.note(tx, outcome.positions[-1])
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=base + 1,
            to_version=base + len(events),
            positions=outcome.positions,
        )
        return es.AppendResult(persisted, outcome.positions)

    def _write(
        self,
        connection: sqlite3.Connection,
        key: tuple[str, str, str],
        head: tuple[str, tuple[object, ...]],
        rows: list[list[object]],
        alone: bool,
    ) -> _Outcome:
        """The append on the connection's thread (see ``_append``)."""
        if alone:
            if connection.in_transaction:
                raise ValueError("append_alone needs a connection outside any transaction")
            connection.execute("BEGIN IMMEDIATE")
        committed = False
        try:
            outcome = self._write_in_transaction(connection, key, head, rows)
            if alone:
                connection.execute("COMMIT")
                committed = True
            return outcome
        finally:
            if alone and not committed and connection.in_transaction:
                # The statement's own error is the one worth raising; the backend
                # discards a connection that is left in a transaction.
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")

    def _write_in_transaction(
        self,
        connection: sqlite3.Connection,
        key: tuple[str, str, str],
        head: tuple[str, tuple[object, ...]],
        rows: list[list[object]],
    ) -> _Outcome:
        count = len(rows)
        moved = connection.execute(*head).fetchall()
        if not moved:
            stored = self._stored_rows(connection, rows)
            if stored:
                return _Outcome(stored=stored)
            found = connection.execute(self._head_version, key).fetchall()
            return _Outcome(actual=found[0][0] if found else 0)
        base = int(moved[0][0]) - count
        for offset, row in enumerate(rows, 1):
            row[3] = base + offset
        try:
            if count == 1:
                position = connection.execute(self._insert_one_returning, rows[0]).fetchall()
                positions = [int(position[0][0])]
            else:
                # One prepared INSERT run per row (cheaper in SQLite than a long multi-row
                # statement). The positions are consecutive: this transaction holds
                # SQLite's one write lock, and an AUTOINCREMENT key gives each row the next.
                connection.executemany(self._insert_one, rows)
                last = int(connection.execute("SELECT last_insert_rowid()").fetchall()[0][0])
                positions = list(range(last - count + 1, last + 1))
        except sqlite3.IntegrityError:
            # Rows before the failing one went in, and the head moved: take it all back,
            # so a caller who commits anyway persists no version without events.
            connection.execute(self._delete_versions_above, (*key, base))
            if base == 0:
                connection.execute(self._head_delete, key)
            else:
                connection.execute(self._head_restore, (base, *key))
            return _Outcome(stored=self._stored_rows(connection, rows))
        return _Outcome(base=base, positions=positions)

    def _stored_rows(
        self, connection: sqlite3.Connection, rows: list[list[object]]
    ) -> list[tuple[Any, ...]]:
        """The stored rows with the event ids of ``rows`` (looked up after a conflict, to
        tell a retried append from a true duplicate)."""
        ids = [row[4] for row in rows]
        found: list[tuple[Any, ...]] = []
        # In chunks: SQLite limits the number of parameters of one statement.
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            sql = self._stored_ids + "(" + ", ".join("?" * len(chunk)) + ")"
            found += connection.execute(sql, chunk).fetchall()
        return found

    async def read_events(
        self, tx: aiosqlite.Connection, from_position: int = 0, limit: int = 100
    ) -> list[es.PersistedEvent]:
        """Read events after ``from_position``. See ``EventStore.read_events``."""
        check_position("from_position", from_position)
        check_limit(limit)
        with translated(self._location):
            rows = await tx.execute_fetchall(self._read_events, (from_position, limit))
        return [row_event(row) for row in rows]

    async def latest_global_position(self, tx: aiosqlite.Connection) -> int:
        """The highest committed global position, 0 when the log is empty."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._latest)
        position: int = next(iter(rows))[0]
        return position

    async def read_aggregate_stream(
        self,
        tx: aiosqlite.Connection,
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
            rows = await tx.execute_fetchall(
                self._stream, (bounded_context, aggregate_type, aggregate_id, low, high)
            )
        return es.Stream(
            bounded_context, aggregate_type, aggregate_id, [row_event(row) for row in rows]
        )

    async def get_checkpoint(self, tx: aiosqlite.Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        with translated(self._location):
            rows = await tx.execute_fetchall(self._get_checkpoint, (projection_name,))
        position: int = next(iter(rows), (0,))[0]
        return position

    async def list_checkpoints(self, tx: aiosqlite.Connection) -> list[CheckpointRow]:
        """Every checkpoint row, by name."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._list_checkpoints)
        return [
            CheckpointRow(name, position, parse_timestamp(updated) if updated else None)
            for name, position, updated in rows
        ]

    async def event_types(self, tx: aiosqlite.Connection) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._event_types)
        return [(row[0], row[1]) for row in rows]

    async def delete_checkpoints(self, tx: aiosqlite.Connection, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        deleted = 0
        with translated(self._location):
            for name in names:
                cursor = await tx.execute(self._delete_checkpoint, (name,))
                deleted += cursor.rowcount
        return deleted

    async def update_checkpoint(
        self, tx: aiosqlite.Connection, projection_name: str, position: int
    ) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        now = format_timestamp(datetime.now(UTC))
        with translated(self._location):
            await tx.execute(self._update_checkpoint, (projection_name, position, now))
