"""W5 with snapshots: rehydrating one aggregate through ``AggregateRepository``, from its
events alone and from a snapshot.

This compares the library with itself, so it prints a table of its own after the
database's main table (it runs when W5 is selected, ``--quick`` included). On the library
side's tables, untimed, it appends ``Sizes.w5_events`` events to each of two aggregates
and has the repository snapshot them: one at its head, one 99 events behind it (the most
that ``snapshot_every=100`` leaves to replay). Then, after a warm-up of each, every round
loads each aggregate ``Sizes.w5_reads`` times per mode, each load in a transaction of its
own as an application would: every event replayed (``use_snapshot=False``), and from the
snapshot. A load decodes each event into a dataclass and applies it, so these numbers
include the event mapping's work that W5's raw stream reads leave out. The ratio is the
median full replay over the median load from the snapshot at the head; the target is
10x or more at 10,000 events. Every mode must rebuild the same state, or the run fails.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from pupsourcing_async import Database, es
from pupsourcing_async.eventmap import AggregateRepository, EventRegistry, SnapshotAggregate

from .common import (
    AGGREGATE_TYPE,
    BOUNDED_CONTEXT,
    EVENT_TYPE,
    LibrarySide,
    Sizes,
    Target,
    make_events,
)

__all__ = [
    "TAIL",
    "TARGET_EVENTS",
    "TARGET_RATIO",
    "BenchAccount",
    "compare_rehydration",
    "format_rehydration",
]

#: Events after the second aggregate's snapshot.
TAIL = 99
#: Loading from a snapshot at the head should be this many times faster ...
TARGET_RATIO = 10
#: ... than replaying an aggregate of this many events.
TARGET_EVENTS = 10_000
_LOAD_BATCH = 100


@dataclass(frozen=True, slots=True)
class MoneyDeposited:
    """The benchmark's event, as ``bench.common.payload`` writes it."""

    account_id: str
    amount_cents: int
    currency: str
    memo: str
    seq: int


REGISTRY = EventRegistry()
REGISTRY.register(MoneyDeposited, event_type=EVENT_TYPE)


@dataclass(frozen=True, slots=True)
class AccountState:
    """What a :class:`BenchAccount` snapshot holds."""

    balance_cents: int
    deposits: int
    last_seq: int


class BenchAccount(SnapshotAggregate[AccountState]):
    """An account that sums its deposits."""

    bounded_context = BOUNDED_CONTEXT
    aggregate_type = AGGREGATE_TYPE

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance_cents = 0
        self.deposits = 0
        self.last_seq = -1

    def apply_money_deposited(self, event: MoneyDeposited) -> None:
        """Count one deposit."""
        self.balance_cents += event.amount_cents
        self.deposits += 1
        self.last_seq = event.seq

    def snapshot_state(self) -> AccountState:
        """See :meth:`SnapshotAggregate.snapshot_state`."""
        return AccountState(self.balance_cents, self.deposits, self.last_seq)

    def restore_snapshot(self, state: AccountState) -> None:
        """See :meth:`SnapshotAggregate.restore_snapshot`."""
        self.balance_cents = state.balance_cents
        self.deposits = state.deposits
        self.last_seq = state.last_seq


@dataclass
class Mode:
    """One way of loading, and the milliseconds per load of each timed round."""

    label: str
    aggregate_id: str
    snapshot_at: int
    ms_per_load: list[float]

    @property
    def use_snapshot(self) -> bool:
        """Whether the load starts from a snapshot."""
        return self.snapshot_at > 0

    @property
    def median(self) -> float:
        """The median milliseconds per load."""
        return statistics.median(self.ms_per_load)


async def _append(db: Database, aggregate_id: str, count: int, first_seq: int) -> None:
    events = make_events(aggregate_id, count, first_seq)
    for start in range(0, count, _LOAD_BATCH):
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), events[start : start + _LOAD_BATCH])


