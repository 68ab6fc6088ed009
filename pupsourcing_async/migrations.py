"""The event store's schema for each database, as SQL.

The tables, columns, constraints and index names match the Go library's migrations, so a
Go service and a Python service can share one event store. Every statement is idempotent
(``IF NOT EXISTS``), so applying the schema twice, or over tables the Go library created,
changes nothing. Columns this project adds, if any, have defaults, so writers that do not
know them keep working.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from .projection.parking import parked_table
from .snapshots import snapshots_table
from .store import StoreConfig

__all__ = ["Dialect", "schema_sql", "schema_statements", "write_migration"]

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
        *postgres_registration(c),
    ]


def registration_trigger(config: StoreConfig) -> str:
    """The name of the trigger (and, on PostgreSQL, its function) that registers every
    writer of the events table before it draws a position."""
    return f"{config.events_table}_register"


def postgres_registration(c: StoreConfig) -> list[str]:
    """The events table's registration trigger on PostgreSQL.

    Gap-safe reading proves that a hole's writer has ended by its transaction id, so every
    writer must have one before it draws a position. This library's appends take it first;
    a writer that does not know the library (the Go library's INSERT, psql) would take it
    only as its row goes in, after the sequence gave the position. The trigger runs before
    any row of an INSERT (or COPY) is formed, so it takes the id first for every writer.
    """
    events, name = c.events_table, registration_trigger(c)
    return [
        f"""CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN NULL;
END
$$""",
        f"""DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = lower('{name}') AND tgrelid = '{events}'::regclass) THEN
        CREATE TRIGGER {name} BEFORE INSERT ON {events} FOR EACH STATEMENT
            WHEN (pg_current_xact_id_if_assigned() IS NULL)
            EXECUTE FUNCTION {name}();
    END IF;
END
$$""",
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


def in_flight_table(config: StoreConfig) -> str:
    """The MySQL helper table in which appends register before drawing positions."""
    return f"{config.events_table}_in_flight"


#: The collation of the MySQL tables: binary (exact) and NO PAD, so that ``"pad"`` and
#: ``"pad "`` are two ids, as on PostgreSQL and SQLite. MariaDB and MySQL 8 name it
#: differently; each runs only its own executable comment.
MYSQL_COLLATION = "/*M!100200 utf8mb4_nopad_bin */ /*!80000 utf8mb4_0900_bin */"
MYSQL_TABLE_OPTIONS = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={MYSQL_COLLATION}"
#: An identity column (aggregate key, event type, projection name) on MySQL.
MYSQL_IDENTITY = f"VARCHAR(255) COLLATE {MYSQL_COLLATION} NOT NULL"
# The columns that name an aggregate, for every MySQL table keyed by one, so that an
# identity compares the same way in each of them.
_MYSQL_AGGREGATE_KEY = f"""bounded_context {MYSQL_IDENTITY},
    aggregate_type {MYSQL_IDENTITY},
    aggregate_id {MYSQL_IDENTITY}"""


def mysql_indexes(c: StoreConfig) -> list[tuple[str, str, tuple[str, ...]]]:
    """The secondary indexes of the MySQL tables: (table, name, columns).

    The Go library's migration creates indexes of the same columns with plain
    ``CREATE INDEX idx_<table>_...``, which fails if an index of that name exists; so
    these have other names, and ``migrate()`` adds one only where no index covers its
    columns yet.
    """
    events, heads, checkpoints = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    return [
        (events, f"{events}_event_type_idx", ("event_type", "global_position")),
        (events, f"{events}_correlation_idx", ("correlation_id",)),
        (heads, f"{heads}_updated_idx", ("updated_at",)),
        (checkpoints, f"{checkpoints}_updated_idx", ("updated_at",)),
    ]


#: How many lock rows the MySQL appends of one store share (by aggregate key hash).
MYSQL_APPEND_SLOTS = 1024


def append_locks_table(config: StoreConfig) -> str:
    """The MySQL helper table whose rows serialize this library's appends per aggregate."""
    return f"{config.events_table}_append_locks"


