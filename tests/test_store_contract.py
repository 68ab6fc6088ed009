"""The EventStore contract, written once and run on every backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from pupsourcing_async import (
    Database,
    DuplicateEventError,
    InvalidEventError,
    NoEventsError,
    OptimisticConcurrencyError,
    es,
)

from .conftest import RawSQL, make_event, read_whole_log


async def append(
    db: Database, expected: es.ExpectedVersion, events: list[es.Event]
) -> es.AppendResult:
    async with db.transaction() as tx:
        return await db.store.append(tx, expected, events)


async def stream(db: Database, aggregate_id: str = "acc-1", **bounds: int) -> es.Stream:
    async with db.transaction() as tx:
        return await db.store.read_aggregate_stream(
            tx, "Banking", "Account", aggregate_id, **bounds
        )


async def read_all(db: Database, limit: int = 1000) -> list[es.PersistedEvent]:
    async with db.transaction() as tx:
        return await db.store.read_events(tx, 0, limit)


async def count_rows(db: Database, raw: RawSQL, table: str) -> int:
    async with db.transaction() as tx:
        rows = await raw.fetch(tx, f"SELECT COUNT(*) FROM {table}")
    return int(rows[0][0])


# --- appending and expected versions ---------------------------------------------------


async def test_append_assigns_versions_and_positions(db: Database) -> None:
    events = [make_event(event_type=f"E{i}") for i in range(3)]
    result = await append(db, es.NoStream(), events)
    assert [e.aggregate_version for e in result.events] == [1, 2, 3]
    assert result.from_version == 0
    assert result.to_version == 3
    assert result.global_positions == sorted(result.global_positions)
    assert len(set(result.global_positions)) == 3
    assert [e.global_position for e in result.events] == result.global_positions
    assert [e.event_id for e in result.events] == [e.event_id for e in events]
    assert [e.event_type for e in result.events] == ["E0", "E1", "E2"]

    more = await append(db, es.Exact(3), [make_event(), make_event()])
    assert (more.from_version, more.to_version) == (3, 5)
    assert min(more.global_positions) > max(result.global_positions)


async def test_no_stream_on_existing_aggregate_conflicts(db: Database) -> None:
    await append(db, es.NoStream(), [make_event(), make_event()])
    with pytest.raises(OptimisticConcurrencyError) as caught:
        await append(db, es.NoStream(), [make_event()])
    assert caught.type is OptimisticConcurrencyError
    assert caught.value.expected == es.NoStream()
    assert caught.value.actual == 2
    assert caught.value.aggregate_id == "acc-1"
    assert "acc-1" in str(caught.value)
    assert len(await stream(db)) == 2


async def test_exact_version_rules(db: Database) -> None:
    with pytest.raises(OptimisticConcurrencyError) as missing:
        await append(db, es.Exact(1), [make_event()])
    assert missing.value.actual == 0
    assert (await stream(db)).is_empty

    await append(db, es.Exact(0), [make_event()])  # Exact(0) is NoStream
    with pytest.raises(OptimisticConcurrencyError):
        await append(db, es.Exact(0), [make_event()])

    await append(db, es.Exact(1), [make_event()])
    for wrong in (0, 1, 3, 100):
        with pytest.raises(OptimisticConcurrencyError) as caught:
            await append(db, es.Exact(wrong), [make_event()])
        assert caught.value.expected == es.Exact(wrong)
        assert caught.value.actual == 2
    result = await append(db, es.Exact(2), [make_event()])
    assert result.to_version == 3
    assert (await stream(db)).version == 3


async def test_any_appends_to_new_and_existing_aggregates(db: Database) -> None:
    first = await append(db, es.Any(), [make_event()])
    assert first.to_version == 1
    second = await append(db, es.Any(), [make_event(), make_event()])
    assert (second.from_version, second.to_version) == (1, 3)


async def test_aggregates_are_keyed_by_context_type_and_id(db: Database) -> None:
    await append(db, es.NoStream(), [make_event("x")])
    await append(db, es.NoStream(), [make_event("x", aggregate_type="Loan")])
    await append(db, es.NoStream(), [make_event("x", bounded_context="Lending")])
    await append(db, es.NoStream(), [make_event("y")])
    assert len(await stream(db, "x")) == 1
    assert len(await read_all(db)) == 4


async def test_conflict_writes_nothing_and_the_transaction_can_still_commit(
    db: Database, raw: RawSQL
) -> None:
    await append(db, es.NoStream(), [make_event()])
    config = db.store.config
    async with db.transaction() as tx:
        with pytest.raises(OptimisticConcurrencyError):
            await db.store.append(tx, es.Exact(5), [make_event(), make_event()])
        await db.store.update_checkpoint(tx, "still-usable", 7)
    assert await count_rows(db, raw, config.events_table) == 1
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "still-usable") == 7
        heads = await raw.fetch(tx, f"SELECT aggregate_version FROM {config.aggregate_heads_table}")
    assert heads == [(1,)]
    assert (await append(db, es.Exact(1), [make_event()])).to_version == 2


async def test_conflict_rolled_back_by_the_transaction_writes_nothing(
    db: Database, raw: RawSQL
) -> None:
    await append(db, es.NoStream(), [make_event("other")])
    with pytest.raises(OptimisticConcurrencyError):
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event("acc-1")])
            await db.store.append(tx, es.NoStream(), [make_event("other")])
    assert await count_rows(db, raw, db.store.config.events_table) == 1
    assert (await stream(db, "acc-1")).is_empty


async def test_duplicate_event_id_is_rejected(db: Database, raw: RawSQL) -> None:
    event_id = uuid.uuid4()
    await append(db, es.NoStream(), [make_event("a", event_id=event_id)])
    for expected in (es.Any(), es.NoStream()):
        with pytest.raises(DuplicateEventError) as caught:
            await append(db, expected, [make_event("b"), make_event("b", event_id=event_id)])
        assert caught.value.event_id == event_id
        assert isinstance(caught.value, OptimisticConcurrencyError)
        assert str(event_id) in str(caught.value)
    with pytest.raises(DuplicateEventError):
        # The id is stored with another payload: not a retry of the same append.
        await append(
            db, es.Exact(1), [make_event("a", payload=b'{"amount": 99}', event_id=event_id)]
        )
    assert await count_rows(db, raw, db.store.config.events_table) == 1
    assert (await stream(db, "b")).is_empty
    # The failed appends left no head behind: "b" is still a new aggregate.
    assert (await append(db, es.NoStream(), [make_event("b")])).to_version == 1


async def test_duplicate_event_id_caught_inside_a_transaction_keeps_other_work(
    db: Database, raw: RawSQL
) -> None:
    event_id = uuid.uuid4()
    await append(db, es.NoStream(), [make_event("a", event_id=event_id)])
    async with db.transaction() as tx:
        with pytest.raises(DuplicateEventError):
            await db.store.append(
                tx, es.Any(), [make_event("a", event_type="Other", event_id=event_id)]
            )
        await db.store.append(tx, es.Any(), [make_event("a")])
    assert [e.aggregate_version for e in await stream(db, "a")] == [1, 2]


async def test_repeated_event_id_within_one_append_is_invalid(db: Database) -> None:
    event_id = uuid.uuid4()
    with pytest.raises(InvalidEventError) as caught:
        await append(db, es.NoStream(), [make_event(event_id=event_id)] * 2)
    assert (caught.value.index, caught.value.field) == (1, "event_id")


# --- reading ---------------------------------------------------------------------------


async def test_events_round_trip_every_field(db: Database) -> None:
    created = datetime(2024, 1, 15, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    payload = bytes(range(256))
    event = es.Event(
        "Banking",
        "Account",
        "acc-ünïcode-✓",
        "MoneyDeposited",
        payload,
        event_version=3,
        metadata=b'{"user": "al\xc3\xafce", "tags": [1, 2.5, null], "nested": {"ok": true}}',
        trace_id="trace-1",
        correlation_id="corr-1",
        causation_id="cause-1",
        created_at=created,
    )
    result = await append(db, es.NoStream(), [event])
    read = (await read_all(db))[0]
    for got in (read, (await stream(db, "acc-ünïcode-✓")).events[0], result.events[0]):
        assert got.event_id == event.event_id
        assert got.payload == payload
        assert got.event_version == 3
        assert got.trace_id == "trace-1"
        assert got.correlation_id == "corr-1"
        assert got.causation_id == "cause-1"
        assert got.created_at == created
        assert got.created_at.utcoffset() is not None
        assert got.metadata is not None
        assert json.loads(got.metadata) == json.loads(event.metadata or b"")
        assert got.aggregate_version == 1
        assert got.global_position == result.global_positions[0]
    assert read.event_id == result.events[0].event_id
    assert isinstance(read.event_id, uuid.UUID)


async def test_optional_fields_read_back_as_none(db: Database) -> None:
    await append(db, es.NoStream(), [make_event()])
    read = (await read_all(db))[0]
    assert read.metadata is None
    assert read.trace_id is read.correlation_id is read.causation_id is None
    assert read.payload == b'{"amount": 10}'


async def test_read_events_pages_through_the_global_log(db: Database) -> None:
    written: list[int] = []
    for index in range(25):
        result = await append(db, es.Any(), [make_event(f"acc-{index % 4}")])
        written += result.global_positions
    seen: list[es.PersistedEvent] = []
    checkpoint = 0
    while True:
        async with db.transaction() as tx:
            page = await db.store.read_events(tx, checkpoint, 10)
        if not page:
            break
        assert len(page) <= 10
        seen += page
        checkpoint = page[-1].global_position
    assert [e.global_position for e in seen] == written
    async with db.transaction() as tx:
        assert await db.store.read_events(tx, written[-1], 10) == []
        assert [e.global_position for e in await db.store.read_events(tx, written[4], 3)] == (
            written[5:8]
        )
        assert await db.store.latest_global_position(tx) == written[-1]


async def test_read_events_keeps_each_aggregates_versions_in_order(db: Database) -> None:
    for _ in range(5):
        for aggregate in ("a", "b", "c"):
            await append(db, es.Any(), [make_event(aggregate), make_event(aggregate)])
    last: dict[str, int] = {}
    for event in await read_all(db):
        assert event.aggregate_version == last.get(event.aggregate_id, 0) + 1
        last[event.aggregate_id] = event.aggregate_version
    assert last == {"a": 10, "b": 10, "c": 10}


async def test_large_batch_gets_ascending_positions_in_version_order(db: Database) -> None:
    events = [make_event(event_type=f"E{i}") for i in range(1500)]
    result = await append(db, es.NoStream(), events)
    assert [e.aggregate_version for e in result.events] == list(range(1, 1501))
    assert result.global_positions == sorted(result.global_positions)
    assert [e.event_type for e in result.events] == [e.event_type for e in events]
    read = await read_all(db, limit=2000)
    assert [e.event_type for e in read] == [e.event_type for e in events]
    assert [e.aggregate_version for e in read] == list(range(1, 1501))


async def test_latest_global_position_is_zero_when_empty(db: Database) -> None:
    async with db.transaction() as tx:
        assert await db.store.latest_global_position(tx) == 0
        assert await db.store.read_events(tx) == []


async def test_stream_version_ranges(db: Database) -> None:
    await append(db, es.NoStream(), [make_event(event_type=f"E{i}") for i in range(1, 6)])
    whole = await stream(db)
    assert [e.aggregate_version for e in whole] == [1, 2, 3, 4, 5]
    assert whole.version == 5
    assert len(whole) == 5
    assert not whole.is_empty
    assert (whole.bounded_context, whole.aggregate_type, whole.aggregate_id) == (
        "Banking",
        "Account",
        "acc-1",
    )

    def versions(s: es.Stream) -> list[int]:
        return [e.aggregate_version for e in s]

    assert versions(await stream(db, from_version=3)) == [3, 4, 5]
    assert versions(await stream(db, to_version=2)) == [1, 2]
    assert versions(await stream(db, from_version=2, to_version=4)) == [2, 3, 4]
    assert versions(await stream(db, from_version=4, to_version=4)) == [4]
    assert versions(await stream(db, from_version=6)) == []
    partial = await stream(db, from_version=2, to_version=3)
    assert partial.version == 3
    empty = await stream(db, "nobody")
    assert empty.is_empty
    assert empty.version == 0
    assert len(empty) == 0


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"from_version": 3, "to_version": 2}, "from_version"),
        ({"from_version": -1}, "from_version"),
        ({"to_version": -5}, "to_version"),
    ],
)
async def test_stream_rejects_bad_ranges(
    db: Database, bounds: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await stream(db, "acc-1", **bounds)


async def test_read_rejects_bad_arguments(db: Database) -> None:
    async with db.transaction() as tx:
        with pytest.raises(ValueError, match="limit"):
            await db.store.read_events(tx, 0, 0)
        with pytest.raises(ValueError, match="from_position"):
            await db.store.read_events(tx, -1, 10)
        with pytest.raises(ValueError, match="aggregate_id"):
            await db.store.read_aggregate_stream(tx, "Banking", "Account", "")


# --- checkpoints -----------------------------------------------------------------------


async def test_checkpoints(db: Database) -> None:
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "balances") == 0
        await db.store.update_checkpoint(tx, "balances", 42)
        await db.store.update_checkpoint(tx, "balances_p1", 7)
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "balances") == 42
        assert await db.store.get_checkpoint(tx, "balances_p1") == 7
        await db.store.update_checkpoint(tx, "balances", 50)
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "balances") == 50
        await db.store.update_checkpoint(tx, "balances", 0)
        assert await db.store.get_checkpoint(tx, "balances") == 0


async def test_checkpoint_update_is_rolled_back_with_its_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await db.store.update_checkpoint(tx, "balances", 9)
            raise RuntimeError("handler failed")
    async with db.transaction() as tx:
        assert await db.store.get_checkpoint(tx, "balances") == 0


async def test_checkpoint_rejects_bad_arguments(db: Database) -> None:
    async with db.transaction() as tx:
        with pytest.raises(ValueError, match="projection_name"):
            await db.store.get_checkpoint(tx, "")
        with pytest.raises(ValueError, match="position"):
            await db.store.update_checkpoint(tx, "balances", -1)
        with pytest.raises(ValueError, match="projection_name"):
            await db.store.update_checkpoint(tx, "x" * 256, 1)


# --- transactions ----------------------------------------------------------------------


async def test_rollback_on_error_discards_the_append(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event()])
            assert len(await db.store.read_events(tx)) == 1
            raise RuntimeError("boom")
    assert await read_all(db) == []
    assert (await append(db, es.NoStream(), [make_event()])).to_version == 1


async def test_rollback_on_cancellation_discards_the_append(db: Database) -> None:
    appended = asyncio.Event()

    async def writer() -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event()])
            appended.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(writer())
    await asyncio.wait_for(appended.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await read_all(db) == []
    assert (await append(db, es.NoStream(), [make_event()])).to_version == 1


async def test_several_appends_in_one_transaction_commit_together(db: Database) -> None:
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [make_event("a")])
        await db.store.append(tx, es.NoStream(), [make_event("b")])
        await db.store.append(tx, es.Exact(1), [make_event("a")])
    assert [(e.aggregate_id, e.aggregate_version) for e in await read_all(db)] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
    ]


# --- concurrency -----------------------------------------------------------------------


async def test_ten_writers_racing_for_one_aggregate_one_wins_each_version(db: Database) -> None:
    writers = 10
    for version in range(4):
        start = asyncio.Event()

        async def attempt(writer: int, expected: int = version, go: asyncio.Event = start) -> bool:
            await go.wait()
            try:
                async with db.transaction() as tx:
                    await db.store.append(
                        tx, es.Exact(expected), [make_event(event_type=f"W{writer}")]
                    )
            except OptimisticConcurrencyError as err:
                assert err.expected == es.Exact(expected)
                return False
            return True

        tasks = [asyncio.create_task(attempt(w)) for w in range(writers)]
        await asyncio.sleep(0.05)
        start.set()
        outcomes = await asyncio.gather(*tasks)
        assert sum(outcomes) == 1, f"version {version + 1}: {sum(outcomes)} winners"
    result = await stream(db)
    assert [e.aggregate_version for e in result] == [1, 2, 3, 4]


async def test_concurrent_any_appends_all_succeed_with_distinct_versions(db: Database) -> None:
    start = asyncio.Event()

    async def attempt(writer: int) -> es.AppendResult:
        await start.wait()
        async with db.transaction() as tx:
            return await db.store.append(tx, es.Any(), [make_event(), make_event()])

    tasks = [asyncio.create_task(attempt(w)) for w in range(10)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    versions = sorted(v for r in results for v in (r.from_version + 1, r.to_version))
    assert versions == list(range(1, 21))
    assert [e.aggregate_version for e in await stream(db)] == list(range(1, 21))


# --- validation ------------------------------------------------------------------------


NAIVE = datetime(2024, 1, 1)


@pytest.mark.parametrize(
    ("index", "field", "bad"),
    [
        (0, "bounded_context", {"bounded_context": ""}),
        (0, "aggregate_type", {"aggregate_type": ""}),
        (1, "aggregate_id", {"aggregate_id": ""}),
        (0, "event_type", {"event_type": ""}),
        (0, "event_type", {"event_type": "x" * 256}),
        (0, "event_type", {"event_type": "bad\x00"}),
        (1, "payload", {"payload": "not bytes"}),
        (0, "event_id", {"event_id": "not-a-uuid"}),
        (0, "event_version", {"event_version": 0}),
        (0, "event_version", {"event_version": 2**31}),
        (0, "event_version", {"event_version": True}),
        (1, "metadata", {"metadata": b"{not json"}),
        (0, "metadata", {"metadata": "{}"}),
        (0, "metadata", {"metadata": b"\xff\xfe"}),
        (0, "metadata", {"metadata": b'{"x": NaN}'}),
        (0, "metadata", {"metadata": b'{"x": "\\u0000"}'}),
        (0, "trace_id", {"trace_id": ""}),
        (1, "correlation_id", {"correlation_id": 5}),
        (0, "causation_id", {"causation_id": "\ud800"}),
        (0, "created_at", {"created_at": NAIVE}),
        (0, "created_at", {"created_at": "2024-01-01"}),
    ],
)
async def test_invalid_events_are_rejected_before_any_sql(
    db: Database, raw: RawSQL, index: int, field: str, bad: dict[str, Any]
) -> None:
    fields = {"aggregate_id": "acc-1", "event_type": "MoneyDeposited", "payload": b"{}"}
    events = [make_event(), make_event()]
    events[index] = make_event(**{**fields, **bad})
    with pytest.raises(InvalidEventError) as caught:
        await append(db, es.Any(), events)
    assert (caught.value.index, caught.value.field) == (index, field)
    assert f"event {index}" in str(caught.value)
    assert field in str(caught.value)
    assert await count_rows(db, raw, db.store.config.events_table) == 0


@pytest.mark.parametrize("field", ["bounded_context", "aggregate_type", "aggregate_id"])
async def test_events_of_one_append_must_share_one_aggregate(db: Database, field: str) -> None:
    options: dict[str, Any] = {field: "other"}
    events = [make_event(), make_event(), make_event(**options)]
    with pytest.raises(InvalidEventError) as caught:
        await append(db, es.Any(), events)
    assert (caught.value.index, caught.value.field) == (2, field)
    assert await read_all(db) == []


async def test_empty_append_and_bad_arguments(db: Database) -> None:
    with pytest.raises(NoEventsError):
        await append(db, es.Any(), [])
    with pytest.raises(InvalidEventError) as caught:
        await append(db, es.Any(), [make_event(), "not an event"])  # type: ignore[list-item]
    assert (caught.value.index, caught.value.field) == (1, "event")
    with pytest.raises(TypeError, match="expected version"):
        await append(db, 3, [make_event()])  # type: ignore[arg-type]
    assert await read_all(db) == []


async def test_created_at_is_kept_in_utc(db: Database) -> None:
    created = datetime(2030, 6, 1, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7)))
    await append(db, es.NoStream(), [make_event(created_at=created)])
    read = (await read_all(db))[0]
    assert read.created_at == created
    assert read.created_at.astimezone(UTC).hour == 6


async def test_duplicate_of_an_event_still_in_flight_is_rejected_once_it_commits(
    db: Database,
) -> None:
    event_id = uuid.uuid4()
    first_appended = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event("a", event_id=event_id)])
            first_appended.set()
            await release.wait()

    async def second() -> None:
        await first_appended.wait()
        async with db.transaction() as tx:
            with pytest.raises(DuplicateEventError):
                await db.store.append(tx, es.Any(), [make_event("b", event_id=event_id)])
            # The conflict wrote nothing and the transaction is still usable.
            await db.store.append(tx, es.NoStream(), [make_event("b")])

    async def go() -> None:
        await first_appended.wait()
        await asyncio.sleep(0.2)
        release.set()

    await asyncio.gather(first(), second(), go())
    assert [(e.aggregate_id, e.aggregate_version) for e in await read_whole_log(db)] == [
        ("a", 1),
        ("b", 1),
    ]


async def test_distinct_event_types_and_versions(db: Database) -> None:
    await append(db, es.NoStream(), [make_event(event_type="B"), make_event(event_type="A")])
    await append(db, es.Any(), [make_event(event_type="A", event_version=2)])
    await append(db, es.Any(), [make_event(event_type="A")])
    async with db.transaction() as tx:
        assert await db.store.event_types(tx) == [("A", 1), ("A", 2), ("B", 1)]


async def test_a_batch_keeps_each_events_own_fields(db: Database) -> None:
    shared = b'{"tenant": "t-1"}'
    events = [
        make_event(event_type="A", metadata=shared, correlation_id="c", trace_id="t1"),
        make_event(event_type="B", metadata=b'{"n": 2}', correlation_id="c", event_version=2),
        make_event(event_type="A", metadata=None, correlation_id="c", causation_id="x"),
    ]
    result = await append(db, es.NoStream(), events)
    for stored in (result.events, (await stream(db)).events, await read_all(db)):
        assert [e.event_type for e in stored] == ["A", "B", "A"]
        assert [e.event_version for e in stored] == [1, 2, 1]
        assert [None if e.metadata is None else json.loads(e.metadata) for e in stored] == [
            {"tenant": "t-1"},
            {"n": 2},
            None,
        ]
        assert [e.trace_id for e in stored] == ["t1", None, None]
        assert [e.causation_id for e in stored] == [None, None, "x"]
        assert {e.correlation_id for e in stored} == {"c"}


async def test_a_retried_command_gets_its_stored_result(db: Database) -> None:
    # The command read version 0, appended, and is retried with the same events: whatever
    # the expected version says now, it already happened, and it gets what was stored.
    event_id = uuid.uuid4()
    first = await append(db, es.NoStream(), [make_event(event_id=event_id)])
    for expected in (es.NoStream(), es.Exact(5), es.Any(), es.StreamExists()):
        again = await append(db, expected, [make_event(event_id=event_id)])
        assert again == first
        with pytest.raises(DuplicateEventError) as caught:
            await append(db, expected, [make_event(), make_event(event_id=event_id)])
        assert caught.value.event_id == event_id
    assert [e.event_id for e in await read_all(db)] == [event_id]


async def test_a_large_append_with_any_continues_an_existing_stream(db: Database) -> None:
    await append(db, es.NoStream(), [make_event(event_type="First")])
    events = [make_event(event_type=f"E{i}") for i in range(1200)]  # several statements
    result = await append(db, es.Any(), events)
    assert (result.from_version, result.to_version) == (1, 1201)
    assert result.global_positions == sorted(result.global_positions)
    read = await read_all(db, limit=2000)
    assert [e.aggregate_version for e in read] == list(range(1, 1202))
    assert [e.event_type for e in read[1:]] == [e.event_type for e in events]
    assert (await stream(db)).version == 1201
