"""What every database's benchmark shares: sizes, events, the sides' protocol and results.

Every side of a comparison (see :mod:`bench.sides`) implements :class:`StoreSide`, so a
workload is written once and runs unchanged on the library (:class:`LibrarySide`, the
same code on every database), on each database's hand-written driver code (the same-SQL
side in ``bench.postgres``, ``bench.sqlite``, ``bench.mysql``; the minimal baseline in
``bench.minimal_postgres``, ``bench.minimal_sqlite``, ``bench.minimal_mysql``) and on the
peer library (``bench.peer_eventsourcing``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

from pupsourcing_async import Database, StoreConfig, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

__all__ = [
    "AGGREGATE_TYPE",
    "BOUNDED_CONTEXT",
    "EVENT_TYPE",
    "FOLLOW_PAGE",
    "FULL",
    "METADATA",
    "PAYLOAD_SIZE",
    "QUICK",
    "RAW_POLL_INTERVAL",
    "SCHEMA_SIDES",
    "BenchProjection",
    "FollowingSide",
    "LibrarySide",
    "MinimalTables",
    "RawBatches",
    "RawConflictError",
    "ReadModel",
    "Seen",
    "Side",
    "Sizes",
    "StoreSide",
    "Target",
    "WorkloadResult",
    "cleanup",
    "expected_version",
    "make_events",
    "payload",
    "raw_catch_up",
    "raw_follow",
    "read_model_table",
    "side_configs",
]

#: A side's key in :data:`bench.sides.SIDE_SPECS` (``library``, ``raw``, ...).
Side: TypeAlias = str
#: The sides whose tables the library's own migration makes (:func:`side_configs`).
SCHEMA_SIDES: tuple[Side, Side] = ("library", "raw")

BOUNDED_CONTEXT = "Bench"
AGGREGATE_TYPE = "Account"
EVENT_TYPE = "MoneyDeposited"
METADATA = b'{"source":"store_bench","user_id":"u-42"}'
PAYLOAD_SIZE = 100


@dataclass(frozen=True)
class Sizes:
    """How much work one timed round does.

    Attributes:
        writers: Concurrent writers of the W1 multi-writer row; also the pool size (or
            number of SQLite connections) of every side on every database.
        w1_events_one: Events the single W1 writer appends, one per transaction.
        w1_events_each: Events each of the ``writers`` W1 writers appends.
        w2_batches: The W2 batch sizes, one table row each.
        w2_events: Events one W2 round appends (in batches of each size).
        w3_events: Events in the log that W3 reads.
        w3_page: Events per W3 read.
        w5_events: Events of the aggregate that W5 rehydrates.
        w5_reads: Rehydrations per W5 round.
        w4_events: Events in the log that W4's projections catch up on.
        w4_batches: The W4 batch sizes (each with a no-op and an upsert handler).
        w6_events: Events one W6 round appends, one per transaction, at ``w6_rate``.
        w6_rate: W6 appends per second.
        w6_warmup: Run an untimed W6 round per side first (``--quick`` skips it).
    """

    writers: int = 8
    w1_events_one: int = 1000
    w1_events_each: int = 500
    w2_batches: tuple[int, ...] = (10, 100, 1000)
    w2_events: int = 10_000
    w3_events: int = 20_000
    w3_page: int = 1000
    w5_events: int = 10_000
    w5_reads: int = 3
    w4_events: int = 20_000
    w4_batches: tuple[int, ...] = (100, 1000)
    w6_events: int = 300
    w6_rate: float = 100.0
    w6_warmup: bool = True

    def warmup(self) -> Sizes:
        """The sizes of the untimed warm-up round (read workloads read all their data)."""
        return Sizes(
            writers=self.writers,
            w1_events_one=min(self.w1_events_one, 20),
            w1_events_each=min(self.w1_events_each, 10),
            w2_batches=self.w2_batches,
            w2_events=min(self.w2_events, max(self.w2_batches)),
            w3_events=self.w3_events,
            w3_page=self.w3_page,
            w5_events=self.w5_events,
            w5_reads=1,
            w4_events=self.w4_events,
            w4_batches=self.w4_batches,
            w6_events=min(self.w6_events, 20),
            w6_rate=self.w6_rate,
            w6_warmup=self.w6_warmup,
        )


FULL = Sizes()
QUICK = Sizes(
    w1_events_one=10,
    w1_events_each=3,
    w2_events=200,
    w3_events=2000,
    w5_events=1000,
    w5_reads=1,
    w4_events=200,
    w6_events=5,
    w6_rate=500.0,
    w6_warmup=False,
)


# --------------------------------------------------------------------------------------
# Events


def payload(seq: int) -> bytes:
    """A JSON payload of about :data:`PAYLOAD_SIZE` bytes (exactly, for realistic ``seq``)."""
    body = {
        "account_id": f"acc-{seq % 1_000_000:06d}",
        "amount_cents": 100 + seq % 100_000,
        "currency": "EUR",
        "memo": "",
        "seq": seq,
    }
    pad = PAYLOAD_SIZE - len(json.dumps(body, separators=(",", ":")))
    body["memo"] = "deposit " + "x" * max(pad - 8, 0)
    return json.dumps(body, separators=(",", ":")).encode()


def make_events(aggregate_id: str, count: int, first_seq: int = 0) -> list[es.Event]:
    """``count`` events for one aggregate; every side appends these same objects."""
    return [
        es.Event(
            BOUNDED_CONTEXT,
            AGGREGATE_TYPE,
            aggregate_id,
            EVENT_TYPE,
            payload(first_seq + i),
            metadata=METADATA,
            correlation_id=f"corr-{aggregate_id}",
        )
        for i in range(count)
    ]


def expected_version(exact: bool, version: int) -> es.ExpectedVersion:
    """``Exact(version)`` when checking versions, else ``Any()``."""
    return es.Exact(version) if exact else es.Any()


def read_model_table(prefix: str, side: Side) -> str:
    """The name of ``side``'s W4 read-model table (one row per aggregate)."""
    return f"{prefix}{side[0]}_readmodel"


