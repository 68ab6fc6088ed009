"""The Go library's side of a shared event store, as its reference describes it
(shared/reference/schema.md): its migration DDL, and a writer that issues its append's
statements in its order, on a plain driver connection that knows nothing of this library.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiomysql
import aiosqlite
import asyncpg

from pupsourcing_async import StoreConfig
from pupsourcing_async._url import parse_url


def go_migration(dialect: str, c: StoreConfig) -> list[str]:
    """The Go library's migration for ``dialect``, statement by statement."""
    e, h, p = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    if dialect == "postgres":
        return [
            f"""CREATE TABLE IF NOT EXISTS {e} (
    global_position BIGSERIAL PRIMARY KEY, bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version BIGINT NOT NULL,
    event_id UUID NOT NULL UNIQUE, event_type TEXT NOT NULL, event_version INT NOT NULL DEFAULT 1,
    payload BYTEA NOT NULL, trace_id TEXT, correlation_id TEXT, causation_id TEXT,
    metadata JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version))""",
            f"CREATE INDEX IF NOT EXISTS idx_{e}_aggregate ON {e} "
            "(bounded_context, aggregate_type, aggregate_id, aggregate_version)",
            f"CREATE INDEX IF NOT EXISTS idx_{e}_event_type ON {e} (event_type, global_position)",
            f"CREATE INDEX IF NOT EXISTS idx_{e}_correlation ON {e} (correlation_id) "
            "WHERE correlation_id IS NOT NULL",
            f"""CREATE TABLE IF NOT EXISTS {h} (bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id))""",
            f"CREATE INDEX IF NOT EXISTS idx_{h}_updated ON {h} (updated_at)",
            f"""CREATE TABLE IF NOT EXISTS {p} (projection_name TEXT PRIMARY KEY,
    last_global_position BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
            f"CREATE INDEX IF NOT EXISTS idx_{p}_updated ON {p} (updated_at)",
        ]
    if dialect == "mysql":
        options = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"
        # Plain CREATE INDEX: it fails if an index of that name exists.
        return [
            f"""CREATE TABLE IF NOT EXISTS {e} (
    global_position BIGINT AUTO_INCREMENT PRIMARY KEY, bounded_context VARCHAR(255) NOT NULL,
    aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL,
    aggregate_version BIGINT NOT NULL, event_id BINARY(16) NOT NULL UNIQUE,
    event_type VARCHAR(255) NOT NULL, event_version INT NOT NULL DEFAULT 1, payload BLOB NOT NULL,
    trace_id VARCHAR(255), correlation_id VARCHAR(255), causation_id VARCHAR(255), metadata JSON,
    created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY unique_aggregate_version
        (bounded_context, aggregate_type, aggregate_id, aggregate_version)
) {options}""",
            f"CREATE INDEX idx_{e}_aggregate ON {e} "
            "(bounded_context, aggregate_type, aggregate_id, aggregate_version)",
            f"CREATE INDEX idx_{e}_event_type ON {e} (event_type, global_position)",
            f"CREATE INDEX idx_{e}_correlation ON {e} (correlation_id)",
            f"""CREATE TABLE IF NOT EXISTS {h} (bounded_context VARCHAR(255) NOT NULL,
    aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL,
    aggregate_version BIGINT NOT NULL,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id)
) {options}""",
            f"CREATE INDEX idx_{h}_updated ON {h} (updated_at)",
            f"""CREATE TABLE IF NOT EXISTS {p} (projection_name VARCHAR(255) PRIMARY KEY,
    last_global_position BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) {options}""",
            f"CREATE INDEX idx_{p}_updated ON {p} (updated_at)",
        ]
    return [
        f"""CREATE TABLE IF NOT EXISTS {e} (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT, bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE, event_type TEXT NOT NULL,
    event_version INTEGER NOT NULL DEFAULT 1,
    payload BLOB NOT NULL, trace_id TEXT, correlation_id TEXT, causation_id TEXT, metadata TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version))""",
        f"CREATE INDEX IF NOT EXISTS idx_{e}_aggregate ON {e} "
        "(bounded_context, aggregate_type, aggregate_id, aggregate_version)",
        f"CREATE INDEX IF NOT EXISTS idx_{e}_event_type ON {e} (event_type, global_position)",
        f"""CREATE TABLE IF NOT EXISTS {h} (bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL, aggregate_version INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id))""",
        f"CREATE INDEX IF NOT EXISTS idx_{h}_updated ON {h} (updated_at)",
        f"""CREATE TABLE IF NOT EXISTS {p} (projection_name TEXT PRIMARY KEY,
    last_global_position INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL DEFAULT (datetime('now')))""",
        f"CREATE INDEX IF NOT EXISTS idx_{p}_updated ON {p} (updated_at)",
    ]


class Conflict(Exception):
    """The Go library's concurrency conflict: a unique key was taken."""


