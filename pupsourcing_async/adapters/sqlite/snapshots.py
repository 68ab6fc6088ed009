"""Aggregate snapshots on SQLite (see ``pupsourcing_async.snapshots``)."""

from __future__ import annotations

from datetime import UTC, datetime

import aiosqlite

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
from .timestamps import format_timestamp, parse_timestamp


class Snapshots:
    """The snapshots of one event store on SQLite.

    Args:
        config: The store's table names.
        location: The database file, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "SQLite") -> None:
        table, heads = snapshots_table(config), config.aggregate_heads_table
        self._location = location
        self._table = table
        self._save = (
            f"INSERT INTO {table} AS s (bounded_context, aggregate_type, aggregate_id, "
            "schema_version, aggregate_version, snapshot_type, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id, schema_version) "
            "DO UPDATE SET aggregate_version = excluded.aggregate_version, "
            "snapshot_type = excluded.snapshot_type, payload = excluded.payload, "
            "created_at = excluded.created_at "
            "WHERE excluded.aggregate_version > s.aggregate_version"
        )
        self._load = (
            "SELECT s.aggregate_version, s.snapshot_type, s.payload, s.created_at "
            f"FROM {table} AS s JOIN {heads} AS h ON h.bounded_context = s.bounded_context "
            "AND h.aggregate_type = s.aggregate_type AND h.aggregate_id = s.aggregate_id "
            "WHERE s.bounded_context = ? AND s.aggregate_type = ? AND s.aggregate_id = ? "
            "AND s.schema_version = ? AND s.aggregate_version <= h.aggregate_version"
        )
        self._summary = (
            "SELECT bounded_context, aggregate_type, snapshot_type, schema_version, count(*), "
            "sum(length(payload)), max(length(payload)), min(created_at), max(created_at) "
            f"FROM {table} GROUP BY bounded_context, aggregate_type, snapshot_type, "
            "schema_version ORDER BY bounded_context, aggregate_type, snapshot_type, "
            "schema_version"
        )

    async def save(self, tx: aiosqlite.Connection, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless one as new is stored; see ``SnapshotStore.save``."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
        s = snapshot
        now = format_timestamp(datetime.now(UTC))
        with translated(self._location):
            cursor = await tx.execute(
                self._save,
                (
                    s.bounded_context,
                    s.aggregate_type,
                    s.aggregate_id,
                    s.schema_version,
                    s.aggregate_version,
                    s.snapshot_type,
                    s.payload,
                    now,
                ),
            )
        return cursor.rowcount > 0

    async def load(
        self,
        tx: aiosqlite.Connection,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        schema_version: int,
    ) -> Snapshot | None:
        """The aggregate's snapshot of ``schema_version``; see ``SnapshotStore.load``."""
        check_aggregate_key(bounded_context, aggregate_type, aggregate_id)
        check_schema_version(schema_version)
        with translated(self._location):
            rows = await tx.execute_fetchall(
                self._load, (bounded_context, aggregate_type, aggregate_id, schema_version)
            )
        for version, snapshot_type, payload, created_at in rows:
            return Snapshot(
                bounded_context,
                aggregate_type,
                aggregate_id,
                version,
                snapshot_type,
                schema_version,
                payload if isinstance(payload, bytes) else str(payload).encode(),
                parse_timestamp(created_at),
            )
        return None

    async def summary(self, tx: aiosqlite.Connection) -> list[SnapshotSummary]:
        """The snapshots, grouped; see ``SnapshotStore.summary``."""
        with translated(self._location):
            rows = await tx.execute_fetchall(self._summary)
        return [
            SnapshotSummary(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                parse_timestamp(r[7]),
                parse_timestamp(r[8]),
            )
            for r in rows
        ]

    async def purge(
        self,
        tx: aiosqlite.Connection,
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
        where = " AND ".join(f"{column} = ?" for column, _ in conditions)
        sql = f"DELETE FROM {self._table}" + (f" WHERE {where}" if where else "")
        with translated(self._location):
            cursor = await tx.execute(sql, [value for _, value in conditions])
        return cursor.rowcount
