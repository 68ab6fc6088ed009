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

# Each append is one statement, in the order the Go library takes its locks: the events
# first (their unique keys), then the aggregate's head row, so that appends of the two
# libraries on one aggregate never wait on each other in a cycle.
#
# ``cur`` reads the head (a plain read, no lock) and takes the transaction's id before the
# INSERT draws positions from the sequence: gap-safe reading relies on every writer having
# its id before its position (the table's registration trigger does the same for writers
# that are not this library). The expected version is checked against that read, so a
# mismatch inserts nothing; a concurrent append of the same version is caught by the unique
# (aggregate, version) key, which makes this INSERT wait for it and then skip (in a
# transaction) or fail (alone). The head moves only when every event went in.
_APPEND = """
WITH cur AS (
    SELECT pg_current_xact_id() AS xid, COALESCE((SELECT aggregate_version FROM {heads}
        WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3), 0) AS v
),
inserted AS (
INSERT INTO {events} (
    bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type,
    event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at)
SELECT $1, $2, $3, {version}, {values}
FROM cur{rows}{where}{skip}
RETURNING global_position, aggregate_version
),
head AS (
    INSERT INTO {heads} AS h (bounded_context, aggregate_type, aggregate_id,
        aggregate_version, updated_at)
    SELECT $1, $2, $3, max(aggregate_version), now() FROM inserted HAVING count(*) = $4
    ON CONFLICT (bounded_context, aggregate_type, aggregate_id) DO UPDATE
        SET aggregate_version = GREATEST(h.aggregate_version, EXCLUDED.aggregate_version),
            updated_at = EXCLUDED.updated_at
    RETURNING 1
)
SELECT cur.v, inserted.global_position, inserted.aggregate_version,
    (SELECT count(*) FROM head){notify}
FROM cur LEFT JOIN inserted ON true
"""
# What the head read must show, per expected version ($5 is the exact version).
_CONDITIONS = {
    "any": "",
    "no_stream": "\nWHERE cur.v = 0",
    "exists": "\nWHERE cur.v > 0",
    "exact": "\nWHERE cur.v = $5",
}


class Statements:
    """The SQL text for one table configuration, built once (appends on first use)."""

    def append(self, mode: str, shared: frozenset[str] | None, *, alone: bool, notify: bool) -> str:
        """The append statement for ``mode`` ("any", "no_stream", "exists", "exact").

        ``shared`` is None for one event; for several, the columns sent once as scalars.
        ``alone``: the statement is its own transaction, so it must fail rather than skip
        a conflicting row (a skipped row could not be undone before it commits); in a
        transaction it skips, and the store undoes what went in. ``notify``: send the
        NOTIFY from the statement (in a transaction the caller owns; otherwise the backend
        notifies once the append has committed).
        """
        key = (mode, shared, alone, notify)
        sql = self._appends.get(key)
        if sql is None:
            sql = self._build_append(mode, shared, alone=alone, notify=notify)
            self._appends[key] = sql
        return sql

    def _build_append(
        self, mode: str, shared: frozenset[str] | None, *, alone: bool, notify: bool
    ) -> str:
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
            version, rows = "cur.v + 1", ""
        else:
            version = "cur.v + e.ord"
            rows = f", unnest({', '.join(arrays)}) WITH ORDINALITY AS e({', '.join(names)}, ord)"
        channel = self._names["channel"]
        notification = (
            f",\n    (SELECT pg_notify('{channel}', max(global_position)::text) FROM inserted)"
        )
        return _APPEND.format(
            events=self._names["events"],
            heads=self._names["heads"],
            version=version,
            values=", ".join(values),
            rows=rows,
            where=_CONDITIONS[mode],
            skip="" if alone else "\nON CONFLICT DO NOTHING",
            notify=notification if notify else "",
        )

    def __init__(self, config: StoreConfig) -> None:
        names = {
            "events": config.events_table,
            "heads": config.aggregate_heads_table,
            "checkpoints": config.checkpoints_table,
            "channel": config.channel,
        }
        self._names = names
        self._appends: dict[tuple[str, frozenset[str] | None, bool, bool], str] = {}
        # Only after a conflict: the stored events with the append's ids (probing the
        # unique index once per id), and the head as it is now.
        self.stored_ids = f"""
SELECT {EVENT_COLUMNS} FROM unnest($1::uuid[]) AS wanted(id)
CROSS JOIN LATERAL (SELECT * FROM {config.events_table} WHERE event_id = wanted.id) AS e
"""
        self.head_version = (
            f"SELECT aggregate_version FROM {config.aggregate_heads_table} "
            "WHERE bounded_context = $1 AND aggregate_type = $2 AND aggregate_id = $3"
        )
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
    return config.channel
