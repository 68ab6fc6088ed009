"""Nothing lost, nothing corrupted, no raw errors: the edges an adversarial review broke.

Each test states the failure it guards against; they run on every backend the failure
applies to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import (
    Database,
    DuplicateEventError,
    InvalidEventError,
    OptimisticConcurrencyError,
    StoreConfig,
    TransactionRolledBackError,
    es,
)
from pupsourcing_async.testing import unique_store_config

from .conftest import RawSQL, drop_tables, make_event, read_whole_log

SERVERS = ["postgres", "mysql"]

# A table name of this run's own, so that what an earlier run (of an older version) left
# behind cannot make this one fail.
INJECTED = f"pups_injected_{uuid.uuid4().hex[:8]}"
# Bytes that break naive escaping: quotes, backslashes, NUL, CR/LF, Ctrl-Z, and a payload
# that would run SQL if a backslash-escaped quote ended its string.
NASTY = [
    f"x', NULL, NULL, NULL, NULL, NOW()); CREATE TABLE {INJECTED} (i INT); -- ".encode(),
    f"\\', 1); DROP TABLE {INJECTED}; -- ".encode(),
    b"\x00\x1a\r\n\\\\'\"\x00",
    bytes(range(256)),
    b"",
]


async def append(db: Database, expected: es.ExpectedVersion, events: list[es.Event]) -> Any:
    async with db.transaction() as tx:
        return await db.store.append(tx, expected, events)


async def stream(db: Database, aggregate_id: str, **where: str) -> es.Stream:
    async with db.transaction() as tx:
        return await db.store.read_aggregate_stream(
            tx, where.get("bc", "Banking"), where.get("at", "Account"), aggregate_id
        )


async def injected_table_exists(db: Database) -> bool:
    async with db.transaction() as tx:
        names = await RawSQL(db.dialect).tables_like(tx, "pups")
    return INJECTED in names


# --- item 1: values never reach SQL text unescaped -------------------------------------


def nasty_events(aggregate_id: str) -> list[es.Event]:
    return [
        make_event(
            aggregate_id,
            event_type="Weird'\\Type\u00e9",
            payload=payload,
            metadata=json.dumps({"q": "'\"\\", "n": index}).encode(),
            trace_id="t'\\\r\n",
            correlation_id="c\x1a'",
        )
        for index, payload in enumerate(NASTY)
    ]


async def check_round_trip(db: Database, aggregate_id: str) -> None:
    events = nasty_events(aggregate_id)
    stored = await append(db, es.NoStream(), events)
    # Ids whose bytes hold quotes and backslashes, alone (the common case, 1 in 8 uuids).
    for _ in range(20):
        await append(db, es.Any(), [make_event(aggregate_id, event_id=uuid.uuid4())])
    read = (await stream(db, aggregate_id)).events
    assert [e.payload for e in read[: len(events)]] == [e.payload for e in events]
    assert [e.event_id for e in read[: len(events)]] == [e.event_id for e in events]
    assert [e.trace_id for e in read[: len(events)]] == [e.trace_id for e in events]
    assert [e.correlation_id for e in read[: len(events)]] == [e.correlation_id for e in events]
    assert [e.event_type for e in read[: len(events)]] == [e.event_type for e in events]
    assert [json.loads(e.metadata or b"") for e in read[: len(events)]] == [
        json.loads(e.metadata or b"") for e in events
    ]
    assert stored.to_version == len(events)
    assert not await injected_table_exists(db)


async def test_nasty_values_round_trip_byte_identical(db: Database) -> None:
    await check_round_trip(db, "acc-'\\\"")


@pytest.mark.parametrize("backend", ["mysql"])
@pytest.mark.parametrize(
    "options",
    [
        {"sql_mode": "'NO_BACKSLASH_ESCAPES,STRICT_ALL_TABLES'"},
        {"init_command": "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'"},
    ],
)
async def test_mysql_with_no_backslash_escapes_set_per_session(
    url: str, options: dict[str, str]
) -> None:
    # The pool's own connections: a session sql_mode from the caller's pool options.
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, pool_options=options) as db:
        await db.migrate()
        try:
            await check_round_trip(db, "acc-session")
        finally:
            await drop_tables(db, [config.events_table])


@pytest.mark.parametrize("backend", ["mysql"])
async def test_mysql_store_on_a_users_connection_in_no_backslash_escapes_mode(url: str) -> None:
    # A connection the user opened, with no session setup of the library's at all: the
    # store's literals must read the same in this mode too.
    import aiomysql

    from pupsourcing_async.adapters import mysql

    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        try:
            store = mysql.Store(config)
            connection = await aiomysql.connect(
                host="127.0.0.1", port=3306, user="root", db="test", autocommit=False
            )
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
                    await cursor.execute("SET SESSION time_zone = '+00:00'")
                events = nasty_events("acc-own")
                result = await store.append(connection, es.NoStream(), events)
                await connection.commit()
                read = await store.read_aggregate_stream(
                    connection, "Banking", "Account", "acc-own"
                )
                await connection.commit()
            finally:
                connection.close()
            assert [e.payload for e in read] == [e.payload for e in events]
            assert result.to_version == len(events)
            assert not await injected_table_exists(db)
        finally:
            await drop_tables(db, [config.events_table])


@pytest.mark.parametrize("backend", ["mysql"])
async def test_mysql_with_no_backslash_escapes_set_globally(url: str) -> None:
    config = unique_store_config()
    async with pupsourcing_async.connect(url, max_size=1) as admin:
        async with admin.transaction() as tx, tx.cursor() as cursor:
            await cursor.execute("SELECT @@GLOBAL.sql_mode")
            (previous,) = (await cursor.fetchall())[0]
            await cursor.execute(
                "SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')"
            )
        try:
            async with pupsourcing_async.connect(url, store_config=config) as db:
                await db.migrate()
                try:
                    await check_round_trip(db, "acc-global")
                finally:
                    await drop_tables(db, [config.events_table])
        finally:
            async with admin.transaction() as tx, tx.cursor() as cursor:
                await cursor.execute("SET GLOBAL sql_mode = %s", (previous,))


# --- items 2 and 9: a deadlock is a typed error, and a swallowed one never commits --------


async def crossing_appends(db: Database) -> list[BaseException | None]:
    """Two transactions append to two aggregates in opposite orders: a deadlock."""
    first_done = [asyncio.Event(), asyncio.Event()]

    async def writer(index: int, order: tuple[str, str]) -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), [make_event(order[0])])
            first_done[index].set()
            await first_done[1 - index].wait()
            await db.store.append(tx, es.Any(), [make_event(order[1])])

    results = await asyncio.gather(
        writer(0, ("x", "y")), writer(1, ("y", "x")), return_exceptions=True
    )
    return [r if isinstance(r, BaseException) else None for r in results]


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_deadlock_is_a_typed_rollback_not_a_conflict(db: Database) -> None:
    await append(db, es.NoStream(), [make_event("x")])
    await append(db, es.NoStream(), [make_event("y")])
    outcomes = await crossing_appends(db)
    failures = [o for o in outcomes if o is not None]
    assert len(failures) == 1, outcomes
    assert isinstance(failures[0], TransactionRolledBackError)
    assert not isinstance(failures[0], OptimisticConcurrencyError)
    assert failures[0].reason == "deadlock"
    # The winner's two events are stored, the loser's none: 2 + 2 in all.
    assert len(await read_whole_log(db)) == 4


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_swallowed_deadlock_refuses_to_commit(db: Database) -> None:
    await append(db, es.NoStream(), [make_event("x")])
    await append(db, es.NoStream(), [make_event("y")])
    order = {"x": asyncio.Event(), "y": asyncio.Event()}
    swallowed: list[BaseException] = []

    async def writer(first: str, second: str) -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), [make_event(first)])
            order[first].set()
            await order[second].wait()
            try:
                await db.store.append(tx, es.Any(), [make_event(second)])
            except TransactionRolledBackError as err:
                swallowed.append(err)  # a careless caller catches it and goes on
                await db.store.append(tx, es.Any(), [make_event("z")])

    results = await asyncio.gather(writer("x", "y"), writer("y", "x"), return_exceptions=True)
    assert len(swallowed) == 1
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1, results
    assert isinstance(refused[0], TransactionRolledBackError)
    events = await read_whole_log(db)
    # Nothing of the loser survives: neither its first append nor the one after the catch.
    assert [e.aggregate_id for e in events].count("z") == 0
    assert len(events) == 4


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_lock_wait_timeout_rolls_the_whole_transaction_back(db: Database) -> None:
    await append(db, es.NoStream(), [make_event("held")])
    holding = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), [make_event("held")])
            holding.set()
            await release.wait()

    task = asyncio.create_task(holder())
    await holding.wait()
    try:
        with pytest.raises(TransactionRolledBackError) as caught:
            async with db.transaction() as tx:
                raw = RawSQL(db.dialect)
                if db.dialect == "postgres":
                    await raw.execute(tx, "SET LOCAL lock_timeout = '300ms'")
                else:
                    await raw.execute(tx, "SET SESSION innodb_lock_wait_timeout = 1")
                await db.store.append(tx, es.NoStream(), [make_event("other")])
                await db.store.append(tx, es.Any(), [make_event("held")])
        assert caught.value.reason == "lock timeout"
    finally:
        release.set()
        await task
    # The earlier append of the timed-out transaction was rolled back with it.
    assert (await stream(db, "other")).is_empty
    assert (await stream(db, "held")).version == 2


# --- item 3: identity compares exactly --------------------------------------------------


async def test_ids_that_differ_only_in_trailing_space_or_case_are_distinct(db: Database) -> None:
    for aggregate_id in ("pad", "pad ", "Pad", "pad  "):
        result = await append(db, es.NoStream(), [make_event(aggregate_id)])
        assert result.to_version == 1, aggregate_id
    for aggregate_id in ("pad", "pad ", "Pad", "pad  "):
        events = (await stream(db, aggregate_id)).events
        assert [e.aggregate_id for e in events] == [aggregate_id]
    async with db.transaction() as tx:
        await db.store.update_checkpoint(tx, "proj", 1)
        await db.store.update_checkpoint(tx, "proj ", 2)
        assert await db.store.get_checkpoint(tx, "proj") == 1
        assert await db.store.get_checkpoint(tx, "proj ") == 2


# --- items 4 and 11: validation accepts or refuses alike everywhere, before any SQL --------


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


BAD_INPUT = [
    ("metadata", {"metadata": nested(32)}),
    ("metadata", {"metadata": nested(100_000)}),
    ("metadata", {"metadata": b'{"a": "\\ud800"}'}),
    ("metadata", {"metadata": b'["\\udc00 alone"]'}),
    ("metadata", {"metadata": b'{"n": 1e400}'}),
    ("metadata", {"metadata": b'{"n": 123456789012345678901234567890}'}),
    ("metadata", {"metadata": b'{"nul": "\\u0000"}'}),
    ("created_at", {"created_at": datetime.min.replace(tzinfo=timezone(timedelta(hours=14)))}),
    ("created_at", {"created_at": datetime.max.replace(tzinfo=timezone(timedelta(hours=-14)))}),
    ("created_at", {"created_at": datetime(999, 12, 31, 23, 59, tzinfo=UTC)}),
    ("created_at", {"created_at": datetime.max.replace(tzinfo=UTC)}),
]


@pytest.mark.parametrize(("field", "options"), BAD_INPUT, ids=lambda value: str(value)[:40])
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    db: Database, field: str, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidEventError) as caught:
        async with db.transaction() as tx:
            await db.store.append(
                tx, es.NoStream(), [make_event("ok"), make_event("ok", **options)]
            )
    assert caught.value.field == field
    assert caught.value.index == 1
    # The first event of the failed append went nowhere, and the head did not move.
    assert await read_whole_log(db) == []
    assert (await append(db, es.NoStream(), [make_event("ok")])).to_version == 1


async def test_expected_version_past_the_64_bit_range_is_refused(db: Database) -> None:
    for version in (2**63, 2**63 - 1, 2**70):
        with pytest.raises(InvalidEventError) as caught:
            await append(db, es.Exact(version), [make_event()])
        assert caught.value.field == "expected_version"
    assert await read_whole_log(db) == []


GOOD_EDGES = [
    {"metadata": nested(31)},
    {"metadata": b'{"pair": "\\ud83d\\ude00", "n": -9223372036854775808, "m": 1.5e300}'},
    {"created_at": datetime(1000, 1, 1, tzinfo=UTC)},
    {"created_at": datetime(9999, 12, 31, 23, 59, 59, 999998, tzinfo=UTC)},
    {"created_at": datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=timezone(timedelta(hours=2)))},
]


@pytest.mark.parametrize("options", GOOD_EDGES, ids=lambda value: str(value)[:40])
async def test_edge_values_every_database_holds_read_back_identical(
    db: Database, options: dict[str, Any]
) -> None:
    event = make_event(**options)
    await append(db, es.NoStream(), [event])
    (read,) = (await stream(db, "acc-1")).events
    assert read.created_at == event.created_at
    if event.metadata is not None:
        # Equal as JSON: PostgreSQL writes 1.5e300 out in full, the same number.
        assert as_json(read.metadata) == as_json(event.metadata)
    # And the log itself stays readable (SQLite once stored years it could not parse).
    assert [e.event_id for e in await read_whole_log(db)] == [event.event_id]


def as_json(data: bytes | None) -> Any:
    return json.loads(data or b"null", parse_float=Decimal, parse_int=Decimal)


# --- item 5: big batches and big payloads -------------------------------------------------


async def test_a_hundred_thousand_events_in_one_append(db: Database) -> None:
    payload = b'{"amount": 1}'
    events = [make_event("big", payload=payload) for _ in range(100_000)]
    result = await append(db, es.NoStream(), events)
    assert result.to_version == 100_000
    assert result.global_positions == sorted(result.global_positions)
    assert len(set(result.global_positions)) == 100_000
    async with db.transaction() as tx:
        assert await db.store.latest_global_position(tx) == result.global_positions[-1]
        last = await db.store.read_aggregate_stream(
            tx, "Banking", "Account", "big", from_version=99_999
        )
    assert [e.event_id for e in last] == [e.event_id for e in events[-2:]]


async def test_a_payload_too_large_for_the_server_is_refused_naming_the_limit(
    db: Database,
) -> None:
    big = os.urandom(50 * 1024 * 1024)
    if db.dialect != "mysql":
        result = await append(db, es.NoStream(), [make_event(payload=big)])
        assert (await stream(db, "acc-1")).events[0].payload == big
        assert result.to_version == 1
        return
    with pytest.raises(InvalidEventError, match="max_allowed_packet") as caught:
        await append(db, es.NoStream(), [make_event(), make_event(payload=big)])
    assert (caught.value.index, caught.value.field) == (1, "payload")
    assert await read_whole_log(db) == []


@pytest.mark.parametrize("backend", ["mysql"])
async def test_mysql_splits_a_batch_across_round_trips_and_undoes_it_whole(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A packet limit small enough that a batch of 600 events needs many round trips.
    store: Any = db.store
    async with db.transaction() as tx, tx.cursor() as cursor:
        facts = await store.facts(cursor, tx)
    monkeypatch.setattr(store, "_facts", dataclasses.replace(facts, max_packet=40_000))
    events = [make_event("split", payload=os.urandom(100)) for _ in range(600)]
    result = await append(db, es.NoStream(), events)
    assert result.to_version == 600
    assert [e.payload for e in (await stream(db, "split")).events] == [e.payload for e in events]
    # A later round trip fails (an id stored already): the earlier ones are undone.
    clash = [make_event("split2") for _ in range(599)]
    clash.append(make_event("split2", event_id=events[0].event_id))
    with pytest.raises(DuplicateEventError):
        await append(db, es.NoStream(), clash)
    assert (await stream(db, "split2")).is_empty


# --- item 12: SQLite keeps its log readable ----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_reads_rows_that_earlier_versions_or_go_wrote(db: Database) -> None:
    table = db.store.config.events_table
    async with db.transaction() as tx:
        rows = ((1, "999-01-02 03:04:05.000000"), (2, "2024-01-02 03:04:05.123456789 +0000 UTC"))
        for position, created in rows:
            await tx.execute(
                f"INSERT INTO {table} (global_position, bounded_context, aggregate_type, "
                "aggregate_id, aggregate_version, event_id, event_type, payload, created_at) "
                "VALUES (?, 'B', 'A', ?, 1, ?, 'T', x'00', ?)",
                (position, f"a{position}", str(uuid.uuid4()), created),
            )
    events = await read_whole_log(db)
    assert [e.created_at.year for e in events] == [999, 2024]
    assert events[1].created_at.microsecond == 123456


# --- item 13: table names that could only fail later are refused at once -----------------


@pytest.mark.parametrize(
    "options",
    [
        {"events_table": "select"},
        {"events_table": "order"},
        {"aggregate_heads_table": "Table"},
        {"events_table": "e", "checkpoints_table": "e_in_flight"},
        {"events_table": "e", "aggregate_heads_table": "idx_e_event_type"},
        {"events_table": "e", "checkpoints_table": "e_register"},
        {"events_table": "e", "aggregate_heads_table": "e_global_position_seq"},
    ],
)
def test_table_names_that_would_break_later_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"reserved|collide"):
        StoreConfig(**options)


async def test_unusual_valid_table_names_migrate_and_work(url: str) -> None:
    tag = uuid.uuid4().hex[:6]
    config = StoreConfig(
        events_table=f"Ev_{tag}_events",
        aggregate_heads_table=f"_{tag}_Heads2",
        checkpoints_table=f"x{tag}_events_p",
    )
    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        await db.migrate()
        try:
            result = await append(db, es.NoStream(), [make_event()])
            assert result.to_version == 1
        finally:
            if db.dialect != "sqlite":
                await drop_tables(db, [config.events_table])
                async with db.transaction() as tx:
                    raw = RawSQL(db.dialect)
                    for table in (config.aggregate_heads_table, config.checkpoints_table):
                        await raw.execute(tx, f"DROP TABLE IF EXISTS {table}")


# --- retry-safe writes ----------------------------------------------------------------------


async def test_stream_exists_requires_an_event(db: Database) -> None:
    with pytest.raises(OptimisticConcurrencyError) as caught:
        await append(db, es.StreamExists(), [make_event()])
    assert caught.value.actual == 0
    await append(db, es.NoStream(), [make_event()])
    assert (await append(db, es.StreamExists(), [make_event(), make_event()])).to_version == 3
    assert str(es.StreamExists()) == "StreamExists"
    assert es.StreamExists() == es.StreamExists()


async def test_concurrent_stream_exists_appends_all_succeed(db: Database) -> None:
    await append(db, es.NoStream(), [make_event()])
    results = await asyncio.gather(
        *(append(db, es.StreamExists(), [make_event(event_type=f"W{i}")]) for i in range(8))
    )
    assert sorted(r.to_version for r in results) == list(range(2, 10))


async def test_a_retry_inside_a_transaction_returns_the_result_and_keeps_the_transaction(
    db: Database,
) -> None:
    events = [make_event(), make_event()]
    first = await append(db, es.NoStream(), events)
    async with db.transaction() as tx:
        again = await db.store.append(tx, es.Exact(7), events)
        other = await db.store.append(tx, es.Any(), [make_event()])
    assert again == first
    assert other.to_version == 3


async def test_concurrent_identical_appends_store_one_copy(db: Database) -> None:
    events = [make_event("same"), make_event("same")]
    results = await asyncio.gather(*(append(db, es.Any(), events) for _ in range(6)))
    assert all(result == results[0] for result in results)
    assert [e.event_id for e in await read_whole_log(db)] == [e.event_id for e in events]


@pytest.mark.parametrize(
    "change",
    ["order", "payload", "type", "aggregate", "extra"],
)
async def test_any_other_overlap_with_stored_ids_is_a_duplicate(db: Database, change: str) -> None:
    events = [make_event(), make_event()]
    await append(db, es.NoStream(), events)
    if change == "order":
        retry = [events[1], events[0]]
    elif change == "payload":
        retry = [events[0], make_event(payload=b"{}", event_id=events[1].event_id)]
    elif change == "type":
        retry = [events[0], make_event(event_type="Other", event_id=events[1].event_id)]
    elif change == "aggregate":
        retry = [make_event("b", event_id=e.event_id) for e in events]
    else:
        retry = [*events, make_event()]
    with pytest.raises(DuplicateEventError):
        await append(db, es.Any(), retry)
    assert len(await read_whole_log(db)) == 2