class Deadlock(Exception):
    """The database chose this Go transaction as a deadlock victim."""


@dataclass
class GoWriter:
    """Appends the way the Go library does, on a connection of its own.

    Its append, in one transaction: read the aggregate's head with a plain SELECT (no
    lock); INSERT each event, one statement per event, versions head + 1..; upsert the
    head row. A unique violation is its conflict. It never registers anywhere before
    drawing a position.
    """

    dialect: str
    url: str
    config: StoreConfig
    connection: Any = None
    committed: list[uuid.UUID] = field(default_factory=list)
    conflicts: int = 0
    deadlocks: int = 0

    async def open(self, *, time_zone: str | None = None) -> None:
        parsed = parse_url(self.url)
        if self.dialect == "postgres":
            self.connection = await asyncpg.connect(self.url)
        elif self.dialect == "mysql":
            init = None if time_zone is None else f"SET time_zone = '{time_zone}'"
            self.connection = await aiomysql.connect(
                host=parsed.host,
                port=parsed.port or 3306,
                user=parsed.user or "root",
                password=parsed.password or "",
                db=parsed.database,
                autocommit=False,
                charset="utf8mb4",
                init_command=init,
            )
        else:
            self.connection = await aiosqlite.connect(parsed.sqlite_path, isolation_level=None)
            await self.connection.execute("PRAGMA busy_timeout = 10000")

    async def close(self) -> None:
        if self.dialect == "postgres":
            await self.connection.close()
        elif self.dialect == "mysql":
            self.connection.close()
        else:
            await self.connection.close()

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgres":
            numbers = iter(range(1, 100))
            return "".join(f"${next(numbers)}" if part == "?" else part for part in sql)
        if self.dialect == "mysql":
            return sql.replace("?", "%s")
        return sql

    async def _run(self, sql: str, *args: Any) -> list[Any]:
        text = self._sql(sql)
        if self.dialect == "postgres":
            return list(await self.connection.fetch(text, *args))
        if self.dialect == "mysql":
            async with self.connection.cursor() as cursor:
                await cursor.execute(text, args)
                return list(await cursor.fetchall())
        return list(await self.connection.execute_fetchall(text, args))

    async def _begin(self) -> None:
        if self.dialect == "mysql":
            await self._run("START TRANSACTION")
        else:
            await self._run("BEGIN")

    async def _end(self, commit: bool) -> None:
        if self.dialect == "mysql":
            await (self.connection.commit() if commit else self.connection.rollback())
        else:
            await self._run("COMMIT" if commit else "ROLLBACK")

    async def append(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        event_types: list[str],
        *,
        hold: float = 0.0,
        rollback: bool = False,
        created_at: datetime | None = None,
    ) -> list[uuid.UUID]:
        """One append in the Go library's statement order; raises Conflict or Deadlock."""
        c = self.config
        key = (bounded_context, aggregate_type, aggregate_id)
        ids = [uuid.uuid4() for _ in event_types]
        moment = (created_at or datetime.now(UTC)).astimezone(UTC)
        await self._begin()
        try:
            rows = await self._run(
                f"SELECT aggregate_version FROM {c.aggregate_heads_table} "
                "WHERE bounded_context = ? AND aggregate_type = ? AND aggregate_id = ?",
                *key,
            )
            version = int(rows[0][0]) if rows else 0
            for offset, (event_type, event_id) in enumerate(zip(event_types, ids, strict=True), 1):
                await self._run(
                    f"INSERT INTO {c.events_table} (bounded_context, aggregate_type, "
                    "aggregate_id, aggregate_version, event_id, event_type, event_version, "
                    "payload, trace_id, correlation_id, causation_id, metadata, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    *key,
                    version + offset,
                    self._event_id(event_id),
                    event_type,
                    1,
                    json.dumps({"by": "go"}).encode(),
                    None,
                    None,
                    None,
                    None,
                    self._time(moment),
                )
            await self._run(
                self._upsert_head(), *key, version + len(event_types), self._time(moment)
            )
            if hold:
                await asyncio.sleep(hold)
            if rollback:
                await self._end(commit=False)
                return []
            await self._end(commit=True)
        except Exception as err:
            await self._end(commit=False)
            kind = self._classify(err)
            if kind == "conflict":
                self.conflicts += 1
                raise Conflict from err
            if kind == "deadlock":
                self.deadlocks += 1
                raise Deadlock from err
            raise
        self.committed += ids
        return ids

    def _event_id(self, event_id: uuid.UUID) -> object:
        if self.dialect == "postgres":
            return event_id
        return event_id.bytes if self.dialect == "mysql" else str(event_id)

    def _time(self, moment: datetime) -> object:
        if self.dialect == "postgres":
            return moment
        wall = moment.replace(tzinfo=None)  # UTC wall-clock time, as the Go driver sends it
        return wall if self.dialect == "mysql" else wall.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _upsert_head(self) -> str:
        h = self.config.aggregate_heads_table
        columns = "(bounded_context, aggregate_type, aggregate_id, aggregate_version, updated_at)"
        if self.dialect == "mysql":
            return (
                f"INSERT INTO {h} {columns} VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE "
                "aggregate_version = VALUES(aggregate_version), updated_at = VALUES(updated_at)"
            )
        return (
            f"INSERT INTO {h} {columns} VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE SET "
            "aggregate_version = excluded.aggregate_version, updated_at = excluded.updated_at"
        )

    def _classify(self, err: Exception) -> str | None:
        if self.dialect == "postgres":
            if isinstance(err, asyncpg.UniqueViolationError):
                return "conflict"
            if isinstance(err, asyncpg.DeadlockDetectedError):
                return "deadlock"
            return None
        if self.dialect == "mysql":
            code = err.args[0] if err.args and isinstance(err.args[0], int) else None
            if code == 1062:
                return "conflict"
            if code in (1213, 1467):
                return "deadlock"
            return None
        message = str(err)
        if "UNIQUE constraint failed" in message:
            return "conflict"
        if "locked" in message or "busy" in message:
            return "conflict"  # SQLite's one writer at a time: try again
        return None

    async def keep_appending(
        self,
        aggregates: list[str],
        stop: asyncio.Event,
        *,
        rng: random.Random,
        max_hold: float,
        rollback_share: float = 0.1,
    ) -> None:
        """Append until ``stop``: retry conflicts as a Go service would, count deadlocks."""
        while not stop.is_set():
            aggregate = rng.choice(aggregates)
            try:
                await self.append(
                    "Interop",
                    "Account",
                    aggregate,
                    [f"Go{rng.randrange(3)}" for _ in range(rng.choice((1, 1, 2)))],
                    hold=rng.random() * max_hold,
                    rollback=rng.random() < rollback_share,
                )
            except (Conflict, Deadlock):
                await asyncio.sleep(rng.random() * 0.01)