def side_configs(prefix: str) -> dict[Side, StoreConfig]:
    """The library-schema tables of the library and same-SQL sides, named ``prefix...``."""
    return {
        side: StoreConfig(
            events_table=f"{prefix}{side[0]}_events",
            aggregate_heads_table=f"{prefix}{side[0]}_heads",
            checkpoints_table=f"{prefix}{side[0]}_checkpoints",
        )
        for side in SCHEMA_SIDES
    }


async def cleanup(step: Awaitable[object], what: str) -> None:
    """Await a clean-up ``step``; if it fails, say on stderr that ``what`` was left behind.

    Clean-ups run on the way out of a failed run too, where their own error would hide
    the one that matters.
    """
    try:
        await step
    except Exception as err:
        print(f"warning: could not remove {what}: {err!r}", file=sys.stderr, flush=True)


class RawConflictError(RuntimeError):
    """A hand-written side's append conflicted: the head was not at the version its writer
    expected (same-SQL), or the version or event id was taken (minimal)."""


class MinimalTables:
    """The minimal baseline's table names, all starting with ``prefix``.

    Args:
        prefix: The run's table prefix.
    """

    def __init__(self, prefix: str) -> None:
        self.events = f"{prefix}m_events"
        self.checkpoints = f"{prefix}m_checkpoints"
        self.read_model = f"{prefix}m_readmodel"


#: Called with an event's aggregate id when a W6 consumer handles it.
Seen: TypeAlias = Callable[[str], None]

#: Seconds a hand-written W6 consumer sleeps when a read finds nothing (it never backs off).
RAW_POLL_INTERVAL = 0.01
#: Events one poll of the minimal W6 consumer reads.
FOLLOW_PAGE = 100


class ReadModel(Protocol):
    """W4's read model: one row per aggregate that counts its events.

    The library's handler and the same-SQL loop call the same :meth:`upsert`, with the
    same SQL (the minimal and eventsourcing sides run the same statement), so the
    handler's own work is identical on every side.
    """

    async def upsert(self, tx: Any, aggregate_id: str, position: int) -> None:
        """Count one more event of ``aggregate_id`` (at ``position``), in ``tx``."""


