"""The workloads, and the registry that names them (``--only W1,W5``).

A workload key (``W1``) stands for one or more table rows (:class:`Workload`): W1 has one
row with a single writer and one with ``Sizes.writers`` writers, W2 one row per batch size.
A row knows how to prepare its data (read workloads, untimed) and how to build one round;
a round is a coroutine function that runs against any side (:class:`StoreSide`), so every
side runs exactly the same work. A side runs the workload keys its registry entry names
(:data:`bench.sides.SIDE_SPECS`).

W6 measures latency, not throughput: its rows are :class:`LatencyWorkload` entries, run
by :mod:`bench.latency` and printed in a table of their own.

Adding a workload: write a builder ``(Sizes) -> list[Workload]`` (or ``list[
LatencyWorkload]``) and register it in :data:`REGISTRY` under its key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from . import publish, snapshots
from .common import (
    AGGREGATE_TYPE,
    BOUNDED_CONTEXT,
    Side,
    Sizes,
    StoreSide,
    Target,
    make_events,
)
from .sides import runs

__all__ = [
    "REGISTRY",
    "LatencyWorkload",
    "Round",
    "RoundFn",
    "Workload",
    "WorkloadSpec",
    "implemented",
    "select",
    "select_comparisons",
    "select_latency",
]

#: A comparison of the library with itself (a table of its own): target, sizes, rounds and
#: a progress callback in, the table out.
Comparison = Callable[[Target, Sizes, int, Callable[[str], None]], Awaitable[str]]
#: One side's run of one round.
RoundFn = Callable[[StoreSide], Awaitable[None]]
#: The events one round appends or reads, and its runner.
Round = tuple[int, RoundFn]


@dataclass(frozen=True)
class Workload:
    """One table row.

    Attributes:
        key: The registry key it belongs to (``W1``).
        label: The row's name in the table (``W1 single-event appends, 8 writers``).
        appends: Whether it writes: tables are reset before each round and counted after.
        make_round: Builds one round's inputs (untimed) and its runner, given the sizes,
            a tag that makes the round's aggregate ids unique, and whether appends check
            ``Exact(n)`` (else ``Any()``).
        prepare: For read workloads, fills every side's tables with the same events
            (untimed, once, before the warm-up).
    """

    key: str
    label: str
    appends: bool
    make_round: Callable[[Sizes, str, bool], Round]
    prepare: Callable[[Target, Sizes], Awaitable[None]] | None = None


@dataclass(frozen=True)
class LatencyWorkload:
    """One row of the latency table (W6).

    Attributes:
        key: The registry key it belongs to (``W6``).
        label: The row's name in the table.
        cross_process: Whether the writer runs in a process of its own (``bench.writer``)
            rather than in the benchmark's process, beside the consumer.
    """

    key: str
    label: str
    cross_process: bool


@dataclass(frozen=True)
class WorkloadSpec:
    """A registry entry.

    Attributes:
        key: ``W1`` ... ``W6``.
        summary: What it measures.
        build: Its throughput rows for given sizes, if it has any.
        latency: Its latency rows for given sizes, if it has any.
        compare: A comparison it runs after the rows, if it has one.
    """

    key: str
    summary: str
    build: Callable[[Sizes], list[Workload]] | None = None
    latency: Callable[[Sizes], list[LatencyWorkload]] | None = None
    compare: Comparison | None = None


# --------------------------------------------------------------------------------------
# W1: single-event appends


def _w1(writers: int | None) -> Callable[[Sizes, str, bool], Round]:
    """W1 with one writer (``writers=1``) or ``Sizes.writers`` writers (``None``)."""

    def make_round(sizes: Sizes, tag: str, exact: bool) -> Round:
        if writers == 1:
            count, streams_count = sizes.w1_events_one, 1
        else:
            count, streams_count = sizes.w1_events_each, sizes.writers
        streams = [make_events(f"w1-{tag}-{writer}", count) for writer in range(streams_count)]

        async def run(side: StoreSide) -> None:
            await asyncio.gather(*(side.append_singles(s, exact) for s in streams))

        return streams_count * count, run

    return make_round


def build_w1(sizes: Sizes) -> list[Workload]:
    """W1 rows: one writer, and ``sizes.writers`` writers on distinct aggregates."""
    return [
        Workload("W1", "W1 single-event appends, 1 writer", True, _w1(1)),
        Workload("W1", f"W1 single-event appends, {sizes.writers} writers", True, _w1(None)),
    ]


# --------------------------------------------------------------------------------------
# W2: batch appends


def _w2(batch: int) -> Callable[[Sizes, str, bool], Round]:
    def make_round(sizes: Sizes, tag: str, exact: bool) -> Round:
        total = max(sizes.w2_events // batch, 1) * batch
        events = make_events(f"w2-{batch}-{tag}", total)
        batches = [events[i : i + batch] for i in range(0, total, batch)]

        async def run(side: StoreSide) -> None:
            await side.append_batches(batches, exact)

        return total, run

    return make_round


def build_w2(sizes: Sizes) -> list[Workload]:
    """W2 rows: one writer appending batches, one row per batch size."""
    return [
        Workload("W2", f"W2 appends of {batch} events, 1 writer", True, _w2(batch))
        for batch in sizes.w2_batches
    ]


# --------------------------------------------------------------------------------------
# W3: reading the log

_LOAD_BATCH = 100


async def _load(target: Target, key: str, aggregates: Sequence[tuple[str, int, int]]) -> int:
    """Reset the sides that run ``key``, then append the same events to each (untimed).

    Sides that share their tables (:attr:`bench.common.Target.tables`) are loaded once.

    Args:
        target: The database.
        key: The workload the data is for.
        aggregates: ``(aggregate_id, count, first_seq)`` per batch, in append order; an
            aggregate may appear in several batches (their versions continue).

    Returns:
        The number of events loaded into each side.
    """
    loaders: dict[tuple[str, ...], Side] = {}
    for side in target.sides:
        if runs(side, key):
            loaders.setdefault(tuple(target.tables[side]), side)
    sides = list(loaders.values())
    for side in sides:
        await target.reset(side)
    versions: dict[str, int] = {}
    total = 0
    for aggregate_id, count, first_seq in aggregates:
        batch = make_events(aggregate_id, count, first_seq)
        version = versions.get(aggregate_id, 0)
        for side in sides:
            await target.sides[side].append_batches([batch], exact=False, version=version)
        versions[aggregate_id] = version + count
        total += count
    for side in sides:
        if await target.count(side) != total:
            raise RuntimeError(f"the {side} side's log was not loaded completely")
    return total


async def _load_log(target: Target, key: str, total: int) -> None:
    """Load ``total`` events, ``_LOAD_BATCH`` per aggregate, into every side (untimed)."""
    batches = -(-total // _LOAD_BATCH)
    await _load(
        target,
        key.upper(),
        [
            (
                f"{key}-{index}",
                min(_LOAD_BATCH, total - index * _LOAD_BATCH),
                index * _LOAD_BATCH,
            )
            for index in range(batches)
        ],
    )


async def _w3_prepare(target: Target, sizes: Sizes) -> None:
    await _load_log(target, "w3", sizes.w3_events)


def _w3_round(sizes: Sizes, tag: str, exact: bool) -> Round:
    del tag, exact

    async def run(side: StoreSide) -> None:
        total = await side.read_all(sizes.w3_page)
        if total != sizes.w3_events:
            raise RuntimeError(f"W3 read {total} events, expected {sizes.w3_events}")

    return sizes.w3_events, run


def build_w3(sizes: Sizes) -> list[Workload]:
    """W3: one reader reading the whole prepared log in pages."""
    return [
        Workload(
            "W3",
            f"W3 read the log ({sizes.w3_events:,} events), pages of {sizes.w3_page}",
            False,
            _w3_round,
            _w3_prepare,
        )
    ]


# --------------------------------------------------------------------------------------
# W4: projection catch-up


async def _w4_prepare(target: Target, sizes: Sizes) -> None:
    await _load_log(target, "w4", sizes.w4_events)


def _w4(batch: int, upsert: bool) -> Callable[[Sizes, str, bool], Round]:
    def make_round(sizes: Sizes, tag: str, exact: bool) -> Round:
        del exact
        # A new checkpoint name per round: every round starts from position 0.
        name = f"w4_{'upsert' if upsert else 'noop'}_{batch}_{tag}"

        async def run(side: StoreSide) -> None:
            handled = await side.catch_up(name, batch, upsert)
            if handled != sizes.w4_events:
                raise RuntimeError(f"W4 handled {handled} events, expected {sizes.w4_events}")

        return sizes.w4_events, run

    return make_round


def build_w4(sizes: Sizes) -> list[Workload]:
    """W4 rows: catch-up over one prepared log, no-op and upsert handlers, per batch size.

    Only the first row loads the log; the rows run one after another and append nothing.
    """
    rows: list[Workload] = []
    for upsert in (False, True):
        for batch in sizes.w4_batches:
            handler = "upsert per event" if upsert else "no-op handler"
            rows.append(
                Workload(
                    "W4",
                    f"W4 catch-up ({sizes.w4_events:,} events), {handler}, batch {batch}",
                    False,
                    _w4(batch, upsert),
                    None if rows else _w4_prepare,
                )
            )
    return rows


# --------------------------------------------------------------------------------------
# W5: rehydrating one aggregate

W5_AGGREGATE = "w5-target"


async def _w5_prepare(target: Target, sizes: Sizes) -> None:
    # The aggregate's events are interleaved with as many events of other aggregates, so
    # its rows are spread over the table as when it grew among others.
    batches: list[tuple[str, int, int]] = []
    for index in range(-(-sizes.w5_events // _LOAD_BATCH)):
        count = min(_LOAD_BATCH, sizes.w5_events - index * _LOAD_BATCH)
        batches.append((W5_AGGREGATE, count, index * _LOAD_BATCH))
        batches.append((f"w5-other-{index}", _LOAD_BATCH, index * _LOAD_BATCH))
    await _load(target, "W5", batches)


def _w5_round(sizes: Sizes, tag: str, exact: bool) -> Round:
    del tag, exact

    async def run(side: StoreSide) -> None:
        for _ in range(sizes.w5_reads):
            count = await side.read_stream(BOUNDED_CONTEXT, AGGREGATE_TYPE, W5_AGGREGATE)
            if count != sizes.w5_events:
                raise RuntimeError(f"W5 read {count} events, expected {sizes.w5_events}")

    return sizes.w5_events * sizes.w5_reads, run


def build_w5(sizes: Sizes) -> list[Workload]:
    """W5: rehydrating one aggregate of ``sizes.w5_events`` events, in version order."""
    return [
        Workload(
            "W5",
            f"W5 rehydrate one aggregate of {sizes.w5_events:,} events",
            False,
            _w5_round,
            _w5_prepare,
        )
    ]


# --------------------------------------------------------------------------------------
# W6: append-to-handled latency


def build_w6(sizes: Sizes) -> list[LatencyWorkload]:
    """W6 rows: the writer in the consumer's process, and in a process of its own."""
    del sizes
    return [
        LatencyWorkload("W6", "W6 append->handled, writer in this process", False),
        LatencyWorkload("W6", "W6 append->handled, writer in another process", True),
    ]


