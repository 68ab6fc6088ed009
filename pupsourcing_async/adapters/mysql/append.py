"""Appending on MySQL and MariaDB: the statements of one append, sent in as few round trips
as ``max_allowed_packet`` allows.

An append, in the order the Go library takes its locks (event keys first, the aggregate's
head last), so that appends of the two libraries on one aggregate never deadlock:

1. register in the in-flight table before any position is drawn (gap safety; the events
   table's trigger does it for a single event, and for writers that are not this library),
2. read the aggregate's head into a session variable (a plain read, no lock),
3. insert the events at the versions after it — under ``NoStream()``, ``StreamExists()``
   and ``Exact(n)`` only if the head read says so; a concurrent append of the same version
   makes the insert wait for it on the unique key and then fail with a duplicate key,
4. move the head (only if every event went in), which reports the new version.

A duplicate key fails only its own statement: nothing of the append is kept (the head has
not moved), so the store can tell a retried append (its ids stored already) from a version
taken by a concurrent writer (``Any()`` tries again at the new head; the others raise the
conflict). A deadlock rolls the whole transaction back; a lock wait timeout only its
statement, so the store rolls the rest back itself: both are ``TransactionRolledBackError``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pymysql.err

from ... import es
from ...errors import InvalidEventError
from ...migrations import MYSQL_APPEND_SLOTS
from ...projection.partitioning import fnv1a_32
from .._shared import conflict_error, replayed, rolled_back
from .errors import DATA_ERRORS, DEADLOCK, DUPLICATE_KEY, LOCK_ERRORS, error_code, translated
from .literals import literal, render
from .sql import CONDITIONS, ROW, SELECT_ROW

if TYPE_CHECKING:
    from .store import Connection, Cursor, Store

__all__ = ["ServerFacts", "append"]

# TIMESTAMP columns (tables the Go library made) hold 1970-01-01 00:00:01 to 2038-01-19.
_TIMESTAMP_MIN = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
_TIMESTAMP_MAX = datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)
_EVENTS_PER_INSERT = 500
# Room left in a packet for the statements around the rows and the protocol's framing.
_PACKET_MARGIN = 16 * 1024
_COLUMN = re.compile(r"column '([^']+)'(?: at row (\d+))?")


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What an append needs to know about the server and the table, asked once.

    Attributes:
        max_packet: ``max_allowed_packet``: no round trip may be longer.
        consecutive: A multi-row insert gets consecutive positions (auto-increment lock
            mode 0 or 1), so the first one tells them all.
        mariadb: MariaDB (which has ``INSERT ... RETURNING``), not MySQL.
        timestamp_column: ``created_at`` is a TIMESTAMP (a table the Go library made),
            which holds only 1970 to 2038.
        trigger: The events table has the registration trigger.
    """

    max_packet: int
    consecutive: bool
    mariadb: bool
    timestamp_column: bool
    trigger: bool


class _Outcome:
    """What the statements of an append returned: per insert its count and positions."""

    __slots__ = ("head", "inserted", "positions")

    def __init__(self) -> None:
        self.inserted = 0
        self.positions: list[int] = []
        self.head: int | None = None


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _rows(events: Sequence[es.Event], select: bool, condition: str) -> list[str]:
    """Each event's values as SQL text: a VALUES row, or a SELECT of them."""
    first = events[0]
    key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
    template = f"{SELECT_ROW} FROM DUAL WHERE {condition}" if select else ROW
    rendered = []
    metadata: bytes | None = None
    metadata_text = "NULL"
    for offset, event in enumerate(events, 1):
        if event.metadata is not metadata:
            metadata = event.metadata
            metadata_text = literal(None if metadata is None else metadata.decode())
        rendered.append(
            template
            % (
                *map(
                    literal,
                    (
                        *key,
                        offset,
                        event.event_id.bytes,
                        event.event_type,
                        event.event_version,
                        event.payload,
                        event.trace_id,
                        event.correlation_id,
                        event.causation_id,
                    ),
                ),
                metadata_text,
                literal(_utc(event.created_at)),
            )
        )
    return rendered


def _check_timestamps(events: Sequence[es.Event]) -> None:
    for index, event in enumerate(events):
        if not _TIMESTAMP_MIN <= event.created_at <= _TIMESTAMP_MAX:
            raise InvalidEventError(
                index,
                "created_at",
                "must lie between 1970-01-01 00:00:01 and 2038-01-19 03:14:07 UTC: this "
                "events table keeps created_at in a TIMESTAMP column",
            )


def append_slot(key: tuple[str, str, str]) -> int:
    """The append lock row of an aggregate: a stable hash of its key."""
    text = "\x00".join(key).encode("utf-8")
    return fnv1a_32(text) % MYSQL_APPEND_SLOTS


def _mode(required: int | None) -> str:
    if required is None:
        return "any"
    if required == es.STREAM_EXISTS:
        return "exists"
    return "exact" if required else "no_stream"


