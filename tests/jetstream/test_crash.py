"""The publisher under faults, on every backend: eight writers racing with rollbacks, the
publisher process killed mid-batch ten times and restarted, NATS restarted once. The
stream must end up with every committed event exactly once, in position order, and a
reader of the stream must build the same read model as a projection of the database."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from pupsourcing_async import Database, es
from pupsourcing_async import nats as pnats
from pupsourcing_async.projection import ProcessorConfig, RunMode

from ..conftest import RawSQL, ReadModel, Recorder, make_event, read_whole_log
from .conftest import ROOT, NatsServer, delete_stream, stream_contents, wait_until

KINDS = [("Account", "MoneyDeposited"), ("Order.Line", "Line added"), ("Card>", "Ünïcode*")]


async def start_publisher(
    url: str, db: Database, server: NatsServer, stream: str, prefix: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.jetstream.publisher_process",
        "--url",
        url,
        "--prefix",
        db.store.config.events_table.removesuffix("_events"),
        "--nats",
        server.url,
        "--stream",
        stream,
        "--subject-prefix",
        prefix,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def last_published(client: Client, stream: str) -> int:
    """The global position of the stream's last message (0 when empty)."""
    js = client.jetstream()
    info = await js.stream_info(stream)
    if not info.state.messages:
        return 0
    message = await js.get_msg(stream, info.state.last_seq)
    assert message.headers is not None
    return int(message.headers["Pup-Global-Position"])


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


async def second_read_model(db: Database, read_model: ReadModel) -> ReadModel:
    table = read_model.table.replace("_read_model", "_from_nats")
    async with db.transaction() as tx:
        await RawSQL(db.dialect).execute(
            tx,
            f"CREATE TABLE {table} (event_id VARCHAR(64) PRIMARY KEY, "
            "aggregate_id VARCHAR(255) NOT NULL, global_position BIGINT NOT NULL)",
        )
    return ReadModel(db, table)


async def test_killed_publishers_and_a_nats_restart_leave_each_event_once_in_order(
    db: Database, url: str, read_model: ReadModel, private_nats: NatsServer
) -> None:
    stream, prefix = f"CRASH{random.randrange(10**9)}", "crash"
    client = await pnats.connect(private_nats.url, timeout=10, reconnect_wait=0.05)
    committed: set[str] = set()
    writing = asyncio.Event()
    rng = random.Random(17)

    async def writer(number: int) -> None:
        for n in range(200):
            if writing.is_set():
                return
            kind, event_type = KINDS[(number + n) % len(KINDS)]
            aggregate = f"w{number}-{n % 3}"
            events = [make_event(aggregate, event_type, aggregate_type=kind)]
            if number % 2:
                events.append(make_event(aggregate, "Second", aggregate_type=kind))
            try:
                async with db.transaction() as tx:
                    await db.store.append(tx, es.Any(), events)
                    await asyncio.sleep(rng.uniform(0.001, 0.004))
                    if rng.random() < 0.1:
                        raise LookupError("roll back")
            except LookupError:
                continue
            committed.update(str(e.event_id) for e in events)
            await asyncio.sleep(rng.uniform(0.02, 0.06))

    def beyond(position: int) -> Callable[[], Awaitable[bool]]:
        async def published_more() -> bool:
            return await published_position(client, stream) > position

        return published_more

    writers = asyncio.gather(*(writer(n) for n in range(8)))
    mid_batch = 0
    try:
        for round_number in range(10):
            process = await start_publisher(url, db, private_nats, stream, prefix)
            try:
                await wait_until(beyond(await published_position(client, stream)), within=30)
                if round_number == 5:
                    # NATS goes away under a running publisher and comes back.
                    await private_nats.restart()
                    await wait_until(beyond(await published_position(client, stream)), within=30)
                await asyncio.sleep(rng.uniform(0, 0.05))
            finally:
                process.send_signal(signal.SIGKILL)
                await process.wait()
            if await published_position(client, stream) > await checkpoint(db, "nats_publisher"):
                mid_batch += 1  # killed after publishing, before its checkpoint
        writing.set()
        await writers
    finally:
        writing.set()
        await asyncio.gather(writers, return_exceptions=True)

    try:
        # A last publisher, in this process, finishes the job.
        async with pnats.Publisher(client, stream, subject_prefix=prefix) as publisher:
            await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=200)).run(
                publisher
            )
        contents = await stream_contents(client, stream)
        ids = [str(event.event_id) for _, event in contents]
        assert len(ids) == len(set(ids)), "an event is in the stream twice"
        assert set(ids) == committed
        positions = [event.global_position for _, event in contents]
        assert positions == sorted(positions)
        by_subject: dict[str, list[int]] = defaultdict(list)
        for subject, event in contents:
            by_subject[subject].append(event.global_position)
        assert len(by_subject) == len(KINDS) * 2
        for subject_positions in by_subject.values():
            assert subject_positions == sorted(subject_positions)
        assert [event for _, event in contents] == await read_whole_log(db)
        # Most kills landed between a batch's acknowledgements and its commit.
        assert mid_batch >= 5, mid_batch

        # The same handler builds the same read model from either source.
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Recorder(read_model))
        from_nats = await second_read_model(db, read_model)
        await consume(db, client, stream, Recorder(from_nats, name="from_nats"), len(ids))
        assert await from_nats.rows() == await read_model.rows()
        assert len(await from_nats.rows()) == len(committed)
    finally:
        await delete_stream(client, stream)
        await client.close()


async def published_position(client: Client, stream: str) -> int:
    """:func:`last_published` once JetStream answers (0 while the stream is missing)."""
    found: list[int] = []

    async def answered() -> bool:
        try:
            found.append(await last_published(client, stream))
        except nats.js.errors.NotFoundError:
            found.append(0)
        except nats.errors.Error:
            return False  # NATS restarting
        return True

    await wait_until(answered, within=30)
    return found[-1]


async def consume(
    db: Database, client: Client, stream: str, projection: Recorder, count: int
) -> None:
    """Run ``projection`` on the stream's events, each in a transaction that also keeps
    how far it got, skipping what a redelivery brings again."""
    handled = 0
    async with pnats.subscribe(client, stream, "read-model", idle_wait=0.2) as events:
        async with asyncio.timeout(60):
            async for event in events:
                async with db.transaction() as tx:
                    done = await db.store.get_checkpoint(tx, projection.name)
                    if event.global_position > done:
                        await projection.handle(tx, event)
                        await db.store.update_checkpoint(tx, projection.name, event.global_position)
                handled += 1
                if handled == count:
                    break