# --------------------------------------------------------------------------------------
# The registry

#: Every workload key, in the order they run.
REGISTRY: dict[str, WorkloadSpec] = {
    spec.key: spec
    for spec in (
        WorkloadSpec("W1", "single-event appends, 1 and N concurrent writers", build_w1),
        WorkloadSpec("W2", "batch appends of 10, 100 and 1000 events, 1 writer", build_w2),
        WorkloadSpec("W3", "reading the whole log in pages", build_w3),
        WorkloadSpec(
            "W4", "projection catch-up (ONE_OFF processor), no-op and upsert handlers", build_w4
        ),
        WorkloadSpec(
            "W5",
            "rehydrating one aggregate with read_aggregate_stream, and through "
            "AggregateRepository with and without a snapshot",
            build_w5,
            compare=snapshots.compare_rehydration,
        ),
        WorkloadSpec(
            "W6",
            "append-commit to handler-called latency with a CONTINUOUS processor",
            latency=build_w6,
        ),
        WorkloadSpec(
            "PUBLISH",
            "the NATS JetStream publisher end to end against a raw nats-py loop, and "
            "append-to-reader latency (NATS at $PUPSOURCING_NATS_URL)",
            compare=publish.compare,
        ),
    )
}


def implemented() -> list[str]:
    """The keys of the workloads that can run."""
    return [
        key
        for key, spec in REGISTRY.items()
        if spec.build is not None or spec.latency is not None or spec.compare is not None
    ]