async def append(
    store: Store,
    tx: Connection,
    expected: es.ExpectedVersion,
    events: Sequence[es.Event],
    *,
    alone: bool,
) -> es.AppendResult:
    """Append ``events``; with ``alone`` the append is its own transaction (begun and
    committed in its own round trips, on a connection in none)."""
    required = es.validate_append(expected, events)
    first = events[0]
    count = len(events)
    key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
    sql = store.sql
    with translated(store.location):
        async with tx.cursor() as cursor:
            facts = await store.facts(cursor, tx)
            if facts.timestamp_column:
                _check_timestamps(events)
            mode = _mode(required)
            condition = ""
            if mode != "any":
                condition = render(CONDITIONS[mode], [required] if mode == "exact" else [])
            inserts = _inserts(sql.insert, events, mode, condition, facts)
            now = _utc(datetime.now(UTC))
            before = []
            if count > 1 or not facts.trigger:
                before += sql.register
            if count > 1 and facts.trigger:
                before.append(sql.mark)
            # Queue behind this library's other appends to the aggregate (see migrations).
            before.append(render(sql.lock_slot, [append_slot(key)]))
            before.append(render(sql.read_head, key))
            check = []
            if condition and count > 1:
                # Rows of a VALUES list cannot be made conditional (and an INSERT ...
                # SELECT of several rows burns positions, leaving holes): check the head
                # read first, and send the rows only if it holds.
                check.append(f"SELECT {condition}")
            where = f" WHERE {condition}" if condition else ""
            move = render(sql.move_head.replace("{where}", where), [*key, count, now, count, now])
            after = [move]
            if count > 1 and facts.trigger:
                after.append(sql.unmark)
            if alone:
                before.insert(0, "START TRANSACTION")
                after.append("COMMIT")
            seen: int | None = None
            while True:
                outcome = await _send(
                    store, cursor, tx, facts, key, (before, check, inserts, after), alone
                )
                if outcome is not None and outcome.inserted == count:
                    break
                # Nothing of the append is kept. A retry of a stored append gets its result;
                # the rest conflict, unless they can go on at the head another append moved.
                stored = await _stored(store, cursor, events)
                found = []
                if not stored:
                    await cursor.execute(render(sql.head_version, key))
                    found = list(await cursor.fetchall())
                if alone:
                    # The look-ups ran in a transaction of their own (the connection does
                    # not autocommit): end it, or the connection idles in it.
                    await cursor.execute("ROLLBACK")
                if stored:
                    return replayed(store.log, expected, events, stored)
                actual = int(found[0][0]) if found else 0
                # Any() and StreamExists() (while it holds) try again at the new head; a
                # head that did not move means versions stored past it (by a writer that
                # left the head behind): trying again would not help.
                again = mode == "any" or (mode == "exists" and actual > 0)
                if not again or (seen is not None and actual <= seen):
                    raise conflict_error(store.log, expected, first, actual=actual)
                seen = actual
            positions = outcome.positions
            if not positions:
                versions = (outcome.head or 0) - count + 1, outcome.head or 0
                await cursor.execute(render(sql.positions, [*key, *versions]))
                positions = [row[0] for row in await cursor.fetchall()]
                if alone:
                    # The look-up came after COMMIT, in a transaction of its own.
                    await cursor.execute("COMMIT")
    base = (outcome.head or count) - count
    if not alone:
        store.appends.note(tx, positions[-1])
    store.log.debug(
        "appended events",
        bounded_context=first.bounded_context,
        aggregate_type=first.aggregate_type,
        aggregate_id=first.aggregate_id,
        from_version=base + 1,
        to_version=base + count,
        positions=positions,
    )
    persisted = [
        es.persisted(event, position, base + offset)
        for offset, (event, position) in enumerate(zip(events, positions, strict=True), 1)
    ]
    return es.AppendResult(persisted, positions)


def _inserts(
    insert: str, events: Sequence[es.Event], mode: str, condition: str, facts: ServerFacts
) -> list[str]:
    """The INSERT statements of the events: each within the packet limit and of at most
    ``_EVENTS_PER_INSERT`` rows."""
    select = mode != "any" and len(events) == 1
    rows = _rows(events, select, condition)
    head = insert.removesuffix(" VALUES ") + " " if select else insert
    joiner = " UNION ALL " if select else ", "
    tail = " RETURNING global_position" if facts.mariadb and not facts.consecutive else ""
    limit = facts.max_packet - _PACKET_MARGIN
    statements: list[str] = []
    chunk: list[str] = []
    size = len(head) + len(tail)
    for index, row in enumerate(rows):
        if len(head) + len(row) + len(tail) > limit:
            raise InvalidEventError(
                index,
                "payload",
                f"is too large for this server: written as SQL the event takes {len(row):,} "
                f"bytes, more than max_allowed_packet ({facts.max_packet:,}) allows",
            )
        if chunk and (len(chunk) == _EVENTS_PER_INSERT or size + len(row) > limit):
            statements.append(head + joiner.join(chunk) + tail)
            chunk, size = [], len(head) + len(tail)
        chunk.append(row)
        size += len(row) + len(joiner)
    statements.append(head + joiner.join(chunk) + tail)
    return statements


