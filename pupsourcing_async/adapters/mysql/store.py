"""The event store on MySQL and MariaDB: appends, gap-safe reads and checkpoints."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pymysql.err

from ... import es
from ..._holes import HoleTracker, PendingHole
from ...log import Logger, get_logger
from ...migrations import registration_trigger
from ...observe import observed_append
from ...store import StoreConfig, default_store_config
from .._shared import (
    AppendTracker,
    as_bytes,
    check_limit,
    check_position,
    check_projection_name,
    check_stream_args,
)
from ..base import CheckpointRow
from .append import ServerFacts, append
from .errors import LOCK_ERRORS, error_code, translated
from .literals import render
from .parked import ParkedEvents
from .snapshots import Snapshots
from .sql import Statements


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


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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


async def results(cursor: Cursor, sql: str) -> list[Sequence[Any]]:
    """Run ``;``-separated statements in one round trip; the rows of each, in order."""
    await cursor.execute(sql)
    results = [await cursor.fetchall()]
    while await cursor.nextset():
        results.append(await cursor.fetchall())
    return results


def _timestamp(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def row_event(row: Sequence[Any]) -> es.PersistedEvent:
    """The event of a row (columns as ``EVENT_COLUMNS``)."""
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
        #: The events projections parked (``OnFailure.PARK``).
        self.parked = ParkedEvents(self._config, location=location)
        self._holes: HoleTracker[int] = HoleTracker()
        self._proven = 0  # every registration below this id is known to have ended
        self._facts: ServerFacts | None = None
        self._warned_isolation = False
        self._sql = Statements(self._config)
        #: Connections that appended in their open transaction (see AppendTracker).
        self.appends = AppendTracker()

    @property
    def config(self) -> StoreConfig:
        """The table names and logger this store uses."""
        return self._config

    @property
    def sql(self) -> Statements:
        """The store's SQL text."""
        return self._sql

    @property
    def location(self) -> str:
        """Where the database is, for messages."""
        return self._location

    @property
    def log(self) -> Logger:
        """Where the store logs."""
        return self._log

    def pending_holes(self) -> list[PendingHole]:
        """Holes readers of this store wait on, lowest first."""
        return self._holes.pending()

    async def facts(self, cursor: Cursor, tx: Connection) -> ServerFacts:
        """What appends need to know about the server and the table (asked once)."""
        if self._facts is None:
            events = self._config.events_table
            trigger = registration_trigger(self._config)
            await cursor.execute(render(self._sql.facts, [events, events, trigger]))
            packet, lock_mode, version, column, triggers = (await cursor.fetchall())[0]
            self._facts = ServerFacts(
                max_packet=int(packet),
                consecutive=int(lock_mode) <= 1,
                mariadb="mariadb" in f"{version} {tx.get_server_info()}".lower(),
                timestamp_column=str(column).lower() == "timestamp",
                trigger=int(triggers) > 0,
            )
        return self._facts

    def forget_facts(self) -> None:
        """Ask the server again before the next append (the schema may have changed)."""
        self._facts = None

    async def append(
        self, tx: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate. See ``EventStore.append``."""
        return await self._observed(tx, expected, events, alone=False)

    async def append_alone(
        self, connection: Connection, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` as a transaction of its own, begun and committed in the same
        round trip as the append's statements. See ``Database.append``."""
        return await self._observed(connection, expected, events, alone=True)

    async def _observed(
        self,
        tx: Connection,
        expected: es.ExpectedVersion,
        events: Sequence[es.Event],
        *,
        alone: bool,
    ) -> es.AppendResult:
        observers = self._config.observers
        if not observers:
            return await append(self, tx, expected, events, alone=alone)
        return await observed_append(
            observers,
            "mysql",
            expected,
            events,
            lambda events: append(self, tx, expected, events, alone=alone),
        )

    async def read_events(
        self, tx: Connection, from_position: int = 0, limit: int = 100
    ) -> list[es.PersistedEvent]:
        """Read events after ``from_position``, gap-safe. See ``EventStore.read_events``."""
        check_position("from_position", from_position)
        check_limit(limit)
        with translated(self._location):
            async with tx.cursor() as cursor:
                proven = await self._prove(cursor, tx)
                await cursor.execute(render(self._sql.read_events, [from_position, limit]))
                rows = await cursor.fetchall()
                if not rows:
                    return []
                count = self._holes.deliverable(
                    from_position, [row[0] for row in rows], lambda fence: fence <= proven
                )
                if self._holes.needs_fence():
                    fenced = await results(cursor, self._sql.fence)
                    fence: int = fenced[-1][0][0]
                    self._holes.set_fence(fence)
                    self._log.debug("fenced holes in the log", fence=fence)
        return [row_event(row) for row in rows[:count]]

    async def _prove(self, cursor: Cursor, tx: Connection) -> int:
        """Raise the proven mark if no registration below a pending fence is in flight.

        Returns the mark that holds for a snapshot taken after this call.
        """
        fences = sorted(fence for fence in self._holes.pending_fences() if fence > self._proven)
        if not fences:
            return self._proven
        mariadb = (await self.facts(cursor, tx)).mariadb
        if not await self._read_committed(cursor, mariadb):
            return 0
        lock = "LOCK IN SHARE MODE NOWAIT" if mariadb else "FOR SHARE NOWAIT"
        for target in (fences[-1], fences[0]) if len(fences) > 1 else (fences[0],):
            try:
                await cursor.execute(render(self._sql.proof + lock, [target]))
                await cursor.fetchall()
            except pymysql.err.OperationalError as err:
                if error_code(err) not in LOCK_ERRORS:
                    raise
                continue
            self._proven = max(self._proven, target)
            break
        return self._proven

    async def _read_committed(self, cursor: Cursor, mariadb: bool) -> bool:
        variable = "@@tx_isolation" if mariadb else "@@transaction_isolation"
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
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(self._sql.latest)
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
        key = [bounded_context, aggregate_type, aggregate_id, low, high]
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(render(self._sql.stream, key))
                rows = await cursor.fetchall()
        return es.Stream(
            bounded_context, aggregate_type, aggregate_id, [row_event(row) for row in rows]
        )

    async def get_checkpoint(self, tx: Connection, projection_name: str) -> int:
        """The last position ``projection_name`` processed, 0 when none."""
        check_projection_name(projection_name)
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(render(self._sql.get_checkpoint, [projection_name]))
                rows = await cursor.fetchall()
        return int(rows[0][0]) if rows else 0

    async def list_checkpoints(self, tx: Connection) -> list[CheckpointRow]:
        """Every checkpoint row, by name."""
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(self._sql.list_checkpoints)
                rows = await cursor.fetchall()
        return [
            CheckpointRow(name, int(position), None if micros is None else _timestamp(micros))
            for name, position, micros in rows
        ]

    async def event_types(self, tx: Connection) -> list[tuple[str, int]]:
        """Every distinct ``(event_type, event_version)`` pair stored, sorted."""
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(self._sql.event_types)
                rows = await cursor.fetchall()
        return [(row[0], int(row[1])) for row in rows]

    async def delete_checkpoints(self, tx: Connection, names: list[str]) -> int:
        """Delete the named checkpoint rows; how many there were."""
        if not names:
            return 0
        placeholders = ", ".join(["%s"] * len(names))
        with translated(self._location):
            async with tx.cursor() as cursor:
                return await cursor.execute(
                    render(f"{self._sql.delete_checkpoints}({placeholders})", names)
                )

    async def update_checkpoint(self, tx: Connection, projection_name: str, position: int) -> None:
        """Record that ``projection_name`` processed everything up to ``position``."""
        check_projection_name(projection_name)
        check_position("position", position)
        now = datetime.now(UTC).replace(tzinfo=None)
        args = [projection_name, position, now, position, now]
        with translated(self._location):
            async with tx.cursor() as cursor:
                await cursor.execute(render(self._sql.update_checkpoint, args))