def mysql_registration(c: StoreConfig) -> str:
    """The events table's registration trigger on MySQL and MariaDB.

    Gap-safe reading proves a hole's writer has ended by finding its registration row no
    longer locked. This library's appends register themselves (and set the session
    variable so that a batch registers once); the trigger registers every other writer
    (the Go library, a plain INSERT) before its row draws a position: an AUTO_INCREMENT
    value is assigned only after BEFORE INSERT triggers ran.
    """
    events, in_flight = c.events_table, in_flight_table(c)
    return f"""CREATE TRIGGER IF NOT EXISTS {registration_trigger(c)}
BEFORE INSERT ON {events} FOR EACH ROW
BEGIN
    IF @pupsourcing_async_registered IS NULL THEN
        INSERT INTO {in_flight} () VALUES ();
        DELETE FROM {in_flight} WHERE id = LAST_INSERT_ID();
    END IF;
END"""


def _mysql(c: StoreConfig) -> list[str]:
    events, heads, checkpoints = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    keys = {table: [] for table in (events, heads, checkpoints)}  # type: dict[str, list[str]]
    for table, name, columns in mysql_indexes(c):
        keys[table].append(f",\n    KEY {name} ({', '.join(columns)})")
    # DATETIME rather than TIMESTAMP: it holds years 1000 to 9999, and it stores what it is
    # given whatever the session's time zone (this library always gives UTC).
    return [
        f"""CREATE TABLE IF NOT EXISTS {events} (
    global_position BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    bounded_context {MYSQL_IDENTITY},
    aggregate_type {MYSQL_IDENTITY},
    aggregate_id {MYSQL_IDENTITY},
    aggregate_version BIGINT NOT NULL,
    event_id BINARY(16) NOT NULL UNIQUE,
    event_type {MYSQL_IDENTITY},
    event_version INT NOT NULL DEFAULT 1,
    payload LONGBLOB NOT NULL,
    trace_id VARCHAR(255) NULL,
    correlation_id VARCHAR(255) NULL,
    causation_id VARCHAR(255) NULL,
    metadata JSON NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    UNIQUE KEY unique_aggregate_version
        (bounded_context, aggregate_type, aggregate_id, aggregate_version){"".join(keys[events])}
) {MYSQL_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS {heads} (
    bounded_context {MYSQL_IDENTITY},
    aggregate_type {MYSQL_IDENTITY},
    aggregate_id {MYSQL_IDENTITY},
    aggregate_version BIGINT NOT NULL,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id){"".join(keys[heads])}
) {MYSQL_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS {checkpoints} (
    projection_name {MYSQL_IDENTITY} PRIMARY KEY,
    last_global_position BIGINT NOT NULL DEFAULT 0,
    updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6){"".join(keys[checkpoints])}
) {MYSQL_TABLE_OPTIONS}""",
        # Gap safety: every append inserts and deletes a row here before it draws
        # positions; the row stays locked until the append's transaction ends.
        f"""CREATE TABLE IF NOT EXISTS {in_flight_table(c)} (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY
) ENGINE=InnoDB""",
        # This library's appends to one aggregate take one of these rows first (FOR
        # UPDATE), so they queue here, not on the events' unique key. A duplicate key
        # error leaves a shared gap lock behind until the transaction ends, and appends
        # that all waited on one key (a Go writer's, held open) and then all retried would
        # deadlock on each other's gap locks. The rows exist up front: locking a missing
        # row would lock nothing at READ COMMITTED.
        f"""CREATE TABLE IF NOT EXISTS {append_locks_table(c)} (
    slot INT NOT NULL PRIMARY KEY
) ENGINE=InnoDB""",
        f"INSERT INTO {append_locks_table(c)} (slot) VALUES "
        + ", ".join(f"({slot})" for slot in range(MYSQL_APPEND_SLOTS))
        + " ON DUPLICATE KEY UPDATE slot = slot",
        mysql_registration(c),
    ]


# Snapshots (see pupsourcing_async.snapshots): the newest snapshot per aggregate and
# schema version. The key is all the table needs: rows are written and read by it alone.
# On MySQL the key is 3 x 1020 + 4 bytes, within InnoDB's 3072; the snapshot type, a
# fourth VARCHAR(255), could not join it.


def _postgres_snapshots(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {snapshots_table(c)} (
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    schema_version INT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    snapshot_type TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id, schema_version)
)"""
    ]


def _sqlite_snapshots(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {snapshots_table(c)} (
    bounded_context TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    aggregate_version INTEGER NOT NULL,
    snapshot_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id, schema_version)
)"""
    ]


