"""Aggregate snapshots on PostgreSQL (see ``pupsourcing_async.snapshots``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...snapshots import (
    Snapshot,
    SnapshotSummary,
    check_aggregate_key,
    check_purge_filters,
    check_schema_version,
    snapshots_table,
)
from ...store import StoreConfig
from .errors import translated

if TYPE_CHECKING:
    from .store import Connection


class Snapshots:
    """The snapshots of one event store on PostgreSQL.

    Args:
        config: The store's table names.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "PostgreSQL") -> None:
        table, heads = snapshots_table(config), config.aggregate_heads_table
        self._location = location
        self._table = table
        self._save = f"""
INSERT INTO {table} AS s (bounded_context, aggregate_type, aggregate_id, schema_version,
    aggregate_version, snapshot_type, payload, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())
ON CONFLICT (bounded_context, aggregate_type, aggregate_id, schema_version) DO UPDATE
    SET aggregate_version = EXCLUDED.aggregate_version, snapshot_type = EXCLUDED.snapshot_type,
        payload = EXCLUDED.payload, created_at = EXCLUDED.created_at
    WHERE EXCLUDED.aggregate_version > s.aggregate_version
"""
        # The head is read in the same statement, hence the same snapshot, as the row.
        self._load = f"""
SELECT s.aggregate_version, s.snapshot_type, s.payload, s.created_at
FROM {table} AS s JOIN {heads} AS h ON h.bounded_context = s.bounded_context
    AND h.aggregate_type = s.aggregate_type AND h.aggregate_id = s.aggregate_id
WHERE s.bounded_context = $1 AND s.aggregate_type = $2 AND s.aggregate_id = $3
    AND s.schema_version = $4 AND s.aggregate_version <= h.aggregate_version
"""
        self._summary = f"""
SELECT bounded_context, aggregate_type, snapshot_type, schema_version, count(*),
    sum(octet_length(payload)), max(octet_length(payload)), min(created_at), max(created_at)
FROM {table}
GROUP BY bounded_context, aggregate_type, snapshot_type, schema_version
ORDER BY bounded_context, aggregate_type, snapshot_type, schema_version
"""

    async def save(self, tx: Connection, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless one as new is stored; see ``SnapshotStore.save``."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
        s = snapshot
        with translated(self._location):
            status = await tx.execute(
                self._save,
                s.bounded_context,
                s.aggregate_type,
                s.aggregate_id,
                s.schema_version,
                s.aggregate_version,
                s.snapshot_type,
                s.payload,
            )
        return status.split()[-1] != "0"

    async def load(
        self,
        tx: Connection,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        schema_version: int,
    ) -> Snapshot | None:
        """The aggregate's snapshot of ``schema_version``; see ``SnapshotStore.load``."""
        check_aggregate_key(bounded_context, aggregate_type, aggregate_id)
        check_schema_version(schema_version)
        with translated(self._location):
            row = await tx.fetchrow(
                self._load, bounded_context, aggregate_type, aggregate_id, schema_version
            )
        if row is None:
            return None
        return Snapshot(
            bounded_context,
            aggregate_type,
            aggregate_id,
            row[0],
            row[1],
            schema_version,
            bytes(row[2]),
            row[3],
        )

    async def summary(self, tx: Connection) -> list[SnapshotSummary]:
        """The snapshots, grouped; see ``SnapshotStore.summary``."""
        with translated(self._location):
            rows = await tx.fetch(self._summary)
        return [
            SnapshotSummary(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7], r[8]) for r in rows
        ]

    async def purge(
        self,
        tx: Connection,
        *,
        bounded_context: str | None = None,
        aggregate_type: str | None = None,
        snapshot_type: str | None = None,
        schema_version: int | None = None,
    ) -> int:
        """Delete the snapshots matching every filter; see ``SnapshotStore.purge``."""
        conditions = check_purge_filters(
            bounded_context, aggregate_type, snapshot_type, schema_version
        )
        where = " AND ".join(f"{column} = ${n}" for n, (column, _) in enumerate(conditions, 1))
        sql = f"DELETE FROM {self._table}" + (f" WHERE {where}" if where else "")
        with translated(self._location):
            status = await tx.execute(sql, *(value for _, value in conditions))
        return int(status.split()[-1])
