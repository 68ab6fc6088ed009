"""Aggregate snapshots on MySQL and MariaDB (see ``pupsourcing_async.snapshots``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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
from .literals import render

if TYPE_CHECKING:
    from .store import Connection

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(column: str) -> str:
    # Microseconds since the epoch, for DATETIME and (in the session's UTC) TIMESTAMP.
    return f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {column})"


def _moment(micros: int | None) -> datetime | None:
    return None if micros is None else _EPOCH + timedelta(microseconds=int(micros))


class Snapshots:
    """The snapshots of one event store on MySQL or MariaDB.

    Args:
        config: The store's table names.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig, *, location: str = "MySQL") -> None:
        table, heads = snapshots_table(config), config.aggregate_heads_table
        self._location = location
        self._table = table
        newer = "VALUES(aggregate_version) > aggregate_version"
        # MySQL assigns left to right, each assignment seeing the ones before it: the
        # version, which the others compare against, goes last.
        self._save = (
            f"INSERT INTO {table} (bounded_context, aggregate_type, aggregate_id, "
            "schema_version, aggregate_version, snapshot_type, payload, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, CURRENT_TIMESTAMP(6)) "
            f"ON DUPLICATE KEY UPDATE "
            f"snapshot_type = IF({newer}, VALUES(snapshot_type), snapshot_type), "
            f"payload = IF({newer}, VALUES(payload), payload), "
            f"created_at = IF({newer}, VALUES(created_at), created_at), "
            "aggregate_version = GREATEST(aggregate_version, VALUES(aggregate_version))"
        )
        self._load = (
            f"SELECT s.aggregate_version, s.snapshot_type, s.payload, {_micros('s.created_at')} "
            f"FROM {table} AS s JOIN {heads} AS h ON h.bounded_context = s.bounded_context "
            "AND h.aggregate_type = s.aggregate_type AND h.aggregate_id = s.aggregate_id "
            "WHERE s.bounded_context = %s AND s.aggregate_type = %s AND s.aggregate_id = %s "
            "AND s.schema_version = %s AND s.aggregate_version <= h.aggregate_version"
        )
        self._summary = (
            "SELECT bounded_context, aggregate_type, snapshot_type, schema_version, COUNT(*), "
            "SUM(LENGTH(payload)), MAX(LENGTH(payload)), "
            f"{_micros('MIN(created_at)')}, {_micros('MAX(created_at)')} "
            f"FROM {table} GROUP BY bounded_context, aggregate_type, snapshot_type, "
            "schema_version ORDER BY bounded_context, aggregate_type, snapshot_type, "
            "schema_version"
        )

    async def save(self, tx: Connection, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless one as new is stored; see ``SnapshotStore.save``."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"snapshot must be a Snapshot, got {type(snapshot).__name__}")
        s = snapshot
        async with tx.cursor() as cursor:
            with translated(self._location):
                # 1: inserted, 2: replaced, 0: the stored one is as new (left as it was).
                changed = await cursor.execute(
                    render(
                        self._save,
                        (
                            s.bounded_context,
                            s.aggregate_type,
                            s.aggregate_id,
                            s.schema_version,
                            s.aggregate_version,
                            s.snapshot_type,
                            s.payload,
                        ),
                    )
                )
        return changed > 0

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
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(
                    render(
                        self._load, (bounded_context, aggregate_type, aggregate_id, schema_version)
                    )
                )
                rows = await cursor.fetchall()
        for version, snapshot_type, payload, micros in rows:
            return Snapshot(
                bounded_context,
                aggregate_type,
                aggregate_id,
                int(version),
                snapshot_type,
                schema_version,
                bytes(payload),
                _moment(micros),
            )
        return None

    async def summary(self, tx: Connection) -> list[SnapshotSummary]:
        """The snapshots, grouped; see ``SnapshotStore.summary``."""
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._summary)
                rows = await cursor.fetchall()
        return [
            SnapshotSummary(
                r[0],
                r[1],
                r[2],
                int(r[3]),
                int(r[4]),
                int(r[5]),
                int(r[6]),
                _moment(r[7]),
                _moment(r[8]),
            )
            for r in rows
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
        where = " AND ".join(f"{column} = %s" for column, _ in conditions)
        sql = f"DELETE FROM {self._table}" + (f" WHERE {where}" if where else "")
        async with tx.cursor() as cursor:
            with translated(self._location):
                return await cursor.execute(render(sql, [value for _, value in conditions]))
