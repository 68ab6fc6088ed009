"""The event store on MySQL and MariaDB: appends, gap-safe reads and checkpoints."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pymysql.err

from ... import es
from ..._holes import HoleTracker, PendingHole
from ...errors import InvalidEventError
from ...log import get_logger
from ...migrations import in_flight_table
from ...observe import observed_append
from ...store import StoreConfig, default_store_config
from .._shared import (
    AppendTracker,
    as_bytes,
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
    conflict_error,
)
from ..base import CheckpointRow
from .errors import DEADLOCK, DUPLICATE_KEY, LOCK_ERRORS, error_code, is_unavailable, translated
from .snapshots import Snapshots
from .sql import EVENT_COLUMNS, INSERT_COLUMNS, KEY, ROW_FROM_HEAD, ROW_LITERAL


class Cursor(Protocol):
    """The part of ``aiomysql.Cursor`` the store uses."""

    rowcount: int
    lastrowid: int

    async def execute(self, query: str, args: Sequence[object] | None = None) -> int: ...

    async def fetchall(self) -> Sequence[tuple[Any, ...]]: ...

    async def nextset(self) -> bool | None: ...


class _CursorContext(Protocol):
    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


class Connection(Protocol):
    """The part of ``aiomysql.Connection`` the store uses (what ``tx`` must be)."""

    def cursor(self) -> _CursorContext: ...

    def get_server_info(self) -> str: ...


# TIMESTAMP columns hold 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC.
_TIMESTAMP_MIN = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
_TIMESTAMP_MAX = datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# MySQL limits a packet (and so a statement) to max_allowed_packet bytes.
_EVENTS_PER_INSERT = 500


class _Result:
    """What one statement of a multi-statement round trip returned."""

    __slots__ = ("lastrowid", "rowcount", "rows")

    def __init__(self, rows: Sequence[Any], rowcount: int, lastrowid: int) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    @classmethod
    async def read(cls, cursor: Cursor) -> _Result:
        rows = await cursor.fetchall()
        return cls(rows, cursor.rowcount, cursor.lastrowid)


async def results(cursor: Cursor, sql: str, args: Sequence[object]) -> list[Sequence[Any]]:
    """Run ``;``-separated statements in one round trip; the rows of each, in order."""
    await cursor.execute(sql, args)
    results = [await cursor.fetchall()]
    while await cursor.nextset():
        results.append(await cursor.fetchall())
    return results


def _timestamp(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def _event(row: Sequence[Any]) -> es.PersistedEvent:
    return es.make_persisted(
        row[1],
        row[2],
        row[3],
        row[6],
        row[8],
        uuid.UUID(bytes=row[5]),
        row[7],
        as_bytes(row[12]),
        row[9],
        row[10],
        row[11],
        _timestamp(row[13]),
        row[0],
        row[4],
    )


def _row_values(
    event: es.Event, version: int | None, key: tuple[str, str, str] | None = None
) -> tuple[object, ...]:
    """An event's INSERT values: the aggregate key, its version, then its own columns."""
    return (
        *(key or (event.bounded_context, event.aggregate_type, event.aggregate_id)),
        version,
        event.event_id.bytes,
        event.event_type,
        event.event_version,
        event.payload,
        event.trace_id,
        event.correlation_id,
        event.causation_id,
        None if event.metadata is None else event.metadata.decode(),
        _utc(event.created_at),
    )


def _check_timestamps(events: Sequence[es.Event]) -> None:
    for index, event in enumerate(events):
        if not _TIMESTAMP_MIN <= event.created_at <= _TIMESTAMP_MAX:
            raise InvalidEventError(
                index,
                "created_at",
                "must lie between 1970-01-01 00:00:01 and 2038-01-19 03:14:07 UTC "
                f"on MySQL (a TIMESTAMP column), got {event.created_at.isoformat()}",
            )


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


