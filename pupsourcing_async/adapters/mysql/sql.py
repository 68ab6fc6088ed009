"""Session settings and the SQL text of the MySQL store, built once per table configuration.

Every ``%s`` is filled with a literal rendered by :mod:`.literals`, never by the driver.
"""

from __future__ import annotations

from ...migrations import in_flight_table
from ...store import StoreConfig

# Session settings every store connection needs. READ COMMITTED: REPEATABLE READ would
# make appends to different new aggregates deadlock on gap locks, and would let a reader
# work from a snapshot older than the proof that a hole is dead. UTC: timestamps are
# written and read as UTC wall-clock time. A fixed sql_mode: strict, so that a value
# that does not fit fails instead of being cut, whatever the server's default is.
SESSION_SETUP = (
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; "
    "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
)

#: The session variable that tells the events table's registration trigger that the
#: append in progress has registered already (so a batch registers once, not per row).
REGISTERED = "@pupsourcing_async_registered"
#: The session variable that holds the aggregate's version as the append read it.
HEAD = "@pupsourcing_async_head"

# In the order _event() takes them; created_at as microseconds since the epoch, which
# holds for DATETIME and (in the session's UTC) TIMESTAMP columns alike.
EVENT_COLUMNS = (
    "global_position, bounded_context, aggregate_type, aggregate_id, aggregate_version, "
    "event_id, event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', created_at)"
)
INSERT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, "
    "event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at"
)
KEY = "bounded_context = %s AND aggregate_type = %s AND aggregate_id = %s"
# A row's values; its version is written as the head read plus the row's offset.
ROW = f"(%s, %s, %s, {HEAD} + %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
SELECT_ROW = f"SELECT %s, %s, %s, {HEAD} + %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
# What the head read must show, per expected version (the %s is the exact version).
CONDITIONS = {"no_stream": f"{HEAD} = 0", "exists": f"{HEAD} > 0", "exact": f"{HEAD} = %s"}


class Statements:
    """The SQL text for one table configuration."""

    def __init__(self, config: StoreConfig) -> None:
        events, heads = config.events_table, config.aggregate_heads_table
        checkpoints, in_flight = config.checkpoints_table, in_flight_table(config)
        # information_schema is asked by schema and table name (equality on both), which
        # the server answers by opening that one table rather than every table there.
        self.facts = (
            "SELECT @@max_allowed_packet, @@innodb_autoinc_lock_mode, VERSION(), "
            "(SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s AND COLUMN_NAME = 'created_at'), "
            "(SELECT COUNT(*) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s "
            "AND TRIGGER_NAME = %s)"
        )
        # Gap safety: register before drawing positions (see the package docstring).
        self.register = [
            f"INSERT INTO {in_flight} () VALUES ()",
            f"DELETE FROM {in_flight} WHERE id = LAST_INSERT_ID()",
        ]
        self.fence = "; ".join([*self.register, "SELECT LAST_INSERT_ID()"])
        self.mark = f"SET {REGISTERED} = 1"
        self.unmark = f"SET {REGISTERED} = NULL"
        # A SELECT ... INTO is a consistent read; SET @x = (SELECT ...) would take a shared
        # lock on the head row, which two appends then both hold while each waits to
        # write it (a deadlock).
        self.read_head = (
            f"SELECT COALESCE(MAX(aggregate_version), 0) FROM {heads} WHERE {KEY} INTO {HEAD}"
        )
        self.insert = f"INSERT INTO {events} ({INSERT_COLUMNS}) VALUES "
        self.insert_select = f"INSERT INTO {events} ({INSERT_COLUMNS}) SELECT * FROM ("
        # The head moves last (the order the Go library takes its locks in), and reports
        # its new version through LAST_INSERT_ID(x), which the OK packet carries.
        self.move_head = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            f"aggregate_version, updated_at) SELECT %s, %s, %s, LAST_INSERT_ID({HEAD} + %s), %s "
            "FROM DUAL{where} ON DUPLICATE KEY UPDATE aggregate_version = "
            f"LAST_INSERT_ID(GREATEST(aggregate_version, {HEAD} + %s)), updated_at = %s"
        )
        self.head_version = f"SELECT aggregate_version FROM {heads} WHERE {KEY}"
        self.stored_ids = f"SELECT {EVENT_COLUMNS} FROM {events} WHERE event_id IN "
        # The events an append inserted in earlier round trips, when a later one failed.
        self.delete_inserted = (
            f"DELETE FROM {events} WHERE {KEY} AND aggregate_version > {HEAD} "
            f"AND aggregate_version <= {HEAD} + %s"
        )
        self.positions = (
            f"SELECT global_position FROM {events} WHERE {KEY} "
            "AND aggregate_version BETWEEN %s AND %s ORDER BY aggregate_version"
        )
        self.proof = f"SELECT id FROM {in_flight} WHERE id < %s "
        self.read_events = (
            f"SELECT {EVENT_COLUMNS} FROM {events} WHERE global_position > %s "
            "ORDER BY global_position LIMIT %s"
        )
        self.latest = f"SELECT COALESCE(MAX(global_position), 0) FROM {events}"
        self.stream = (
            f"SELECT {EVENT_COLUMNS} FROM {events} WHERE {KEY} "
            "AND aggregate_version >= %s AND aggregate_version <= %s ORDER BY aggregate_version"
        )
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = %s"
        )
        self.event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {events} "
            "ORDER BY event_type, event_version"
        )
        self.list_checkpoints = (
            "SELECT projection_name, last_global_position, "
            "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', updated_at) "
            f"FROM {checkpoints} ORDER BY projection_name"
        )
        self.delete_checkpoints = f"DELETE FROM {checkpoints} WHERE projection_name IN "
        self.update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE "
            "last_global_position = %s, updated_at = %s"
        )
