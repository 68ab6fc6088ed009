"""Parked events on PostgreSQL (see ``pupsourcing_async.projection.parking``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ... import es
from ...projection.parking import ParkedEvent, parked_table
from ...store import StoreConfig
from .errors import translated

if TYPE_CHECKING:
    from .store import Connection

_COLUMNS = "checkpoint, global_position, event_id, event_type, error, attempts, parked_at"


class ParkedEvents:
    """The parked events of one event store on PostgreSQL.

    Args:
        config: The store's table names.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "PostgreSQL") -> None:
        table = parked_table(config)
        self._location = location
        self._park = f"""
INSERT INTO {table} ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, now())
ON CONFLICT (checkpoint, global_position) DO UPDATE
    SET event_id = EXCLUDED.event_id, event_type = EXCLUDED.event_type,
        error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = EXCLUDED.parked_at
"""
        self._all = f"SELECT {_COLUMNS} FROM {table} ORDER BY global_position, checkpoint"
        self._of = f"SELECT {_COLUMNS} FROM {table} WHERE checkpoint = $1 ORDER BY global_position"
        self._summary = f"""
SELECT p.checkpoint, c.parked, p.error FROM {table} AS p
JOIN (SELECT checkpoint, count(*) AS parked, max(global_position) AS newest
      FROM {table} GROUP BY checkpoint) AS c
    ON c.checkpoint = p.checkpoint AND c.newest = p.global_position
"""
        self._claim = f"DELETE FROM {table} WHERE checkpoint = $1 AND global_position = $2"
        self._attempted = (
            f"UPDATE {table} SET attempts = attempts + 1, error = $3 "
            "WHERE checkpoint = $1 AND global_position = $2"
        )
        self._delete = f"DELETE FROM {table} WHERE checkpoint = ANY($1::text[])"

    async def park(
        self, tx: Connection, checkpoint: str, event: es.PersistedEvent, error: str, attempts: int
    ) -> None:
        """Record ``event`` as parked for ``checkpoint``; see ``ParkedStore.park``."""
        with translated(self._location):
            await tx.execute(
                self._park,
                checkpoint,
                event.global_position,
                event.event_id,
                event.event_type,
                error,
                attempts,
            )

    async def events(self, tx: Connection, checkpoint: str | None = None) -> list[ParkedEvent]:
        """The parked events, in log order; see ``ParkedStore.events``."""
        with translated(self._location):
            if checkpoint is None:
                rows = await tx.fetch(self._all)
            else:
                rows = await tx.fetch(self._of, checkpoint)
        return [ParkedEvent(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    async def summary(self, tx: Connection) -> dict[str, tuple[int, str]]:
        """How many per checkpoint, and the newest one's error."""
        with translated(self._location):
            rows = await tx.fetch(self._summary)
        return {row[0]: (int(row[1]), row[2]) for row in rows}

    async def claim(self, tx: Connection, checkpoint: str, global_position: int) -> bool:
        """Delete one record; whether it was there."""
        with translated(self._location):
            status = await tx.execute(self._claim, checkpoint, global_position)
        return status.split()[-1] != "0"

    async def attempted(
        self, tx: Connection, checkpoint: str, global_position: int, error: str
    ) -> None:
        """Count a failed retry of one record."""
        with translated(self._location):
            await tx.execute(self._attempted, checkpoint, global_position, error)

    async def delete(self, tx: Connection, checkpoints: Sequence[str]) -> int:
        """Delete the records of ``checkpoints``; how many there were."""
        if not checkpoints:
            return 0
        with translated(self._location):
            status = await tx.execute(self._delete, list(checkpoints))
        return int(status.split()[-1])
