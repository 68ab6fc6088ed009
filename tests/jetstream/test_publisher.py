"""The JetStream publisher run by the projection processor, on every backend: what reaches
the stream, what is refused, and what happens when NATS is slow, away or stopped."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js import api

from pupsourcing_async import Database, ProjectionError, ProjectionStoppedError, es
from pupsourcing_async import nats as pnats
from pupsourcing_async.projection import OnFailure, ProcessorConfig, RunMode

from ..conftest import append_many, make_event, read_whole_log
from .conftest import Names, NatsServer, stream_contents, wait_until

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=7, retry_initial_delay=0.01)


async def checkpoint(db: Database, name: str = "nats_publisher") -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


async def append_mixed(db: Database) -> list[es.PersistedEvent]:
    """Events of several aggregates, types and names NATS cannot take as they are."""
    stored: list[es.PersistedEvent] = []
    for index in range(24):
        kind = ("Account", "Order.Line", "Card holder")[index % 3]
        event_type = ("MoneyDeposited", "Paid > now", "Ünïcode*")[index % 3]
        stored += (
            await _append(
                db,
                make_event(
                    f"agg-{index % 5}",
                    event_type,
                    f'{{"n": {index}}}'.encode(),
                    aggregate_type=kind,
                    metadata=b'{"who":\n "\xc3\xa9"}' if index % 2 else None,
                    trace_id=f"trace {index}" if index % 4 else None,
                ),
            )
        ).events
    return stored


async def _append(db: Database, event: es.Event) -> es.AppendResult:
    async with db.transaction() as tx:
        return await db.store.append(tx, es.Any(), [event])


async def test_every_event_is_published_once_in_order_with_its_envelope(
    db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_mixed(db)
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        await db.processor(ONE_OFF).run(pub)
        assert pub.published == len(stored)
        assert pub.duplicates == 0
    contents = await stream_contents(nats_client, names.stream)
    # What the database reads back, field by field, in position order.
    assert [event for _, event in contents] == await read_whole_log(db)
    assert [event.event_id for _, event in contents] == [e.event_id for e in stored]
    subjects = {subject for subject, _ in contents}
    assert subjects == {
        f"{names.prefix}.Banking.Account.MoneyDeposited",
        f"{names.prefix}.Banking.Order%2ELine.Paid%20%3E%20now",
        f"{names.prefix}.Banking.Card%20holder.%C3%9Cn%C3%AFcode%2A",
    }
    assert await checkpoint(db) == stored[-1].global_position

    # Run again: nothing new to publish, nothing published again.
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as again:
        await db.processor(ONE_OFF).run(again)
        assert again.published == again.duplicates == 0
    assert len(await stream_contents(nats_client, names.stream)) == len(stored)


async def test_the_stream_is_made_with_the_settings_the_publisher_needs(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    publisher = pnats.Publisher(
        nats_client, names.stream, subject_prefix=names.prefix, duplicate_window=300, max_age=3600
    )
    info = await publisher.ensure_stream()
    await publisher.aclose()
    assert info.config.subjects == [f"{names.prefix}.>"]
    assert info.config.duplicate_window == 300
    assert info.config.max_age == 3600
    assert info.config.retention == api.RetentionPolicy.LIMITS
    assert info.config.storage == api.StorageType.FILE


async def test_scope_filters_publish_only_their_events_and_the_checkpoint_passes_the_rest(
    db: Database, nats_client: Client, names: Names
) -> None:
    cards = await append_many(db, 4, aggregate_type="Card")
    await append_many(db, 5, aggregate_type="Account")
    cards += await append_many(db, 2, aggregate_type="Card")
    others = await append_many(db, 3, aggregate_type="Account")
    async with pnats.Publisher(
        nats_client, names.stream, subject_prefix=names.prefix, aggregate_types=("Card",)
    ) as publisher:
        await db.processor(ONE_OFF).run(publisher)
    contents = await stream_contents(nats_client, names.stream)
    assert [event.event_id for _, event in contents] == [e.event_id for e in cards]
    assert await checkpoint(db) == others[-1].global_position


async def test_a_batch_published_again_is_dropped_as_a_duplicate(
    db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_many(db, 12)
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        # As if a publisher had sent its first batch and died before its checkpoint.
        await pub.handle_batch(None, stored[:7])
        assert await checkpoint(db) == 0
        await db.processor(ONE_OFF).run(pub)
        assert pub.duplicates == 7
        assert pub.published == 12
    contents = await stream_contents(nats_client, names.stream)
    assert [event.event_id for _, event in contents] == [e.event_id for e in stored]


async def test_handle_publishes_a_single_event(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    (event,) = await append_many(sqlite_db, 1)
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        await pub.handle(None, event)
        await pub.handle_batch(None, [])
    assert [e for _, e in await stream_contents(nats_client, names.stream)] == [event]


async def test_a_stream_with_a_too_short_duplicate_window_is_refused(
    db: Database, nats_client: Client, names: Names
) -> None:
    await nats_client.jetstream().add_stream(
        api.StreamConfig(name=names.stream, subjects=[f"{names.prefix}.>"], duplicate_window=10)
    )
    await append_many(db, 3)
    publisher = pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix)
    with pytest.raises(pnats.StreamSettingsError) as caught:
        await publisher.__aenter__()
    err = caught.value
    assert (err.setting, err.expected, err.actual) == ("duplicate_window", 120.0, 10.0)
    assert "duplicate_window 10.0" in str(err)
    assert "needs 120.0" in str(err)

    # Run without checking first: the first batch checks, fails, and publishes nothing.
    with pytest.raises(ProjectionError) as stopped:
        await db.processor(ONE_OFF).run(publisher)
    assert isinstance(stopped.value.__cause__, pnats.StreamSettingsError)
    assert await checkpoint(db) == 0
    assert await stream_contents(nats_client, names.stream) == []

    # A publisher that asks for no more than the stream has goes ahead.
    async with pnats.Publisher(
        nats_client, names.stream, subject_prefix=names.prefix, duplicate_window=10
    ) as fits:
        await db.processor(ONE_OFF).run(fits)
    assert len(await stream_contents(nats_client, names.stream)) == 3


@pytest.mark.parametrize(
    ("config", "setting"),
    [
        ({"subjects": ["{prefix}.only.this"]}, "subjects"),
        ({"subjects": ["{prefix}.>"], "retention": api.RetentionPolicy.INTEREST}, "retention"),
        ({"subjects": ["{prefix}.>"], "storage": api.StorageType.MEMORY}, "storage"),
    ],
)
async def test_an_existing_stream_set_up_otherwise_is_refused(
    sqlite_db: Database,
    nats_client: Client,
    names: Names,
    config: dict[str, Any],
    setting: str,
) -> None:
    config["subjects"] = [s.format(prefix=names.prefix) for s in config["subjects"]]
    await nats_client.jetstream().add_stream(
        api.StreamConfig(name=names.stream, duplicate_window=120, **config)
    )
    with pytest.raises(pnats.StreamSettingsError) as caught:
        async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix):
            pass
    assert caught.value.setting == setting


async def test_a_missing_stream_is_refused_when_making_it_is_off(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    with pytest.raises(pnats.StreamSettingsError, match="does not exist"):
        async with pnats.Publisher(
            nats_client, names.stream, subject_prefix=names.prefix, create_stream=False
        ):
            pass
    with pytest.raises(nats.js.errors.NotFoundError):
        await nats_client.jetstream().stream_info(names.stream)


async def test_publishers_starting_together_share_the_stream_one_makes(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    publishers = [
        pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) for _ in range(4)
    ]
    infos = await asyncio.gather(*(p.ensure_stream() for p in publishers))
    assert {info.config.name for info in infos} == {names.stream}
    for publisher in publishers:
        await publisher.aclose()


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("{prefix}.has space", "not valid"),
        ("{prefix}.*", "not valid"),
        ("{prefix}..x", "not valid"),
        ("elsewhere.x", "does not take"),
    ],
)
async def test_a_subject_made_by_the_caller_is_checked_before_anything_is_sent(
    db: Database, nats_client: Client, names: Names, subject: str, reason: str
) -> None:
    await append_many(db, 3)
    wanted = subject.format(prefix=names.prefix)
    async with pnats.Publisher(
        nats_client, names.stream, subject_prefix=names.prefix, subject=lambda event: wanted
    ) as publisher:
        with pytest.raises(ProjectionError) as caught:
            await db.processor(ONE_OFF).run(publisher)
    cause = caught.value.__cause__
    assert isinstance(cause, pnats.PublishRejectedError)
    assert reason in str(cause)
    assert cause.subject == wanted
    assert await checkpoint(db) == 0
    assert await stream_contents(nats_client, names.stream) == []


async def test_a_subject_made_by_the_caller_inside_the_stream_is_used(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_many(sqlite_db, 3)
    async with pnats.Publisher(
        nats_client,
        names.stream,
        subject_prefix=names.prefix,
        subject=lambda e: f"{names.prefix}.{pnats.subject_token(e.aggregate_id)}",
    ) as publisher:
        await sqlite_db.processor(ONE_OFF).run(publisher)
    contents = await stream_contents(nats_client, names.stream)
    assert [s for s, _ in contents] == [f"{names.prefix}.{e.aggregate_id}" for e in stored]


async def test_an_event_too_large_for_nats_is_refused_before_its_batch_is_sent(
    db: Database, nats_client: Client, names: Names
) -> None:
    await append_many(db, 2)
    await _append(db, make_event(payload=b"x" * nats_client.max_payload))
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        with pytest.raises(ProjectionError) as caught:
            await db.processor(ONE_OFF).run(pub)
    assert isinstance(caught.value.__cause__, pnats.PublishRejectedError)
    assert "max_payload" in str(caught.value.__cause__)
    assert caught.value.__cause__.global_position == 3
    assert await checkpoint(db) == 0
    assert await stream_contents(nats_client, names.stream) == []
    assert nats_client.is_connected


async def test_with_park_an_event_too_large_is_parked_and_the_rest_published_once(
    db: Database, nats_client: Client, names: Names
) -> None:
    first = await append_many(db, 2)
    large = (await _append(db, make_event(payload=b"x" * nats_client.max_payload))).events
    rest = await append_many(db, 3)
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, batch_size=7, on_failure=OnFailure.PARK, handler_attempts=2
    )
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        await db.processor(config).run(pub)
    # The batch failed whole, then ran event by event: what the replays sent again,
    # JetStream dropped as duplicates.
    contents = await stream_contents(nats_client, names.stream)
    assert [e.event_id for _, e in contents] == [e.event_id for e in first + rest]
    [parked] = await db.parked_events("nats_publisher")
    assert (parked.global_position, parked.attempts) == (large[0].global_position, 2)
    assert parked.error.startswith("PublishRejectedError: ")
    assert "max_payload" in parked.error
    assert await checkpoint(db) == rest[-1].global_position


async def test_an_event_the_stream_refuses_stops_the_publisher_naming_it(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    await nats_client.jetstream().add_stream(
        api.StreamConfig(
            name=names.stream,
            subjects=[f"{names.prefix}.>"],
            duplicate_window=120,
            max_msg_size=2048,
        )
    )
    small = await append_many(sqlite_db, 2)
    await _append(sqlite_db, make_event(payload=b"y" * 4096))
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        with pytest.raises(ProjectionError) as caught:
            await sqlite_db.processor(ONE_OFF).run(pub)
    cause = caught.value.__cause__
    assert isinstance(cause, pnats.PublishRejectedError)
    assert cause.global_position == 3
    assert "maximum" in str(cause)
    assert await checkpoint(sqlite_db) == 0
    # The batch rolled back whole; what JetStream took of it is dropped when it comes again.
    assert [e for _, e in await stream_contents(nats_client, names.stream)] == small


async def test_a_batch_without_acknowledgements_in_time_is_retried_then_published_once(
    db: Database, private_nats: NatsServer, private_names: Names
) -> None:
    names = private_names
    client = await pnats.connect(private_nats.url, timeout=10, reconnect_wait=0.1)
    try:
        stored = await append_many(db, 9)
        config = ProcessorConfig(
            run_mode=RunMode.ONE_OFF, batch_size=5, max_retries=1, retry_initial_delay=0.01
        )
        async with pnats.Publisher(
            client, names.stream, subject_prefix=names.prefix, ack_timeout=0.3
        ) as publisher:
            private_nats.pause()
            try:
                with pytest.raises(ProjectionStoppedError) as caught:
                    await db.processor(config).run(publisher)
            finally:
                private_nats.resume()
            assert isinstance(caught.value.__cause__, pnats.PublishTimeoutError)
            assert caught.value.__cause__.global_position == stored[0].global_position
            assert "acknowledged 0 of 5" in str(caught.value.__cause__)
            assert await checkpoint(db) == 0
            await db.processor(config).run(publisher)
        contents = await stream_contents(client, names.stream)
        assert [e.event_id for _, e in contents] == [e.event_id for e in stored]
    finally:
        await client.close()


async def test_cancelling_a_publisher_waiting_for_acks_rolls_back_and_leaks_nothing(
    db: Database, private_nats: NatsServer, private_names: Names
) -> None:
    names = private_names
    client = await pnats.connect(private_nats.url, timeout=10, reconnect_wait=0.1)
    try:
        stored = await append_many(db, 6)
        async with pnats.Publisher(
            client, names.stream, subject_prefix=names.prefix, ack_timeout=60
        ) as publisher:
            private_nats.pause()
            try:
                task = asyncio.create_task(db.processor(ONE_OFF).run(publisher))

                async def waiting() -> bool:
                    return bool(publisher._waiting)

                await wait_until(waiting)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert publisher._waiting == {}
                if db.dialect != "sqlite":
                    assert await db.backend.lease_held("nats_publisher") is False
            finally:
                private_nats.resume()
            assert await checkpoint(db) == 0
            # The lease is free and the messages sent meanwhile are duplicates now.
            await asyncio.wait_for(db.processor(ONE_OFF).run(publisher), 20)
        contents = await stream_contents(client, names.stream)
        assert [e.event_id for _, e in contents] == [e.event_id for e in stored]
    finally:
        await client.close()
    assert client.is_closed


async def test_a_publisher_rides_out_a_nats_restart(
    db: Database, private_nats: NatsServer, private_names: Names
) -> None:
    names = private_names
    client = await pnats.connect(private_nats.url, timeout=10, reconnect_wait=0.05)
    try:
        first = await append_many(db, 5)
        config = ProcessorConfig(batch_size=4, poll_interval=0.01, retry_initial_delay=0.01)
        async with pnats.Publisher(
            client, names.stream, subject_prefix=names.prefix, ack_timeout=0.5
        ) as publisher:
            task = asyncio.create_task(db.processor(config).run(publisher))
            try:
                await db.wait_for(first[-1].global_position, projections=["nats_publisher"])
                await private_nats.stop()
                second = await append_many(db, 6)
                await private_nats.start()
                await db.wait_for(
                    second[-1].global_position, projections=["nats_publisher"], timeout=30
                )
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        contents = await stream_contents(client, names.stream)
        assert [e.event_id for _, e in contents] == [e.event_id for e in first + second]
    finally:
        await client.close()


async def test_connect_says_clearly_that_nats_does_not_answer(
    stopped_nats: NatsServer,
) -> None:
    url = f"nats://user:s3cret@127.0.0.1:{stopped_nats.port}"
    with pytest.raises(pnats.NatsUnavailableError) as caught:
        await pnats.connect(url, timeout=0.3, reconnect_wait=0.05)
    message = str(caught.value)
    assert f"nats://127.0.0.1:{stopped_nats.port}" in message
    assert "s3cret" not in message
    assert "user" not in message
    assert caught.value.servers == [f"nats://127.0.0.1:{stopped_nats.port}"]


async def test_connect_waits_for_nats_that_comes_up(stopped_nats: NatsServer) -> None:
    connecting = asyncio.create_task(
        pnats.connect(stopped_nats.url, timeout=20, reconnect_wait=0.05)
    )
    await stopped_nats.start()
    client = await connecting
    try:
        assert client.is_connected
    finally:
        await client.close()


async def test_cancelling_connect_leaves_nothing_open(stopped_nats: NatsServer) -> None:
    before = asyncio.all_tasks()
    connecting = asyncio.create_task(
        pnats.connect(stopped_nats.url, timeout=20, reconnect_wait=0.05)
    )
    await asyncio.sleep(0)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    assert asyncio.all_tasks() - before == set()


async def test_a_late_message_of_an_interrupted_attempt_is_refused_not_stored_out_of_order(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    first, second, third = await append_many(sqlite_db, 3)
    async with pnats.Publisher(nats_client, names.stream, subject_prefix=names.prefix) as pub:
        await pub.handle_batch(None, [first])
        # The third event of an attempt whose second never arrived (lost in a reconnect):
        # it names its predecessor, so JetStream refuses to store it after the first.
        headers = pnats.event_headers(third)
        headers["Nats-Expected-Last-Msg-Id"] = str(second.event_id)
        reply = await nats_client.request(
            f"{names.prefix}.late", third.payload, headers=headers, timeout=5
        )
        assert b"10070" in reply.data
        # The next attempt publishes both, in order.
        await pub.handle_batch(None, [second, third])
    contents = await stream_contents(nats_client, names.stream)
    assert [e for _, e in contents] == [first, second, third]


def test_a_refusal_for_order_is_retried_and_other_refusals_are_not() -> None:
    from nats.aio.msg import Msg

    publisher = pnats.Publisher(Client(), "EVENTS")
    event = make_persisted()

    def outcome(
        data: bytes, headers: dict[str, str] | None = None
    ) -> tuple[pnats.PublishError | None, bool]:
        reply = Msg(Client(), subject="_INBOX.x.1", data=data, headers=headers)
        return publisher._reply_outcome(event, "events.x", reply)

    order = b'{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: x"}}'
    failure, _ = outcome(order)
    assert isinstance(failure, pnats.PublishOrderError)
    assert isinstance(failure, publisher.retryable_errors)
    unavailable, _ = outcome(b"", {"Status": "503"})
    assert isinstance(unavailable, pnats.PublishUnavailableError)
    assert isinstance(unavailable, publisher.retryable_errors)
    refused = b'{"error":{"code":400,"err_code":10054,"description":"message size exceeds"}}'
    rejected, _ = outcome(refused)
    assert isinstance(rejected, pnats.PublishRejectedError)
    assert rejected.code == 10054
    assert not isinstance(rejected, publisher.retryable_errors)
    wrong, _ = outcome(b'{"stream":"OTHER","seq":1}')
    assert isinstance(wrong, pnats.PublishRejectedError)
    assert outcome(b'{"stream":"EVENTS","seq":4,"duplicate":true}') == (None, True)
    assert outcome(b'{"stream":"EVENTS","seq":5}') == (None, False)


def make_persisted() -> es.PersistedEvent:
    return es.PersistedEvent(
        "Banking",
        "Account",
        "acc-1",
        "MoneyDeposited",
        b"{}",
        global_position=7,
        aggregate_version=1,
    )


@pytest.mark.parametrize("ordered", [True, False])
async def test_each_message_but_a_batch_first_names_its_predecessor_unless_unordered(
    sqlite_db: Database, nats_client: Client, names: Names, ordered: bool
) -> None:
    stored = await append_many(sqlite_db, 5)
    async with pnats.Publisher(
        nats_client, names.stream, subject_prefix=names.prefix, ordered=ordered
    ) as publisher:
        config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=3)
        await sqlite_db.processor(config).run(publisher)
    js = nats_client.jetstream()
    expected = []
    for sequence in range(1, 6):
        message = await js.get_msg(names.stream, sequence)
        assert message.headers is not None
        expected.append(message.headers.get("Nats-Expected-Last-Msg-Id"))
    if ordered:
        ids = [str(e.event_id) for e in stored]
        assert expected == [None, ids[0], ids[1], None, ids[3]]
    else:
        assert expected == [None] * 5
