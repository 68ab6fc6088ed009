"""The event store on SQLite: appends, reads and checkpoints."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from ... import es
from ..._async import shielded
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
        observers = self._config.observers
        if not observers:
            return await self._append(tx, expected, events)
        return await observed_append(
            observers, "sqlite", expected, events, lambda events: self._append(tx, expected, events)
        )

    async def _append(
        self, tx: aiosqlite.Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Outside a transaction the append opens its own (``BEGIN IMMEDIATE``) and commits it."""
        required = es.validate_append(expected, events)
        if tx.in_transaction:
            try:
                with translated(self._location):
                    return await self._append_in_transaction(tx, expected, required, events)
            except TransactionRolledBackError as err:
                # A busy timeout fails only the statement; the error promises the whole
                # transaction is gone, so make it so (and refuse a later COMMIT).
                self.appends.doom(tx, err)
                await rollback_quietly(tx)
                raise
        with translated(self._location):
            finished = False
            try:
                await tx.execute("BEGIN IMMEDIATE")
                result = await self._append_in_transaction(tx, expected, required, events)
                finished = True
            finally:
                if finished:
                    await shielded(tx.execute("COMMIT"))
                else:
                    # Queued behind a BEGIN that a cancellation may have left pending.
                    await rollback_quietly(tx)
            return result

    async def _append_in_transaction(
        self,
        tx: aiosqlite.Connection,
        expected: es.ExpectedVersion,
        required: int | None,
        events: Sequence[es.Event],
    ) -> es.AppendResult:
        first = events[0]
        count = len(events)
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        now = format_timestamp(datetime.now(UTC))
        if required is None:
            head = await tx.execute_fetchall(self._head_any, (*key, count, now))
        elif required == es.STREAM_EXISTS:
            head = await tx.execute_fetchall(self._head_exists, (count, now, *key))
        elif required == 0:
            head = await tx.execute_fetchall(self._head_no_stream, (*key, count, now))
        else:
            head = await tx.execute_fetchall(self._head_exact, (count, now, *key, required))
        if not head:
            stored = await self._stored(tx, events)
            if stored:
                return replayed(self._log, expected, events, stored)
            found = await tx.execute_fetchall(self._head_version, key)
            actual = next(iter(found), (0,))[0]
            raise conflict_error(self._log, expected, first, actual=actual)
        base = next(iter(head))[0] - count
        try:
            rows = await self._insert_events(tx, first, base, events)
        except sqlite3.IntegrityError as err:
            # The head moved but no event was stored: put the head back so a caller who
            # commits anyway does not persist a version without events.
            if base == 0:
                await tx.execute(self._head_delete, key)
            else:
                await tx.execute(self._head_restore, (base, *key))
            stored = await self._stored(tx, events)
            if stored:
                return replayed(self._log, expected, events, stored)
            # The version is taken by events written without moving their head.
            raise conflict_error(self._log, expected, first, actual=None) from err
        rows.sort(key=lambda row: row[1])
        persisted = [
            es.persisted(event, row[0], row[1]) for event, row in zip(events, rows, strict=True)
        ]
        positions = [row[0] for row in rows]
        self.appends.note(tx, positions[-1])
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=base + 1,
            to_version=base + count,
            positions=positions,
        )
        return es.AppendResult(persisted, positions)

    async def _insert_events(
        self, tx: aiosqlite.Connection, first: es.Event, base: int, events: Sequence[es.Event]
    ) -> list[tuple[int, int]]:
        """Insert the events; their (position, version) pairs.

        One event: an INSERT ... RETURNING. Several: one prepared INSERT run per row
        (cheaper in SQLite than a long multi-row statement), then the last rowid. The
        positions are consecutive: this transaction holds SQLite's one write lock, and an
        AUTOINCREMENT key gives each row the next number.
        """
        rows = [
            (
                first.bounded_context,
                first.aggregate_type,
                first.aggregate_id,
                base + offset,
                str(event.event_id),
                event.event_type,
                event.event_version,
                event.payload,
                event.trace_id,
                event.correlation_id,
                event.causation_id,
                None if event.metadata is None else event.metadata.decode(),
                format_timestamp(event.created_at),
            )
            for offset, event in enumerate(events, start=1)
        ]
        if len(rows) == 1:
            returned = await tx.execute_fetchall(self._insert_one_returning, rows[0])
            return [(row[0], row[1]) for row in returned]
        try:
            await tx.executemany(self._insert_one, rows)
        except sqlite3.IntegrityError:
            # Rows before the failing one went in: take them out with the append.
            await tx.execute(self._delete_versions_above, (*rows[0][:3], base))
            raise
        last: int = next(iter(await tx.execute_fetchall("SELECT last_insert_rowid()")))[0]
        first_position = last - len(rows) + 1
        return [(first_position + index, base + index + 1) for index in range(len(rows))]

    async def _stored(
        self, tx: aiosqlite.Connection, events: Sequence[es.Event]
    ) -> dict[uuid.UUID, es.PersistedEvent]:
        """The stored events that have the ids of ``events``, by id (looked up after a
        conflict, to tell a retried append from a true duplicate)."""
        ids = [str(event.event_id) for event in events]
        found: dict[uuid.UUID, es.PersistedEvent] = {}
        # In chunks: SQLite limits the number of parameters of one statement.
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            rows = await tx.execute_fetchall(
                self._stored_ids + "(" + ", ".join("?" * len(chunk)) + ")", chunk
            )
            for row in rows:
                event = row_event(row)
                found[event.event_id] = event
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
