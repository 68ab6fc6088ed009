"""Parked events on MySQL and MariaDB (see ``pupsourcing_async.projection.parking``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ... import es
from ...projection.parking import ParkedEvent, parked_table
from ...store import StoreConfig
from .errors import translated
from .literals import render

if TYPE_CHECKING:
    from .store import Connection

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = (
    "checkpoint, global_position, event_id, event_type, error, attempts, "
    "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', parked_at)"
)


class ParkedEvents:
    """The parked events of one event store on MySQL or MariaDB.

    Args:
        config: The store's table names.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "MySQL") -> None:
        table = parked_table(config)
        self._location = location
        self._table = table
        self._park = (
            f"INSERT INTO {table} (checkpoint, global_position, event_id, event_type, error, "
            "attempts, parked_at) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON DUPLICATE KEY UPDATE event_id = VALUES(event_id), "
            "event_type = VALUES(event_type), error = VALUES(error), "
            "attempts = VALUES(attempts), parked_at = VALUES(parked_at)"
        )
        self._all = f"SELECT {_COLUMNS} FROM {table} ORDER BY global_position, checkpoint"
        self._of = f"SELECT {_COLUMNS} FROM {table} WHERE checkpoint = %s ORDER BY global_position"
        self._summary = (
            f"SELECT p.checkpoint, c.parked, p.error FROM {table} AS p "
            "JOIN (SELECT checkpoint, COUNT(*) AS parked, MAX(global_position) AS newest "
            f"FROM {table} GROUP BY checkpoint) AS c "
            "ON c.checkpoint = p.checkpoint AND c.newest = p.global_position"
        )
        self._claim = f"DELETE FROM {table} WHERE checkpoint = %s AND global_position = %s"
        self._attempted = (
            f"UPDATE {table} SET attempts = attempts + 1, error = %s "
            "WHERE checkpoint = %s AND global_position = %s"
        )

    async def park(
        self, tx: Connection, checkpoint: str, event: es.PersistedEvent, error: str, attempts: int
    ) -> None:
        """Record ``event`` as parked for ``checkpoint``; see ``ParkedStore.park``."""
        now = datetime.now(UTC).replace(tzinfo=None)
        values = (
            checkpoint,
            event.global_position,
            event.event_id.bytes,
            event.event_type,
            error,
            attempts,
            now,
        )
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(render(self._park, values))

    async def events(self, tx: Connection, checkpoint: str | None = None) -> list[ParkedEvent]:
        """The parked events, in log order; see ``ParkedStore.events``."""
        sql = self._all if checkpoint is None else render(self._of, [checkpoint])
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(sql)
                rows = await cursor.fetchall()
        return [
            ParkedEvent(
                r[0],
                int(r[1]),
                uuid.UUID(bytes=bytes(r[2])),
                r[3],
                r[4],
                int(r[5]),
                _EPOCH + timedelta(microseconds=int(r[6])),
            )
            for r in rows
        ]

    async def summary(self, tx: Connection) -> dict[str, tuple[int, str]]:
        """How many per checkpoint, and the newest one's error."""
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(self._summary)
                rows = await cursor.fetchall()
        return {row[0]: (int(row[1]), row[2]) for row in rows}

    async def claim(self, tx: Connection, checkpoint: str, global_position: int) -> bool:
        """Delete one record; whether it was there."""
        with translated(self._location):
            async with tx.cursor() as cursor:
                deleted = await cursor.execute(render(self._claim, [checkpoint, global_position]))
        return deleted > 0

    async def attempted(
        self, tx: Connection, checkpoint: str, global_position: int, error: str
    ) -> None:
        """Count a failed retry of one record."""
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(render(self._attempted, [error, checkpoint, global_position]))

    async def delete(self, tx: Connection, checkpoints: Sequence[str]) -> int:
        """Delete the records of ``checkpoints``; how many there were."""
        if not checkpoints:
            return 0
        marks = ", ".join(["%s"] * len(checkpoints))
        sql = f"DELETE FROM {self._table} WHERE checkpoint IN ({marks})"
        with translated(self._location):
            async with tx.cursor() as cursor:
                return await cursor.execute(render(sql, list(checkpoints)))
