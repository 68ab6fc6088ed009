"""Parked events on SQLite (see ``pupsourcing_async.projection.parking``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import aiosqlite

from ... import es
from ...projection.parking import ParkedEvent, parked_table
from ...store import StoreConfig
from .errors import translated
from .timestamps import format_timestamp, parse_timestamp

_COLUMNS = "checkpoint, global_position, event_id, event_type, error, attempts, parked_at"


class ParkedEvents:
    """The parked events of one event store on SQLite.

    Args:
        config: The store's table names.
        location: The database file, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "SQLite") -> None:
        table = parked_table(config)
        self._location = location
        self._table = table
        self._park = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (checkpoint, global_position) DO UPDATE SET "
            "event_id = excluded.event_id, event_type = excluded.event_type, "
            "error = excluded.error, attempts = excluded.attempts, parked_at = excluded.parked_at"
        )
        self._all = f"SELECT {_COLUMNS} FROM {table} ORDER BY global_position, checkpoint"
        self._of = f"SELECT {_COLUMNS} FROM {table} WHERE checkpoint = ? ORDER BY global_position"
        self._summary = (
            f"SELECT p.checkpoint, c.parked, p.error FROM {table} AS p "
            "JOIN (SELECT checkpoint, count(*) AS parked, max(global_position) AS newest "
            f"FROM {table} GROUP BY checkpoint) AS c "
            "ON c.checkpoint = p.checkpoint AND c.newest = p.global_position"
        )
        self._claim = f"DELETE FROM {table} WHERE checkpoint = ? AND global_position = ?"
        self._attempted = (
            f"UPDATE {table} SET attempts = attempts + 1, error = ? "
            "WHERE checkpoint = ? AND global_position = ?"
        )

    async def park(
        self,
        tx: aiosqlite.Connection,
        checkpoint: str,
        event: es.PersistedEvent,
        error: str,
        attempts: int,
    ) -> None:
        """Record ``event`` as parked for ``checkpoint``; see ``ParkedStore.park``."""
        now = format_timestamp(datetime.now(UTC))
        values = (
            checkpoint,
            event.global_position,
            str(event.event_id),
            event.event_type,
            error,
            attempts,
            now,
        )
        with translated(self._location):
            await tx.execute(self._park, values)

    async def events(
        self, tx: aiosqlite.Connection, checkpoint: str | None = None
    ) -> list[ParkedEvent]:
        """The parked events, in log order; see ``ParkedStore.events``."""
        with translated(self._location):
            if checkpoint is None:
                rows = await tx.execute_fetchall(self._all)
            else:
                rows = await tx.execute_fetchall(self._of, (checkpoint,))
        return [
            ParkedEvent(r[0], r[1], uuid.UUID(r[2]), r[3], r[4], r[5], parse_timestamp(r[6]))
            for r in rows
        ]

    async def summary(self, tx: aiosqlite.Connection) -> dict[str, tuple[int, str]]:
        """How many per checkpoint, and the newest one's error."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._summary)
        return {row[0]: (int(row[1]), row[2]) for row in rows}

    async def claim(self, tx: aiosqlite.Connection, checkpoint: str, global_position: int) -> bool:
        """Delete one record; whether it was there."""
        with translated(self._location):
            cursor = await tx.execute(self._claim, (checkpoint, global_position))
        return cursor.rowcount > 0

    async def attempted(
        self, tx: aiosqlite.Connection, checkpoint: str, global_position: int, error: str
    ) -> None:
        """Count a failed retry of one record."""
        with translated(self._location):
            await tx.execute(self._attempted, (error, checkpoint, global_position))

    async def delete(self, tx: aiosqlite.Connection, checkpoints: Sequence[str]) -> int:
        """Delete the records of ``checkpoints``; how many there were."""
        if not checkpoints:
            return 0
        marks = ", ".join("?" * len(checkpoints))
        with translated(self._location):
            cursor = await tx.execute(
                f"DELETE FROM {self._table} WHERE checkpoint IN ({marks})", list(checkpoints)
            )
        return cursor.rowcount
