"""The event store on PostgreSQL: appends, gap-safe reads and checkpoints."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import asyncpg.exceptions as pgerr
from asyncpg.pool import PoolConnectionProxy

from ... import es
from ..._holes import HoleTracker, PendingHole
from ...log import get_logger
from ...observe import observed_append
from ...store import StoreConfig, default_store_config
from .._shared import (
    AppendTracker,
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
from .snapshots import Snapshots
from .sql import COLUMNS, POSITION, SHAREABLE, Statements

#: What the store methods accept as ``tx``: a connection, or a pool's proxy of one.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"


def _column_values(event: es.Event) -> tuple[object, ...]:
    """An event's values for the columns of ``COLUMNS``, in that order."""
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


def _expected_holds(mode: str, required: int | None, head: int) -> bool:
    if mode == "any":
        return True
    if mode == "exists":
        return head > 0
    return head == required


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
        self._sql = Statements(self._config)
        self._holes: HoleTracker[int] = HoleTracker()
        self._location = location
        self._log = get_logger(self._config.logger, "pupsourcing_async.store")
        #: The aggregate snapshots kept beside this store's events.
        self.snapshots = Snapshots(self._config, location=location)
        #: The events projections parked (``OnFailure.PARK``).
        self.parked = ParkedEvents(self._config, location=location)
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
        return await self._observed(tx, expected, events, alone=False)

    async def append_alone(
        self, connection: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` in a statement of its own, on a connection in no transaction:
        one round trip, committed when it returns. See ``Database.append``."""
        return await self._observed(connection, expected, events, alone=True)

    async def _observed(
        self,
        tx: Connection,
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
            "postgres",
            expected,
            events,
            lambda events: self._append(tx, expected, events, alone),
        )

    async def _append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event], alone: bool
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate in a single statement. See ``EventStore``."""
        required = es.validate_append(expected, events)
        first = events[0]
        count = len(events)
        if required is None:
            mode = "any"
        elif required == es.STREAM_EXISTS:
            mode = "exists"
        else:
            mode = "exact" if required else "no_stream"
        args: list[object] = [first.bounded_context, first.aggregate_type, first.aggregate_id]
        args.append(count)
        if mode == "exact":
            args.append(required)
        shared: frozenset[str] | None = None
        if count == 1:
            args += _column_values(first)
        else:
            columns = list(zip(*(_column_values(event) for event in events), strict=True))
            shared = frozenset(
                name
                for (name, _), values in zip(COLUMNS, columns, strict=True)
                if name in SHAREABLE and values.count(values[0]) == len(values)
            )
            for (name, _), values in zip(COLUMNS, columns, strict=True):
                args.append(values[0] if name in shared else list(values))
        # In a transaction this library manages, the backend notifies after the commit.
        notify = not alone and not self.appends.managed(tx)
        sql = self._sql.append(mode, shared, alone=alone, notify=notify)
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        seen: int | None = None
        with translated(self._location):
            while True:
                try:
                    rows = await tx.fetch(sql, *args)
                except pgerr.UniqueViolationError:
                    # Alone, a conflicting row fails the statement, which wrote nothing.
                    rows = []
                if rows and rows[0][3]:
                    break
                # Nothing is kept: what went in before a skipped row is taken out again.
                inserted = [row[1] for row in rows if row[1] is not None]
                if inserted:
                    await tx.execute(self._sql.undo_events, inserted)
                stored = await self._stored(tx, events)
                if stored:
                    return replayed(self._log, expected, events, stored)
                head = rows[0][0] if rows else await self._head(tx, key)
                if not _expected_holds(mode, required, head):
                    raise conflict_error(self._log, expected, first, actual=head)
                # The expected version held, but another append took the version first.
                if mode not in ("any", "exists") or (seen is not None and head <= seen):
                    # Any() and StreamExists() try again at the new head; a head that did
                    # not move means versions stored past it (by a writer that left the
                    # head behind).
                    actual = await self._head(tx, key)
                    raise conflict_error(self._log, expected, first, actual=actual)
                seen = head
        if count > 1:
            rows = sorted(rows, key=lambda row: row[2])
        persisted = [
            es.persisted(event, row[1], row[2]) for event, row in zip(events, rows, strict=True)
        ]
        positions = [row[1] for row in rows]
        if not alone:
            self.appends.note(tx, positions[-1])
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=persisted[0].aggregate_version,
            to_version=persisted[-1].aggregate_version,
            positions=positions,
        )
        return es.AppendResult(persisted, positions)

    async def _stored(
        self, tx: Connection, events: Sequence[es.Event]
    ) -> dict[uuid.UUID, es.PersistedEvent]:
        """The stored events that have the ids of ``events``, by id."""
        rows = await tx.fetch(self._sql.stored_ids, [event.event_id for event in events])
        found = (es.make_persisted(*row) for row in rows)
        return {event.event_id: event for event in found}

    async def _head(self, tx: Connection, key: tuple[str, str, str]) -> int:
        version: int | None = await tx.fetchval(self._sql.head_version, *key)
        return version or 0

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
                from_position, [row[POSITION] for row in rows], lambda fence: xmin >= fence
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