# --------------------------------------------------------------------------------------
# The sides


class StoreSide(Protocol):
    """The operations a workload times; every side implements them (W1 to W5).

    Every operation runs on its side's own tables and connections, with the side's own
    transactions.
    """

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """Append ``events`` (one aggregate) one at a time, each durable before the next.

        Args:
            events: The events, all of one aggregate that starts empty.
            exact: Check ``Exact(version)`` rather than append with ``Any()`` (sides that
                know the version another way may ignore it).
        """

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """Append each batch (all of one aggregate) atomically, in order.

        Args:
            batches: The batches, all of one aggregate.
            exact: Check ``Exact(version)`` rather than append with ``Any()``.
            version: The aggregate's version before the first batch (0: it is empty).
        """

    async def read_all(self, page: int) -> int:
        """Read the whole log in position order, ``page`` events per read.

        Returns:
            How many events were read.
        """

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """Read one aggregate's events in version order.

        Returns:
            How many events were read.
        """

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """Run projection ``projection_name`` over the whole log, from its checkpoint.

        Each side does what its kind of code does for a projection (see its module);
        it returns once a read finds nothing.

        Args:
            projection_name: The checkpoint row (a new name starts from position 0).
            batch: Events per batch.
            upsert: Handle each event with a read-model upsert; else do nothing.

        Returns:
            How many events were handled.
        """


@runtime_checkable
class FollowingSide(StoreSide, Protocol):
    """A side that also runs W6: a consumer that follows the log as it grows."""

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """Consume the log as it grows, calling ``seen(aggregate_id)`` per event handled.

        Runs until cancelled.
        """


class BenchProjection:
    """The library side's projection for W4 and W6.

    Args:
        name: The checkpoint row.
        read_model: Upsert its row for each event (W4's upsert handler); nothing if None.
        seen: Called with each event's aggregate id as it is handled (W6).
    """

    def __init__(
        self, name: str, read_model: ReadModel | None = None, seen: Seen | None = None
    ) -> None:
        self.name = name
        self.handled = 0
        self._read_model = read_model
        self._seen = seen

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        """Upsert the read-model row and note the event, as configured."""
        if self._read_model is not None:
            await self._read_model.upsert(tx, event.aggregate_id, event.global_position)
        if self._seen is not None:
            self._seen(event.aggregate_id)
        self.handled += 1


class LibrarySide:
    """The library's side: ``db.transaction()`` and ``db.store``, the same on every database.

    Args:
        db: The library's database, on this side's tables.
        read_model: The library side's read model, for W4's upsert handler.
    """

    def __init__(self, db: Database, read_model: ReadModel) -> None:
        self.db = db
        self.read_model = read_model

    async def append_singles(self, events: Sequence[es.Event], exact: bool) -> None:
        """See :meth:`StoreSide.append_singles`."""
        db = self.db
        version = 0
        for event in events:
            async with db.transaction() as tx:
                result = await db.store.append(tx, expected_version(exact, version), [event])
            version = result.to_version

    async def append_batches(
        self, batches: Sequence[Sequence[es.Event]], exact: bool, version: int = 0
    ) -> None:
        """See :meth:`StoreSide.append_batches`."""
        db = self.db
        for batch in batches:
            async with db.transaction() as tx:
                result = await db.store.append(tx, expected_version(exact, version), batch)
            version = result.to_version

    async def read_all(self, page: int) -> int:
        """See :meth:`StoreSide.read_all`; ``read_events`` returns ``PersistedEvent`` objects."""
        db = self.db
        position = 0
        total = 0
        while True:
            async with db.transaction() as tx:
                events = await db.store.read_events(tx, position, page)
            if not events:
                return total
            position = events[-1].global_position
            total += len(events)

    async def read_stream(
        self, bounded_context: str, aggregate_type: str, aggregate_id: str
    ) -> int:
        """See :meth:`StoreSide.read_stream`; uses ``read_aggregate_stream``."""
        db = self.db
        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(
                tx, bounded_context, aggregate_type, aggregate_id
            )
        return len(stream)

    async def catch_up(self, projection_name: str, batch: int, upsert: bool) -> int:
        """See :meth:`StoreSide.catch_up`: a ``RunMode.ONE_OFF`` processor, each batch one
        transaction (checkpoint read, events read, handler, checkpoint write)."""
        projection = BenchProjection(projection_name, self.read_model if upsert else None)
        config = ProcessorConfig(batch_size=batch, run_mode=RunMode.ONE_OFF)
        await self.db.processor(config).run(projection)
        return projection.handled

    async def follow(self, projection_name: str, seen: Seen) -> None:
        """See :meth:`FollowingSide.follow`: a ``CONTINUOUS`` processor, default settings."""
        await self.db.processor(ProcessorConfig()).run(BenchProjection(projection_name, seen=seen))