async def _grow(db: Database, aggregate_id: str, total: int, behind: int) -> None:
    """``total`` events for ``aggregate_id``, with a snapshot ``behind`` events before the
    last, taken by the repository's own save."""
    writer = AggregateRepository(db.store, REGISTRY, BenchAccount, snapshot_every=1)
    await _append(db, aggregate_id, total - behind - 1, 0)
    async with db.transaction() as tx:
        account = await writer.load(tx, aggregate_id, use_snapshot=False)
        account.record(MoneyDeposited("acc-snapshot", 100, "EUR", "", total - behind - 1))
        await writer.save(tx, account)
    await _append(db, aggregate_id, behind, total - behind)


async def _load_many(
    repository: AggregateRepository[BenchAccount], db: Database, mode: Mode, reads: int
) -> tuple[float, BenchAccount]:
    gc.collect()
    started = time.perf_counter()
    for _ in range(reads):
        async with db.transaction() as tx:
            account = await repository.load(tx, mode.aggregate_id, use_snapshot=mode.use_snapshot)
    return (time.perf_counter() - started) * 1000 / reads, account


async def compare_rehydration(
    target: Target, sizes: Sizes, rounds: int, progress: Callable[[str], None]
) -> str:
    """Load an aggregate of ``sizes.w5_events`` events with and without a snapshot.

    Returns:
        The table, for the report.

    Raises:
        RuntimeError: a mode rebuilt another state than a full replay.
    """
    side = target.sides["library"]
    if not isinstance(side, LibrarySide):
        raise TypeError(f"the library side is a {type(side).__name__}, not a LibrarySide")
    db = side.db
    total = sizes.w5_events
    label = f"W5 rehydrate one aggregate of {total:,} events through AggregateRepository"
    progress(f"{target.name}: {label}, with and without a snapshot ...")
    await _grow(db, "w5-snapshot-head", total, 0)
    await _grow(db, "w5-snapshot-tail", total, TAIL)
    modes = [
        Mode("every event replayed (use_snapshot=False)", "w5-snapshot-head", 0, []),
        Mode("from a snapshot at the head", "w5-snapshot-head", total, []),
        Mode(
            f"from a snapshot {TAIL} events behind the head", "w5-snapshot-tail", total - TAIL, []
        ),
    ]
    repository = AggregateRepository(db.store, REGISTRY, BenchAccount)
    expected = None
    for mode in modes:  # the warm-up, which also checks every mode's result
        _, account = await _load_many(repository, db, mode, 1)
        state = (account.version, account.deposits, account.last_seq)
        if expected is None:
            expected = state
        if state != expected or account.version != total:
            raise RuntimeError(f"{mode.label} rebuilt {state}, expected {expected}")
        if account.snapshot_version != mode.snapshot_at:
            raise RuntimeError(f"{mode.label} did not start from its snapshot")
    for _ in range(rounds):
        for mode in modes:
            elapsed, _ = await _load_many(repository, db, mode, sizes.w5_reads)
            mode.ms_per_load.append(elapsed)
    return format_rehydration(f"{label} ({target.name})", modes, total)


def format_rehydration(title: str, modes: list[Mode], total: int) -> str:
    """The table: each mode's median ms per load and loads/s, and its speed-up."""
    full = modes[0].median
    header = ("mode", "ms/load", "loads/s", "vs full replay")
    rows = [
        (m.label, f"{m.median:,.2f}", f"{1000 / m.median:,.1f}", f"{full / m.median:,.1f}x")
        for m in modes
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [title]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  " + "  ".join(cells))
    ratio = full / modes[1].median
    worst = full / modes[-1].median
    if total >= TARGET_EVENTS:
        verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    else:
        verdict = f"the target is for {TARGET_EVENTS:,} events"
    lines.append(
        f"  with a snapshot at the head: {ratio:,.1f}x faster than replaying every event "
        f"(target: {TARGET_RATIO}x or more at {TARGET_EVENTS:,} events: {verdict}); "
        f"{worst:,.1f}x with {TAIL} events after the snapshot"
    )
    lines.append("  the medians are of these rounds (ms per load, in order):")
    for m in modes:
        lines.append(f"    {m.label}: " + " ".join(f"{value:,.2f}" for value in m.ms_per_load))
    return "\n".join(lines)
