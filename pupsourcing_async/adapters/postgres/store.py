"""The event store on PostgreSQL: appends, gap-safe reads and checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg
import asyncpg.exceptions as pgerr
from asyncpg.pool import PoolConnectionProxy

from ... import es
from ..._holes import HoleTracker, PendingHole
from ...errors import OptimisticConcurrencyError
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
)
from ..base import CheckpointRow
from .errors import translated
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
                for (name, _), values in zip(COLUMNS, columns, strict=True)
                if name in SHAREABLE and values.count(values[0]) == len(values)
            )
            for (name, _), values in zip(COLUMNS, columns, strict=True):
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