def _check(keys: Sequence[str]) -> set[str]:
    wanted = {key.upper() for key in keys}
    for key in sorted(wanted):
        spec = REGISTRY.get(key)
        if spec is None:
            raise ValueError(f"unknown workload {key}; known: {', '.join(REGISTRY)}")
        if spec.build is None and spec.latency is None and spec.compare is None:
            raise ValueError(f"{key} ({spec.summary}) cannot run yet")
    return wanted


def select(keys: Sequence[str], sizes: Sizes) -> list[Workload]:
    """The throughput rows of the workloads ``keys``, in registry order.

    Raises:
        ValueError: a key is unknown or cannot run.
    """
    wanted = _check(keys)
    rows: list[Workload] = []
    for key, spec in REGISTRY.items():
        if key in wanted and spec.build is not None:
            rows.extend(spec.build(sizes))
    return rows


def select_comparisons(keys: Sequence[str]) -> list[Comparison]:
    """The comparisons of the workloads ``keys``, in registry order.

    Raises:
        ValueError: a key is unknown or cannot run.
    """
    wanted = _check(keys)
    return [
        spec.compare for key, spec in REGISTRY.items() if key in wanted and spec.compare is not None
    ]


def select_latency(keys: Sequence[str], sizes: Sizes) -> list[LatencyWorkload]:
    """The latency rows of the workloads ``keys``, in registry order.

    Raises:
        ValueError: a key is unknown or cannot run.
    """
    wanted = _check(keys)
    rows: list[LatencyWorkload] = []
    for key, spec in REGISTRY.items():
        if key in wanted and spec.latency is not None:
            rows.extend(spec.latency(sizes))
    return rows