class Store:
    """The event store on MySQL 8 or MariaDB 10.5+.

    Gap-safe reading keeps what it learns about holes in the log on this object, so share
    one ``Store`` among all readers of a database.

    Args:
        config: Table names and logger; the defaults when omitted.
        location: Where the database is, used in error messages.
    """

    def __init__(self, config: StoreConfig | None = None, *, location: str = "MySQL") -> None:
        self._config = config or default_store_config()
        self._location = location
        self._log = get_logger(self._config.logger, "pupsourcing_async.store")
        #: The aggregate snapshots kept beside this store's events.
        self.snapshots = Snapshots(self._config, location=location)
        self._holes: HoleTracker[int] = HoleTracker()
        self._proven = 0  # every registration below this id is known to have ended
        self._mariadb: bool | None = None
        self._warned_isolation = False
        events, heads = self._config.events_table, self._config.aggregate_heads_table
        checkpoints, in_flight = self._config.checkpoints_table, in_flight_table(self._config)
        self._register = (
            f"INSERT INTO {in_flight} () VALUES (); "
            f"DELETE FROM {in_flight} WHERE id = LAST_INSERT_ID(); "
        )
        self._fence = self._register + "SELECT LAST_INSERT_ID()"
        insert_head = (
            f"INSERT INTO {heads} (bounded_context, aggregate_type, aggregate_id, "
            "aggregate_version, updated_at) VALUES (%s, %s, %s, {version}, %s)"
        )
        # Under Any() the head's new version is only known on the server: LAST_INSERT_ID(x)
        # reports it (the OK packet carries it) and the next statement reads it for the rows.
        self._head_any = (
            insert_head.format(version="LAST_INSERT_ID(%s)")
            + " ON DUPLICATE KEY UPDATE aggregate_version = "
            "LAST_INSERT_ID(aggregate_version + VALUES(aggregate_version)), "
            "updated_at = VALUES(updated_at)"
        )
        # Several chunks: the first one's insert resets LAST_INSERT_ID, so keep the version.
        self._keep_head = "SET @pupsourcing_async_head = LAST_INSERT_ID()"
        self._head_new = insert_head.format(version="%s")
        self._head_exact = (
            f"UPDATE {heads} SET aggregate_version = %s, updated_at = %s "
            f"WHERE {KEY} AND aggregate_version = %s"
        )
        self._head_version_sql = f"SELECT aggregate_version FROM {heads} WHERE {KEY}"
        # Put a head back after its events failed to go in: delete it if this append
        # created it (its version is the number of events), else step it back.
        self._undo_head = (
            f"DELETE FROM {heads} WHERE {KEY} AND aggregate_version = %s; "
            f"UPDATE {heads} SET aggregate_version = aggregate_version - %s WHERE {KEY}"
        )
        self._duplicates = f"SELECT event_id FROM {events} WHERE event_id IN "
        self._insert = f"INSERT INTO {events} ({INSERT_COLUMNS}) VALUES "
        # One event under Exact(n): inserted only if the head moved from n (the head it
        # joins must be at n + 1), so a mismatch inserts nothing. A one-row INSERT ... SELECT
        # reserves exactly one position, so it leaves no gap in the log.
        self._insert_one_exact = (
            f"INSERT INTO {events} ({INSERT_COLUMNS}) "
            "SELECT h.bounded_context, h.aggregate_type, h.aggregate_id, h.aggregate_version, "
            "%s, %s, %s, %s, %s, %s, %s, %s, %s "
            f"FROM {heads} AS h WHERE h.bounded_context = %s AND h.aggregate_type = %s "
            "AND h.aggregate_id = %s AND h.aggregate_version = %s"
        )
        self._positions = (
            f"SELECT global_position FROM {events} WHERE {KEY} "
            f"AND aggregate_version > (SELECT aggregate_version FROM {heads} WHERE {KEY}) - %s "
            "ORDER BY aggregate_version"
        )
        self._consecutive: bool | None = None
        self._proof = f"SELECT id FROM {in_flight} WHERE id < %s "
        self._read_events = (
            f"SELECT {EVENT_COLUMNS} FROM {events} WHERE global_position > %s "
            "ORDER BY global_position LIMIT %s"
        )
        self._latest = f"SELECT COALESCE(MAX(global_position), 0) FROM {events}"
        self._stream = (
            f"SELECT {EVENT_COLUMNS} FROM {events} WHERE {KEY} "
            "AND aggregate_version >= %s AND aggregate_version <= %s ORDER BY aggregate_version"
        )
        self._get_checkpoint = (
            f"SELECT last_global_position FROM {checkpoints} WHERE projection_name = %s"
        )
        self._event_types = (
            f"SELECT DISTINCT event_type, event_version FROM {events} "
            "ORDER BY event_type, event_version"
        )
        self._list_checkpoints = (
            "SELECT projection_name, last_global_position, "
            "CAST(UNIX_TIMESTAMP(updated_at) * 1000000 AS SIGNED) "
            f"FROM {checkpoints} ORDER BY projection_name"
        )
        self._delete_checkpoints = f"DELETE FROM {checkpoints} WHERE projection_name IN "
        #: Connections that appended in their open transaction (see AppendTracker).
        self.appends = AppendTracker()
        self._update_checkpoint = (
            f"INSERT INTO {checkpoints} (projection_name, last_global_position, updated_at) "
            "VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE "
            "last_global_position = VALUES(last_global_position), "
            "updated_at = VALUES(updated_at)"
        )

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        return self._config

    def pending_holes(self) -> list[PendingHole]:
        """Holes readers of this store wait on, lowest first."""
        return self._holes.pending()

    def _is_mariadb(self, tx: Connection) -> bool:
        if self._mariadb is None:
            self._mariadb = "mariadb" in tx.get_server_info().lower()
        return self._mariadb

    async def append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate. See ``EventStore.append``."""
        observers = self._config.observers
        if not observers:
            return await self._append(tx, expected, events)
        return await observed_append(
            observers, "mysql", expected, events, lambda events: self._append(tx, expected, events)
        )

    async def _append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate. See ``EventStore.append``.

        One round trip (two for several events under ``Exact(n)``): register the append
        (insert and delete its in-flight row), move the aggregate's head (which locks it and
        checks the expected version), then insert the events. An expected-version mismatch
        inserts nothing; an insert that fails puts the head back.
        """
        required = es.validate_append(expected, events)
        _check_timestamps(events)
        first = events[0]
        count = len(events)
        key = (first.bounded_context, first.aggregate_type, first.aggregate_id)
        now = _utc(datetime.now(UTC))
        mariadb = self._is_mariadb(tx)
        async with tx.cursor() as cursor:
            with translated(self._location):
                consecutive = count == 1 or await self._consecutive_ids(cursor)
                if required is None:
                    head, args = self._head_any, [*key, count, now]
                elif required == 0:
                    head, args = self._head_new, [*key, count, now]
                else:
                    head, args = self._head_exact, [required + count, now, *key, required]
                statements = [self._register + head]
                if required and count > 1:
                    # Rows of a VALUES list cannot be made conditional on the head: check
                    # that it moved before inserting them.
                    done = await self._run(cursor, statements, args, expected, events, key)
                    if not done[2].rowcount:
                        raise await self._mismatch(tx, expected, events, key)
                    statements, args = [], []
                moved = not statements
                chunked = count > _EVENTS_PER_INSERT
                if required is None and chunked:
                    statements.append(self._keep_head)
                # Results before the inserts': the registration's two and the head's, one
                # more when the head's version is kept for later chunks; none when a first
                # round trip already moved the head.
                skip = 0 if moved else 3 + (required is None and chunked)
                if required and count == 1:
                    statements.append(self._insert_one_exact)
                    args += (*_row_values(first, None)[4:], *key, required + 1)
                else:
                    returning = mariadb and not consecutive
                    for statement, chunk_args in self._inserts(
                        key, events, required, returning, chunked
                    ):
                        statements.append(statement)
                        args += chunk_args
                if not consecutive and not mariadb:
                    statements.append(self._positions)
                    args += (*key, *key, count)
                results = await self._run(
                    cursor, statements, args, expected, events, key, head_moved=moved
                )
        inserted = results[skip : skip + -(-count // _EVENTS_PER_INSERT)]
        if inserted[0].rowcount == 0:
            # Exact(n) on one event: the head was not at n (or not there at all).
            raise await self._mismatch(tx, expected, events, key)
        if consecutive:
            positions = [r.lastrowid + offset for r in inserted for offset in range(r.rowcount)]
        elif mariadb:
            positions = sorted(row[0] for r in inserted for row in r.rows)
        else:
            positions = [row[0] for row in results[-1].rows]
        # Under Any() the head's upsert reported its new version through LAST_INSERT_ID(x).
        version = results[2].lastrowid if required is None else required + count
        base = version - count
        self.appends.note(tx)
        stored = [
            es.persisted(event, position, base + offset)
            for offset, (event, position) in enumerate(zip(events, positions, strict=True), 1)
        ]
        self._log.debug(
            "appended events",
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            from_version=base + 1,
            to_version=base + count,
            positions=positions,
        )
        return es.AppendResult(stored, positions)

    async def _run(
        self,
        cursor: Cursor,
        statements: list[str],
        args: list[object],
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        key: tuple[str, str, str],
        *,
        head_moved: bool = False,
    ) -> list[_Result]:
        """Send an append's ``statements`` in one round trip; what each returned, in order.

        ``head_moved`` says an earlier round trip already moved the aggregate's head.
        """
        done: list[_Result] = []
        try:
            await cursor.execute("; ".join(statements), args)
            done.append(await _Result.read(cursor))
            while await cursor.nextset():
                done.append(await _Result.read(cursor))
        except pymysql.err.MySQLError as err:
            if is_unavailable(err):
                raise
            moved = head_moved or (len(done) > 2 and done[2].rowcount > 0)
            raise await self._append_failed(cursor, err, moved, expected, events, key) from err
        return done

    def _inserts(
        self,
        key: tuple[str, str, str],
        events: Sequence[es.Event],
        required: int | None,
        returning: bool,
        chunked: bool,
    ) -> list[tuple[str, list[object]]]:
        """Multi-row INSERTs of ``events`` in chunks; versions literal, or from the head."""
        count = len(events)
        head = "@pupsourcing_async_head" if chunked else "LAST_INSERT_ID()"
        template = ROW_FROM_HEAD.format(head=head) if required is None else ROW_LITERAL
        inserts = []
        for start in range(0, count, _EVENTS_PER_INSERT):
            chunk = events[start : start + _EVENTS_PER_INSERT]
            args: list[object] = []
            for offset, event in enumerate(chunk, start + 1):
                version = count - offset if required is None else required + offset
                args += _row_values(event, version, key)
            statement = self._insert + ", ".join([template] * len(chunk))
            inserts.append((statement + (" RETURNING global_position" if returning else ""), args))
        return inserts

    async def _consecutive_ids(self, cursor: Cursor) -> bool:
        """Whether a multi-row insert gets consecutive positions (auto-increment lock mode 0
        or 1), so the first one tells them all; asked once."""
        if self._consecutive is None:
            await cursor.execute("SELECT @@innodb_autoinc_lock_mode")
            self._consecutive = int((await cursor.fetchall())[0][0]) <= 1
        return self._consecutive

    async def _mismatch(
        self,
        tx: Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        key: tuple[str, str, str],
    ) -> Exception:
        """The error for an append whose head was not at the expected version: a
        duplicate if one of its ids is stored already (a retried command), else a
        conflict with the version found."""
        async with tx.cursor() as cursor:
            with translated(self._location):
                return await self._conflict_found(cursor, expected, events, key)

    async def _conflict_found(
        self,
        cursor: Cursor,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        key: tuple[str, str, str],
    ) -> Exception:
        first = events[0]
        event_id = await self._stored_id(cursor, events)
        if event_id is not None:
            return conflict_error(self._log, expected, first, actual=None, event_id=event_id)
        await cursor.execute(self._head_version_sql, key)
        rows = await cursor.fetchall()
        actual = int(rows[0][0]) if rows else 0
        return conflict_error(self._log, expected, first, actual=actual)

    async def _stored_id(self, cursor: Cursor, events: Sequence[es.Event]) -> uuid.UUID | None:
        """An id of ``events`` that is stored already, if any (looked up after a conflict,
        so a retried command is told it already happened)."""
        ids = [event.event_id.bytes for event in events]
        await cursor.execute(
            self._duplicates + "(" + ", ".join(["%s"] * len(ids)) + ") LIMIT 1", ids
        )
        found = await cursor.fetchall()
        return uuid.UUID(bytes=found[0][0]) if found else None

    async def _append_failed(
        self,
        cursor: Cursor,
        err: pymysql.err.MySQLError,
        head_moved: bool,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        key: tuple[str, str, str],
    ) -> Exception:
        """The error for an append whose round trip failed part-way; undoes its head move.

        Statements after the failing one did not run. A deadlock rolled the whole
        transaction back (nothing to undo, and nothing may be touched: the next statement
        would start a new transaction); any other failure undid only its own statement.
        """
        first, code = events[0], error_code(err)
        if code in LOCK_ERRORS or code == DUPLICATE_KEY:
            if code != DEADLOCK and head_moved:
                await results(cursor, self._undo_head, (*key, len(events), len(events), *key))
            if code == DUPLICATE_KEY and "event_id" in str(err):
                return conflict_error(
                    self._log,
                    expected,
                    first,
                    actual=None,
                    duplicate=True,
                    event_id=await self._stored_id(cursor, events),
                )
            if code == DUPLICATE_KEY:
                # The head's insert found the aggregate (NoStream), or the versions the
                # head promised are taken (Exact(n) when it is at n plus this many).
                return await self._conflict_found(cursor, expected, events, key)
            return conflict_error(self._log, expected, first, actual=None)
        return err

    async def read_events(
        self, tx: Connection, from_position: int = 0, limit: int = 100
    ) -> list[es.PersistedEvent]:
        """Read events after ``from_position``, gap-safe. See ``EventStore.read_events``."""
        check_position("from_position", from_position)
        check_limit(limit)
        async with tx.cursor() as cursor:
            with translated(self._location):
                proven = await self._prove(cursor, tx)
                await cursor.execute(self._read_events, (from_position, limit))
                rows = await cursor.fetchall()
                if not rows:
                    return []
                count = self._holes.deliverable(
                    from_position, [row[0] for row in rows], lambda fence: fence <= proven
                )
                if self._holes.needs_fence():
                    fenced = await results(cursor, self._fence, ())
                    fence: int = fenced[-1][0][0]
                    self._holes.set_fence(fence)
                    self._log.debug("fenced holes in the log", fence=fence)
        return [_event(row) for row in rows[:count]]

    async def _prove(self, cursor: Cursor, tx: Connection) -> int:
        """Raise the proven mark if no registration below a pending fence is in flight.

        Returns the mark that holds for a snapshot taken after this call.
        """
        fences = sorted(fence for fence in self._holes.pending_fences() if fence > self._proven)
        if not fences:
            return self._proven
        if not await self._read_committed(cursor, tx):
            return 0
        lock = "LOCK IN SHARE MODE NOWAIT" if self._is_mariadb(tx) else "FOR SHARE NOWAIT"
        for target in (fences[-1], fences[0]) if len(fences) > 1 else (fences[0],):
            try:
                await cursor.execute(self._proof + lock, (target,))
                await cursor.fetchall()
            except pymysql.err.OperationalError as err:
                if error_code(err) not in LOCK_ERRORS:
                    raise
                continue
            self._proven = max(self._proven, target)
            break
        return self._proven

    async def _read_committed(self, cursor: Cursor, tx: Connection) -> bool:
        variable = "@@tx_isolation" if self._is_mariadb(tx) else "@@transaction_isolation"
        await cursor.execute(f"SELECT {variable}")
        level = str((await cursor.fetchall())[0][0])
        if level == "READ-COMMITTED":
            return True
        if not self._warned_isolation:
            self._warned_isolation = True
            self._log.error(
                "reading at a stricter isolation than READ COMMITTED: holes in the log "
                "will not be passed, so delivery may stall; use READ COMMITTED",
                isolation=level,
            )
        return False

    async def latest_global_position(self, tx: Connection) -> int:
        """The highest committed global position, 0 when the log is empty."""
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._latest)
                rows = await cursor.fetchall()
        return int(rows[0][0])

    async def read_aggregate_stream(
        self,
        tx: Connection,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> es.Stream:
        """Read one aggregate's events in version order; both bounds inclusive."""
        low, high = check_stream_args(
            bounded_context, aggregate_type, aggregate_id, from_version, to_version
        )
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(
                    self._stream, (bounded_context, aggregate_type, aggregate_id, low, high)
                )
                rows = await cursor.fetchall()
        return es.Stream(
            bounded_context, aggregate_type, aggregate_id, [_event(row) for row in rows]
        )

    async def get_checkpoint(self, tx: Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._get_checkpoint, (projection_name,))
                rows = await cursor.fetchall()
        return int(rows[0][0]) if rows else 0

    async def list_checkpoints(self, tx: Connection) -> list[CheckpointRow]:
        """Every checkpoint row, by name."""
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._list_checkpoints)
                rows = await cursor.fetchall()
        return [
            CheckpointRow(name, int(position), None if micros is None else _timestamp(micros))
            for name, position, micros in rows
        ]

    async def event_types(self, tx: Connection) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._event_types)
                rows = await cursor.fetchall()
        return [(row[0], int(row[1])) for row in rows]

    async def delete_checkpoints(self, tx: Connection, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        if not names:
            return 0
        async with tx.cursor() as cursor:
            with translated(self._location):
                return await cursor.execute(
                    self._delete_checkpoints + "(" + ", ".join(["%s"] * len(names)) + ")", names
                )

    async def update_checkpoint(self, tx: Connection, projection_name: str, position: int) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        now = _utc(datetime.now(UTC))
        async with tx.cursor() as cursor:
            with translated(self._location):
                await cursor.execute(self._update_checkpoint, (projection_name, position, now))
