"""Migrating MySQL and MariaDB: the tables, and what an existing schema needs or lacks.

``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it is, so ``migrate()`` then
looks at what is there: tables the Go library made (case-insensitive collations, a BLOB
payload, TIMESTAMP columns, its own index names), or tables an earlier version of this
library made (a PAD SPACE collation under which ``"pad"`` and ``"pad "`` are one id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql.err

from ...log import Logger
from ...migrations import (
    MYSQL_COLLATION,
    MYSQL_IDENTITY,
    mysql_indexes,
    mysql_registration,
    registration_trigger,
    schema_statements,
)
from ...store import StoreConfig
from .errors import error_code
from .literals import render

__all__ = ["inspect_schema", "migrate_schema"]

# Errors of a user without the privilege to create a trigger (or, with binary logging on,
# without SUPER and log_bin_trust_function_creators).
_NO_PRIVILEGE = frozenset({1142, 1227, 1419})
_NO_PAD = ("utf8mb4_nopad_bin", "utf8mb4_0900_bin")


def _identity_columns(config: StoreConfig) -> dict[str, tuple[str, ...]]:
    key = ("bounded_context", "aggregate_type", "aggregate_id")
    return {
        config.events_table: (*key, "event_type"),
        config.aggregate_heads_table: key,
        config.checkpoints_table: ("projection_name",),
    }


def _time_columns(config: StoreConfig) -> dict[str, str]:
    return {
        config.events_table: "created_at",
        config.aggregate_heads_table: "updated_at",
        config.checkpoints_table: "updated_at",
    }


async def _rows(cursor: Any, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    await cursor.execute(render(sql, args))
    return list(await cursor.fetchall())


# information_schema is always asked for one table by name (equality on schema and table),
# which the server answers by opening that table only, not every table of the schema.


async def _columns(cursor: Any, config: StoreConfig) -> dict[tuple[str, str], tuple[str, str]]:
    """(table, column) -> (collation, data type) of the store's tables."""
    found: dict[tuple[str, str], tuple[str, str]] = {}
    for table in _identity_columns(config):
        rows = await _rows(
            cursor,
            "SELECT COLUMN_NAME, COALESCE(COLLATION_NAME, ''), DATA_TYPE "
            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s",
            [table],
        )
        found.update(
            {(table, column): (collation, kind.lower()) for column, collation, kind in rows}
        )
    return found


async def inspect_schema(cursor: Any, config: StoreConfig) -> list[str]:
    """What the existing tables lack, in words for an operator (empty when nothing)."""
    notes = []
    columns = await _columns(cursor, config)
    for table, names in _identity_columns(config).items():
        for name in names:
            collation = columns.get((table, name), ("", ""))[0]
            if collation and collation not in _NO_PAD:
                how = "case-insensitively" if collation.endswith("_ci") else "padding spaces"
                notes.append(
                    f"{table}.{name} uses collation {collation}, which compares ids {how} "
                    f"(a table the Go library made): ids that differ only so are one id "
                    f"there. To compare exactly: ALTER TABLE {table} MODIFY {name} "
                    f"VARCHAR(255) COLLATE {_NO_PAD[0]} NOT NULL (MySQL 8: {_NO_PAD[1]})"
                )
    events = config.events_table
    if columns.get((events, "payload"), ("", ""))[1] == "blob":
        notes.append(
            f"{events}.payload is a BLOB: payloads over 65,535 bytes are refused "
            f"(ALTER TABLE {events} MODIFY payload LONGBLOB NOT NULL to lift it)"
        )
    if columns.get((events, "created_at"), ("", ""))[1] == "timestamp":
        notes.append(
            f"{events}.created_at is a TIMESTAMP: events dated outside 1970-2038 are "
            "refused, and writers must use the UTC session time zone (the Go library: "
            "time_zone='+00:00' in its DSN) or their times move by the zone's offset"
        )
    triggers = await _rows(
        cursor,
        "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
        "DATABASE() AND EVENT_OBJECT_TABLE = %s AND TRIGGER_NAME = %s",
        [events, registration_trigger(config)],
    )
    if not int(triggers[0][0]):
        notes.append(
            f"the trigger {registration_trigger(config)} is missing: events written by "
            "anything but this library (the Go library, a plain INSERT) may be skipped by "
            "gap-safe readers; run migrate() as a user that may create triggers"
        )
    return notes


async def migrate_schema(cursor: Any, config: StoreConfig, log: Logger) -> list[str]:
    """Create what is missing, bring this library's older tables up to date, and return
    what still needs an operator's attention."""
    trigger = mysql_registration(config)
    for statement in schema_statements("mysql", config):
        if statement != trigger:
            await cursor.execute(statement)
    columns = await _columns(cursor, config)
    for table, names in _identity_columns(config).items():
        # utf8mb4_bin is what earlier versions of this library made (PAD SPACE): their
        # own tables, changed to compare exactly. The Go library's (case-insensitive)
        # tables are only reported.
        if columns.get((table, names[0]), ("", ""))[0] != "utf8mb4_bin":
            continue
        changes = [f"MODIFY {name} {MYSQL_IDENTITY}" for name in names]
        time_column = _time_columns(config)[table]
        if columns.get((table, time_column), ("", ""))[1] == "timestamp":
            changes.append(
                f"MODIFY {time_column} DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
            )
        log.info("converting a table to exact comparison of ids", table=table)
        await cursor.execute(
            f"ALTER TABLE {table} {', '.join(changes)}, "
            f"DEFAULT CHARSET=utf8mb4 COLLATE={MYSQL_COLLATION}"
        )
    await _ensure_indexes(cursor, config)
    try:
        await cursor.execute(trigger)
    except pymysql.err.MySQLError as err:
        if error_code(err) not in _NO_PRIVILEGE:
            raise
        log.error("cannot create the registration trigger", error=str(err.args[-1]))
    notes = await inspect_schema(cursor, config)
    for note in notes:
        log.error("schema needs attention", note=note)
    return notes


async def _ensure_indexes(cursor: Any, config: StoreConfig) -> None:
    """Add each secondary index unless one (the Go library's, say) covers its columns;
    drop this library's where another covers the same columns now."""
    wanted = mysql_indexes(config)
    indexes: dict[tuple[str, str], list[str]] = {}
    for table in sorted({table for table, _, _ in wanted}):
        rows = await _rows(
            cursor,
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
            "ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            [table],
        )
        for index, column in rows:
            indexes.setdefault((table, index), []).append(column)
    for table, name, columns in wanted:
        others = [
            index
            for (owner, index), cols in indexes.items()
            if owner == table and index != name and tuple(cols[: len(columns)]) == columns
        ]
        if (table, name) in indexes and others:
            await cursor.execute(f"DROP INDEX {name} ON {table}")
        elif (table, name) not in indexes and not others:
            await cursor.execute(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})")
