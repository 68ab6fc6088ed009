"""The event store's schema for each database, as SQL.

The tables, columns, constraints and index names match the Go library's migrations, so a
Go service and a Python service can share one event store. Every statement is idempotent
(``IF NOT EXISTS``), so applying the schema twice, or over tables the Go library created,
changes nothing. Columns this project adds, if any, have defaults, so writers that do not
know them keep working.
"""

from __future__ import annotations

from typing import Literal

from .store import StoreConfig

__all__ = ["Dialect", "schema_statements", "schema_sql"]

Dialect = Literal["postgres", "sqlite", "mysql"]
DIALECTS: tuple[Dialect, ...] = ("postgres", "sqlite", "mysql")


def _postgres(c: StoreConfig) -> list[str]:
    events, heads, checkpoints = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    return [
        f"""CREATE TABLE IF NOT EXISTS {events} (
    global_position BIGSERIAL PRIMARY KEY,
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    event_id UUID NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_version INT NOT NULL DEFAULT 1,
    payload BYTEA NOT NULL,
    trace_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    metadata JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version)
)""",
        f"""CREATE INDEX IF NOT EXISTS idx_{events}_event_type
    ON {events} (event_type, global_position)""",
        f"""CREATE INDEX IF NOT EXISTS idx_{events}_correlation
    ON {events} (correlation_id) WHERE correlation_id IS NOT NULL""",
        f"""CREATE TABLE IF NOT EXISTS {heads} (
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id)
)""",
        f"CREATE INDEX IF NOT EXISTS idx_{heads}_updated ON {heads} (updated_at)",
        f"""CREATE TABLE IF NOT EXISTS {checkpoints} (
    projection_name TEXT PRIMARY KEY,
    last_global_position BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
)""",
        f"CREATE INDEX IF NOT EXISTS idx_{checkpoints}_updated ON {checkpoints} (updated_at)",
    ]


def _sqlite(c: StoreConfig) -> list[str]:
    events, heads, checkpoints = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    return [
        f"""CREATE TABLE IF NOT EXISTS {events} (
    global_position INTEGER PRIMARY KEY AUTOINCREMENT,
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_version INTEGER NOT NULL DEFAULT 1,
    payload BLOB NOT NULL,
    trace_id TEXT,
    correlation_id TEXT,
    causation_id TEXT,
    metadata TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version)
)""",
        f"""CREATE INDEX IF NOT EXISTS idx_{events}_event_type
    ON {events} (event_type, global_position)""",
        f"""CREATE INDEX IF NOT EXISTS idx_{events}_correlation
    ON {events} (correlation_id) WHERE correlation_id IS NOT NULL""",
        f"""CREATE TABLE IF NOT EXISTS {heads} (
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    aggregate_version INTEGER NOT NULL,
    updated_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id)
)""",
        f"CREATE INDEX IF NOT EXISTS idx_{heads}_updated ON {heads} (updated_at)",
        f"""CREATE TABLE IF NOT EXISTS {checkpoints} (
    projection_name TEXT NOT NULL PRIMARY KEY,
    last_global_position INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
)""",
        f"CREATE INDEX IF NOT EXISTS idx_{checkpoints}_updated ON {checkpoints} (updated_at)",
    ]


_BUILDERS = {"postgres": _postgres, "sqlite": _sqlite}


def schema_statements(dialect: Dialect, config: StoreConfig | None = None) -> list[str]:
    """The schema's statements for ``dialect``, one per list item, without semicolons.

    Raises:
        ValueError: ``dialect`` is not one this library supports.
    """
    builder = _BUILDERS.get(dialect)
    if builder is None:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(_BUILDERS)}")
    return builder(config or StoreConfig())


def schema_sql(dialect: Dialect, config: StoreConfig | None = None) -> str:
    """The schema for ``dialect`` as one SQL script."""
    return "".join(f"{statement};\n\n" for statement in schema_statements(dialect, config))