def _mysql_snapshots(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {snapshots_table(c)} (
    {_MYSQL_AGGREGATE_KEY},
    schema_version INT NOT NULL,
    aggregate_version BIGINT NOT NULL,
    snapshot_type VARCHAR(255) NOT NULL,
    payload LONGBLOB NOT NULL,
    created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (bounded_context, aggregate_type, aggregate_id, schema_version)
) {MYSQL_TABLE_OPTIONS}"""
    ]


# Parked events (see pupsourcing_async.projection.parking): the events projections stepped
# over, one row per checkpoint and event. Rows are few; the key is all they need.


def _postgres_parked(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {parked_table(c)} (
    checkpoint TEXT NOT NULL,
    global_position BIGINT NOT NULL,
    event_id UUID NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INT NOT NULL DEFAULT 1,
    parked_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (checkpoint, global_position)
)"""
    ]


def _sqlite_parked(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {parked_table(c)} (
    checkpoint TEXT NOT NULL,
    global_position INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    parked_at TEXT NOT NULL DEFAULT (datetime('now')),
    PRIMARY KEY (checkpoint, global_position)
)"""
    ]


def _mysql_parked(c: StoreConfig) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {parked_table(c)} (
    checkpoint {MYSQL_IDENTITY},
    global_position BIGINT NOT NULL,
    event_id BINARY(16) NOT NULL,
    event_type {MYSQL_IDENTITY},
    error TEXT NOT NULL,
    attempts INT NOT NULL DEFAULT 1,
    parked_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (checkpoint, global_position)
) {MYSQL_TABLE_OPTIONS}"""
    ]


_BUILDERS = {"postgres": _postgres, "sqlite": _sqlite, "mysql": _mysql}
_SNAPSHOT_BUILDERS = {
    "postgres": _postgres_snapshots,
    "sqlite": _sqlite_snapshots,
    "mysql": _mysql_snapshots,
}
_PARKED_BUILDERS = {"postgres": _postgres_parked, "sqlite": _sqlite_parked, "mysql": _mysql_parked}


def schema_statements(dialect: Dialect, config: StoreConfig | None = None) -> list[str]:
    """The schema's statements for ``dialect``, one per list item, without semicolons.

    Raises:
        ValueError: ``dialect`` is not one this library supports.
    """
    builder = _BUILDERS.get(dialect)
    if builder is None:
        raise ValueError(f"unknown dialect {dialect!r}: expected one of {', '.join(_BUILDERS)}")
    config = config or StoreConfig()
    return builder(config) + _SNAPSHOT_BUILDERS[dialect](config) + _PARKED_BUILDERS[dialect](config)


def schema_sql(dialect: Dialect, config: StoreConfig | None = None) -> str:
    """The schema for ``dialect`` as one SQL script.

    MySQL's trigger has statements of its own inside, so the script switches the client's
    statement delimiter around it, as the ``mysql`` command line tool understands.
    """
    script = []
    for statement in schema_statements(dialect, config):
        if dialect == "mysql" and statement.startswith("CREATE TRIGGER"):
            script.append(f"DELIMITER //\n{statement} //\nDELIMITER ;\n\n")
        else:
            script.append(f"{statement};\n\n")
    return "".join(script)


def write_migration(
    dialect: Dialect,
    output_dir: str | Path,
    *,
    filename: str | None = None,
    config: StoreConfig | None = None,
) -> Path:
    """Write the schema for ``dialect`` as one SQL migration file, for your migration tool.

    The default file name is ``<UTC timestamp>_init_event_sourcing.sql``, as the Go library's
    ``migrate-gen`` writes it. The directory is created if needed; an existing file is never
    overwritten.

    Returns:
        The path written.

    Raises:
        FileExistsError: the file exists already.
    """
    config = config or StoreConfig()
    body = schema_sql(dialect, config)
    now = datetime.now(UTC)
    name = filename or f"{now:%Y%m%d%H%M%S}_init_event_sourcing.sql"
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"filename must be a plain file name, got {name!r}")
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    header = (
        f"-- Event store schema for {dialect}, written by pupsourcing-async migrate-gen\n"
        f"-- at {now:%Y-%m-%dT%H:%M:%SZ}. Tables: {config.events_table}, "
        f"{config.aggregate_heads_table}, {config.checkpoints_table}.\n"
        "-- Idempotent: every statement is CREATE ... IF NOT EXISTS.\n\n"
    )
    with path.open("x", encoding="utf-8") as file:
        file.write(header + body)
    return path
