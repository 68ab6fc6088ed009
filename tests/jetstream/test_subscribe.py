"""Reading events back from JetStream: equal events, durable progress, explicit acks."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client

from pupsourcing_async import Database, es
from pupsourcing_async import nats as pnats
from pupsourcing_async.projection import ProcessorConfig, RunMode

from ..conftest import append_many, make_event, read_whole_log
from .conftest import Names, NatsServer

ONE_OFF = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=50)


async def publish_all(db: Database, client: Client, names: Names) -> None:
    async with pnats.Publisher(client, names.stream, subject_prefix=names.prefix) as publisher:
        await db.processor(ONE_OFF).run(publisher)


async def take(events: pnats.Subscription, count: int) -> list[es.PersistedEvent]:
    taken: list[es.PersistedEvent] = []
    async with asyncio.timeout(20):
        async for event in events:
            taken.append(event)
            if len(taken) == count:
                break
    return taken


async def test_a_subscription_yields_the_events_as_the_database_has_them(
    db: Database, nats_client: Client, names: Names
) -> None:
    async with db.transaction() as tx:
        await db.store.append(
            tx,
            es.NoStream(),
            [
                make_event(
                    "ümlaut id\n",
                    "Renamed. Again",
                    b"\x00binary\xff",
                    metadata=b'{"k": "v\\n", "n": [1, 2]}',
                    trace_id="t",
                    correlation_id="c r",
                    causation_id="%",
                ),
                make_event("ümlaut id\n", "Closed"),
            ],
        )
    await append_many(db, 5)
    stored = await read_whole_log(db)
    await publish_all(db, nats_client, names)
    async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
        assert await take(events, len(stored)) == stored


async def test_a_durable_subscription_resumes_after_what_it_acknowledged(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_many(sqlite_db, 6)
    await publish_all(sqlite_db, nats_client, names)
    async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
        # The loop breaks after the third: the block exits cleanly, so it is acknowledged.
        assert await take(events, 3) == stored[:3]
    async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
        assert await take(events, 3) == stored[3:]
    # Another durable name reads from the start on its own.
    async with pnats.subscribe(nats_client, names.stream, "other", idle_wait=0.2) as events:
        assert await take(events, 6) == stored


async def test_an_error_in_the_loop_gives_the_event_back(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_many(sqlite_db, 4)
    await publish_all(sqlite_db, nats_client, names)
    seen: list[int] = []
    with pytest.raises(LookupError):
        async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
            async for event in events:
                seen.append(event.global_position)
                if len(seen) == 2:
                    raise LookupError("the read model is down")
    assert seen == [1, 2]
    # The first was acknowledged when the second was asked for; the second comes again,
    # and so do those fetched but never handed out.
    async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
        assert await take(events, 3) == stored[1:]


async def test_a_filtered_subscription_sees_only_its_subjects(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    cards = await append_many(sqlite_db, 2, aggregate_type="Card")
    await append_many(sqlite_db, 3, aggregate_type="Account")
    cards += await append_many(sqlite_db, 1, aggregate_type="Card")
    await publish_all(sqlite_db, nats_client, names)
    only = f"{names.prefix}.Banking.Card.>"
    async with pnats.subscribe(
        nats_client, names.stream, "cards", subject=only, idle_wait=0.2
    ) as events:
        assert await take(events, 3) == cards
    with pytest.raises(ValueError, match="filters"):
        async with pnats.subscribe(nats_client, names.stream, "cards", idle_wait=0.2):
            pass


async def test_a_message_that_is_not_an_event_is_refused_and_left_unacknowledged(
    sqlite_db: Database, nats_client: Client, names: Names
) -> None:
    stored = await append_many(sqlite_db, 1)
    await publish_all(sqlite_db, nats_client, names)
    await nats_client.jetstream().publish(f"{names.prefix}.foreign", b"hello")
    async with pnats.subscribe(nats_client, names.stream, "reader", idle_wait=0.2) as events:
        assert await take(events, 1) == stored
        with pytest.raises(pnats.MessageFormatError) as caught:
            await events.__anext__()
        assert caught.value.sequence == 2
        assert caught.value.header == "Pup-Envelope"
        assert events.message is not None
        # A reader that decides to drop it says so explicitly.
        await events.message.term()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"ack_wait": 0}, "ack_wait"),
        ({"subject": "a.>.b"}, "filter"),
        ({"durable": "a.b"}, "stream name"),
    ],
)
def test_bad_subscription_options_are_refused(options: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"durable": "reader"}
    settings.update(options)
    durable = str(settings.pop("durable"))
    with pytest.raises(ValueError, match=message):
        pnats.subscribe(Client(), "EVENTS", durable, **settings)  # type: ignore[arg-type]


async def test_a_subscription_rides_out_a_nats_restart(
    sqlite_db: Database, private_nats: NatsServer, private_names: Names
) -> None:
    names = private_names
    client = await pnats.connect(private_nats.url, timeout=10, reconnect_wait=0.05)
    try:
        first = await append_many(sqlite_db, 3)
        await publish_all(sqlite_db, client, names)
        async with pnats.subscribe(client, names.stream, "reader", idle_wait=0.2) as events:
            assert await take(events, 3) == first
            await private_nats.restart()
            second = await append_many(sqlite_db, 2)
            await publish_all(sqlite_db, client, names)
            assert await take(events, 2) == second
    finally:
        await client.close()