class RawBatches(Protocol):
    """What a same-SQL side provides so that :func:`raw_catch_up` and :func:`raw_follow` can
    run its projection batches."""

    def connection(self) -> AbstractAsyncContextManager[Any]:
        """A connection of the same-SQL side's own, held for a whole catch-up or follow."""

    async def projection_batch(
        self, conn: Any, name: str, batch: int, upsert: bool, seen: Seen | None
    ) -> int:
        """One transaction: read checkpoint ``name``, read up to ``batch`` events after it,
        handle each (upsert its read-model row, call ``seen``), write the checkpoint.

        Returns:
            How many events it read (0: nothing after the checkpoint, nothing written).
        """


async def raw_catch_up(raw: RawBatches, name: str, batch: int, upsert: bool) -> int:
    """:meth:`StoreSide.catch_up` for a same-SQL side: batches until one reads nothing."""
    total = 0
    async with raw.connection() as conn:
        while count := await raw.projection_batch(conn, name, batch, upsert, None):
            total += count
    return total


async def raw_follow(raw: RawBatches, name: str, seen: Seen) -> None:
    """:meth:`FollowingSide.follow` for a same-SQL side: poll every :data:`RAW_POLL_INTERVAL`.

    Batches of 100 events with a no-op handler; no back-off and no wake-ups.
    """
    async with raw.connection() as conn:
        while True:
            if not await raw.projection_batch(conn, name, 100, False, seen):
                await asyncio.sleep(RAW_POLL_INTERVAL)


class Target(Protocol):
    """One database, opened for a run: each side on its own tables, and an admin link.

    Attributes:
        name: The database's name for the report (``PostgreSQL``, ``SQLite``, ``MariaDB``).
        url: The database's URL, for ``pupsourcing_async.connect`` in another process.
        facts: Lines about the server and its settings, for the report.
        notes: Lines about sides that could not be opened here, and why.
        sides: The sides opened, by key, in registry order.
        tables: Each side's tables, its events table first; sides that share their
            tables (the library's, say) share the sequence's contents.
        configs: The library-schema tables of the library and same-SQL sides.
    """

    name: str
    url: str
    facts: list[str]
    notes: list[str]
    sides: Mapping[Side, StoreSide]
    tables: Mapping[Side, Sequence[str]]
    configs: Mapping[Side, StoreConfig]

    async def reset(self, side: Side) -> None:
        """Empty ``side``'s tables (restarting positions) so that each round starts alike."""

    async def count(self, side: Side) -> int:
        """How many events ``side``'s events table holds."""


@dataclass
class WorkloadResult:
    """The measurements of one table row.

    Attributes:
        label: The workload's key and what it does.
        events_per_round: Events appended or read in one timed round.
        rates: Events/s of every timed round, per side that ran it, in the order they ran.
    """

    label: str
    events_per_round: int = 0
    rates: dict[Side, list[float]] = field(default_factory=dict)

    def median(self, side: Side) -> float | None:
        """The median events/s of ``side``; ``None`` if it did not run this row."""
        rates = self.rates.get(side)
        return statistics.median(rates) if rates else None

    def ratio(self, numerator: Side, denominator: Side) -> float | None:
        """Median events/s of one side over another's; ``None`` unless both ran."""
        top, bottom = self.median(numerator), self.median(denominator)
        return None if top is None or bottom is None else top / bottom