async def _send(
    store: Store,
    cursor: Cursor,
    tx: Connection,
    facts: ServerFacts,
    key: tuple[str, str, str],
    statements: tuple[list[str], list[str], list[str], list[str]],
    alone: bool,
) -> _Outcome | None:
    """Send an append's statements in round trips within the packet limit; what they did,
    or ``None`` when an insert hit a duplicate key (nothing of the append is kept then)."""
    before, check, inserts, after = statements
    statements_ = [*before, *check, *inserts, *after]
    kinds = [
        *(["before"] * len(before)),
        *(["check"] * len(check)),
        *(["insert"] * len(inserts)),
        *(["after"] * len(after)),
    ]
    limit = facts.max_packet - _PACKET_MARGIN
    outcome = _Outcome()
    index = 0
    while index < len(statements_):
        trip = [statements_[index]]
        size = len(statements_[index])
        while index + len(trip) < len(statements_):
            following = statements_[index + len(trip)]
            if size + len(following) + 2 > limit or kinds[index + len(trip) - 1] == "check":
                break
            trip.append(following)
            size += len(following) + 2
        done = 0
        try:
            await cursor.execute("; ".join(trip))
            while True:
                rows = await cursor.fetchall()
                _record(outcome, kinds[index + done], cursor, rows, facts.consecutive)
                done += 1
                if not await cursor.nextset():
                    break
        except pymysql.err.MySQLError as err:
            failed = kinds[index + done] if index + done < len(kinds) else "after"
            return await _failed(store, cursor, tx, err, outcome, failed, key, alone)
        index += len(trip)
        if kinds[index - 1] == "check" and not rows[0][0]:
            # The head is not at the expected version: nothing was written.
            await cursor.execute("ROLLBACK" if alone else store.sql.unmark)
            return outcome
    return outcome


def _record(
    outcome: _Outcome, kind: str, cursor: Cursor, rows: Sequence[Any], consecutive: bool
) -> None:
    if kind == "insert":
        if rows:
            outcome.positions += sorted(row[0] for row in rows)
        elif consecutive and cursor.rowcount > 0:
            outcome.positions += range(cursor.lastrowid, cursor.lastrowid + cursor.rowcount)
        outcome.inserted += max(cursor.rowcount, 0)
    elif kind == "after" and outcome.head is None and cursor.rowcount > 0:
        outcome.head = cursor.lastrowid


async def _failed(
    store: Store,
    cursor: Cursor,
    tx: Connection,
    err: pymysql.err.MySQLError,
    outcome: _Outcome,
    failed: str,
    key: tuple[str, str, str],
    alone: bool,
) -> _Outcome | None:
    """Clean up after a statement of an append failed, then say what happened."""
    code = error_code(err)
    if code == DEADLOCK:
        # InnoDB rolled the whole transaction back: touch nothing of it, but the session.
        await cursor.execute(store.sql.unmark)
        error = rolled_back("deadlock", store.location, err.args[-1])
        store.appends.doom(tx, error)
        raise error from err
    if code in LOCK_ERRORS:
        # A lock wait timeout undid only its statement; the error says the whole
        # transaction is gone, so make it so.
        await cursor.execute("ROLLBACK")
        await cursor.execute(store.sql.unmark)
        error = rolled_back("lock timeout", store.location, err.args[-1])
        store.appends.doom(tx, error)
        raise error from err
    if alone:
        await cursor.execute("ROLLBACK")
    elif outcome.inserted:
        # Earlier round trips stored some of the events: take them out with the append.
        await cursor.execute(render(store.sql.delete_inserted, [*key, outcome.inserted]))
    await cursor.execute(store.sql.unmark)
    if code == DUPLICATE_KEY and failed == "insert":
        return None
    if code in DATA_ERRORS:
        match = _COLUMN.search(str(err.args[-1]))
        column = match.group(1) if match else "event"
        index = int(match.group(2)) - 1 if match and match.group(2) else 0
        raise InvalidEventError(
            index, column, f"does not fit the events table's column: {err.args[-1]}"
        ) from err
    raise err


async def _stored(
    store: Store, cursor: Cursor, events: Sequence[es.Event]
) -> dict[uuid.UUID, es.PersistedEvent]:
    """The stored events that have the ids of ``events``, by id."""
    from .store import row_event

    found: dict[uuid.UUID, es.PersistedEvent] = {}
    for start in range(0, len(events), _EVENTS_PER_INSERT):
        ids = [event.event_id.bytes for event in events[start : start + _EVENTS_PER_INSERT]]
        placeholders = ", ".join(["%s"] * len(ids))
        await cursor.execute(render(f"{store.sql.stored_ids}({placeholders})", ids))
        for row in await cursor.fetchall():
            event = row_event(row)
            found[event.event_id] = event
    return found
