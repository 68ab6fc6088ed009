"""Session settings and the SQL text shared by the MySQL store."""

from __future__ import annotations

# Session settings every store connection needs (see the module docstring).
SESSION_SETUP = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; SET time_zone = '+00:00'"


EVENT_COLUMNS = (
    "global_position, bounded_context, aggregate_type, aggregate_id, aggregate_version, "
    "event_id, event_type, event_version, payload, trace_id, correlation_id, causation_id, "
    "metadata, CAST(UNIX_TIMESTAMP(created_at) * 1000000 AS SIGNED)"
)
INSERT_COLUMNS = (
    "bounded_context, aggregate_type, aggregate_id, aggregate_version, event_id, event_type, "
    "event_version, payload, trace_id, correlation_id, causation_id, metadata, created_at"
)
KEY = "bounded_context = %s AND aggregate_type = %s AND aggregate_id = %s"
# A row of a multi-row INSERT: its version is a literal, or counted back from the head's
# new version: LAST_INSERT_ID() in the statement right after the head's, or a session
# variable the head's statement leaves for later chunks.
ROW_LITERAL = "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
ROW_FROM_HEAD = "(%s, %s, %s, {head} - %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
