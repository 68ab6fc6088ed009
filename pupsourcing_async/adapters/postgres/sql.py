"""The SQL text of the PostgreSQL store, built once per table configuration."""

from __future__ import annotations

from ...store import StoreConfig

# In the order es.make_persisted takes them.
EVENT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, event_type, payload, event_id, "
    "event_version, convert_to(metadata::text, 'UTF8') AS metadata, trace_id, correlation_id, "
    "causation_id, created_at, global_position, aggregate_version"
)
POSITION = 12

# The event columns after the aggregate key and version, with their types, in the order
# the append statement takes them as parameters.
COLUMNS = (
    ("event_id", "uuid"),
    ("event_type", "text"),
    ("event_version", "int4"),
    ("payload", "bytea"),
    ("trace_id", "text"),
    ("correlation_id", "text"),
    ("causation_id", "text"),
    ("metadata", "text"),
    ("created_at", "timestamptz"),
)
# In a batch, a column whose values are all equal is sent once, as a scalar: arrays cost
# asyncpg several type checks per element, and events of one command often share their
# type, metadata and correlation ids. Ids, payloads and timestamps always vary.
SHAREABLE = frozenset(
    {"event_type", "event_version", "trace_id", "correlation_id", "causation_id", "metadata"}
)

# Each append is one statement: the aggregate's head row is written first, which assigns
# the transaction its id before the INSERT draws positions from the sequence (the order
# gap-safe reading relies on). The events INSERT reads the head's new version, so it
# cannot run before the head write. An expected-version mismatch makes the head CTE return
# no row, so nothing is inserted. An event id that is already stored (or is being stored
# by a concurrent transaction that then commits) is skipped by ON CONFLICT rather than
# raised, so the caller's transaction stays usable; the store then undoes the append.
_HEADS = {
    "any": """
WITH head AS (
    INSERT INTO {heads} AS h (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE
        SET aggregate_version = h.aggregate_version + EXCLUDED.aggregate_version,
            updated_at = EXCLUDED.updated_at
    RETURNING h.aggregate_version AS version
)""",
    "no_stream": """
WITH head AS (
    INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    VALUES ($1, $2, $3, $4, now())
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO NOTHING
    RETURNING aggregate_version AS version
)""",
    "exact": """
WITH head AS (
    UPDATE {heads} SET aggregate_version = aggregate_version + $4::bigint, updated_at = now()
    WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
        AND aggregate_version = $5::bigint
    RETURNING aggregate_version AS version
)""",
}

_INSERT = """,
inserted AS (
INSERT INTO {events} (
    bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type,
    event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at)
SELECT $1, $2, $3, {version}, {values}
FROM head{rows}
ON CONFLICT (event_id) DO NOTHING
RETURNING global_position, aggregate_version
)
SELECT head.version, inserted.global_position, inserted.aggregate_version{notify}
FROM head LEFT JOIN inserted ON true
"""


class Statements:
    """The SQL text for one table configuration, built once (appends on first use)."""

    def append(self, mode: str, notify: bool, shared: frozenset[str] | None) -> str:
        """The append statement for ``mode`` ("any", "no_stream", "exact").

        ``shared`` is None for one event; for several, the columns sent once as scalars.
        """
        key = (mode, notify, shared)
        sql = self._appends.get(key)
        if sql is None:
            sql = self._appends[key] = self._build_append(mode, notify, shared)
        return sql

    def _build_append(self, mode: str, notify: bool, shared: frozenset[str] | None) -> str:
        number = 6 if mode == "exact" else 5  # after the key, the count, the expectation
        values, arrays, names = [], [], []
        for name, kind in COLUMNS:
            json = "::jsonb" if name == "metadata" else ""
            if shared is None or name in shared:
                values.append(f"${number}::{kind}{json}")
            else:
                values.append(f"e.{name}{json}")
                arrays.append(f"${number}::{kind}[]")
                names.append(name)
            number += 1
        if shared is None:
            version, rows = "head.version", ""
        else:
            version = "head.version - $4 + e.ord"
            rows = f", unnest({', '.join(arrays)}) WITH ORDINALITY AS e({', '.join(names)}, ord)"
        channel = self._names["channel"]
        return _HEADS[mode].format(**self._names) + _INSERT.format(
            events=self._names["events"],
            version=version,
            values=", ".join(values),
            rows=rows,
            notify=f",\n    (SELECT pg_notify('{channel}', ''))" if notify else "",
        )

    def __init__(self, config: StoreConfig) -> None:
        names = {
            "events": config.events_table,
            "heads": config.aggregate_heads_table,
            "checkpoints": config.checkpoints_table,
            "channel": notify_channel(config),
        }
        self._names = names
        self._appends: dict[tuple[str, bool, frozenset[str] | None], str] = {}
        # Only after a conflict: what the head is, and which of the ids is stored. The
        # lateral lookup probes the unique index once per id, whatever the table's size.
        self.conflict_facts = """
SELECT (SELECT aggregate_version FROM {heads}
        WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3),
       (SELECT e.event_id FROM unnest($4::uuid[]) AS wanted(id)
        CROSS JOIN LATERAL (SELECT event_id FROM {events} WHERE event_id = wanted.id) AS e
        LIMIT 1)
""".format(**names)
        self.undo_head = """
UPDATE {heads} SET aggregate_version = $4
WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
""".format(**names)
        self.undo_new_head = """
DELETE FROM {heads} WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
""".format(**names)
        self.undo_events = f"DELETE FROM {config.events_table} WHERE global_position = ANY($1)"
        # The snapshot's xmin and whether this transaction already has an id come from the
        # same statement, hence the same snapshot, as the rows (InitPlans run once).
        self.read_events = f"""
SELECT {EVENT_COLUMNS},
    (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint) AS snapshot_xmin,
    (SELECT pg_current_xact_id_if_assigned()::text::bigint) AS own_xid
FROM {config.events_table}
WHERE global_position > $1 ORDER BY global_position LIMIT $2
"""
        self.take_fence = "SELECT pg_current_xact_id()::text::bigint"
        self.latest_position = (
            f"SELECT COALESCE(MAX(global_position), 0) FROM {config.events_table}"
        )
        self.stream = f"""
SELECT {EVENT_COLUMNS} FROM {config.events_table}
WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3
    AND aggregate_version >= $4 AND aggregate_version <= $5
ORDER BY aggregate_version
"""
        self.get_checkpoint = (
            f"SELECT last_global_position FROM {config.checkpoints_table} "
            "WHERE projection_name = $1"
        )
        self.event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {config.events_table} "
            "ORDER BY event_type, event_version"
        )
        self.list_checkpoints = (
            "SELECT projection_name, last_global_position, updated_at "
            f"FROM {config.checkpoints_table} ORDER BY projection_name"
        )
        self.delete_checkpoints = (
            f"DELETE FROM {config.checkpoints_table} WHERE projection_name = ANY($1::text[])"
        )
        self.update_checkpoint = f"""
INSERT INTO {config.checkpoints_table} (projection_name, last_global_position, updated_at)
VALUES ($1, $2, now())
ON CONFLICT (projection_name) DO UPDATE
    SET last_global_position = EXCLUDED.last_global_position, updated_at = EXCLUDED.updated_at
"""


def notify_channel(config: StoreConfig) -> str:
    """The channel appends notify and processors listen on."""
    return f"{config.events_table}_appended"
