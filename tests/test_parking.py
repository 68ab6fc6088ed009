"""Projections that survive a bad event, on every backend: with ``OnFailure.PARK`` a
poison event is parked once and every other event is handled exactly once; parked events
are listed, retried once the handler is fixed, and reset with their projection; passing
troubles are retried, never parked; ``OnFailure.STOP`` behaves as before."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pupsourcing_async import (
    Database,
    ProjectionError,
    SchemaError,
    StoreUnavailableError,
    TransactionRolledBackError,
    es,
)
from pupsourcing_async.projection import OnFailure, ParkedEvent, ProcessorConfig, RunMode
from pupsourcing_async.projection.parking import MAX_ERROR_LENGTH, error_text

from .conftest import RawSQL, ReadModel, Recorder, append_many

PARK = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5, on_failure=OnFailure.PARK)


async def checkpoint(db: Database, name: str) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, name)


@dataclass
class Poisoned(Recorder):
    """A recorder that fails on every ``Poison`` event, counting its tries per position."""

    fail_on: str | None = "Poison"
    tries: dict[int, int] = field(default_factory=dict)
    message: str = "cannot handle Poison"

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if event.event_type == self.fail_on:
            self.tries[event.global_position] = self.tries.get(event.global_position, 0) + 1
            raise ValueError(self.message)
        await super().handle(tx, event)


async def poisoned_log(db: Database) -> tuple[list[es.PersistedEvent], list[es.PersistedEvent]]:
    """12 events, the 4th and the 9th of them poison (mid-batch with batches of 5); the
    good ones and the poison ones."""
    good: list[es.PersistedEvent] = []
    poison: list[es.PersistedEvent] = []
    for index in range(12):
        bad = index in (3, 8)
        stored = await append_many(db, 1, event_type="Poison" if bad else "MoneyDeposited")
        (poison if bad else good).extend(stored)
    return good, poison


async def test_a_poison_event_is_parked_once_and_every_other_event_handled_once(
    db: Database, read_model: ReadModel
) -> None:
    good, poison = await poisoned_log(db)
    projection = Poisoned(read_model)
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF, batch_size=5, on_failure=OnFailure.PARK, handler_attempts=3
    )
    await db.processor(config).run(projection)

    # The handler was tried 3 times on each poison event, never again.
    assert projection.tries == {e.global_position: 3 for e in poison}
    # The read model's primary key would have refused a second copy of any event.
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in good]
    assert await checkpoint(db, "recorder") == 12
    parked = await db.parked_events()
    assert [(p.checkpoint, p.global_position, p.event_id, p.event_type) for p in parked] == [
        ("recorder", e.global_position, e.event_id, "Poison") for e in poison
    ]
    assert {(p.error, p.attempts) for p in parked} == {("ValueError: cannot handle Poison", 3)}
    # Stored in UTC whatever the database: read back as the moment it was.
    now = datetime.now(UTC)
    assert all(abs(now - p.parked_at) < timedelta(minutes=5) for p in parked)
    assert await db.parked_events("recorder") == parked
    assert await db.parked_events("other") == []

    # Running again finds nothing to do: the parked events stay parked, once each.
    again = Poisoned(read_model)
    await db.processor(config).run(again)
    assert again.tries == {}
    assert await db.parked_events() == parked


async def test_retry_parked_handles_the_events_once_the_handler_is_fixed(
    db: Database, read_model: ReadModel
) -> None:
    good, poison = await poisoned_log(db)
    await db.processor(PARK).run(Poisoned(read_model))
    assert len(await db.parked_events("recorder")) == 2

    # Still broken: nothing is handled, each failure is counted with its error.
    broken = Poisoned(read_model, message="still broken")
    assert await db.processor(PARK).retry_parked(broken) == 0
    parked = await db.parked_events("recorder")
    assert [(p.global_position, p.attempts, p.error) for p in parked] == [
        (e.global_position, 2, "ValueError: still broken") for e in poison
    ]

    fixed = Recorder(read_model)  # handles Poison like any event
    assert await db.processor(PARK).retry_parked(fixed) == 2
    assert [e.global_position for e in fixed.seen] == [e.global_position for e in poison]
    assert await db.parked_events() == []
    rows = await read_model.rows()
    assert sorted(p for _, p in rows) == sorted(e.global_position for e in good + poison)
    assert await db.processor(PARK).retry_parked(fixed) == 0


async def test_two_retries_at_once_handle_each_parked_event_once(
    db: Database, read_model: ReadModel
) -> None:
    _, poison = await poisoned_log(db)
    await db.processor(PARK).run(Poisoned(read_model))

    @dataclass
    class SlowFix(Recorder):
        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            await super().handle(tx, event)
            await asyncio.sleep(0.05)  # hold the claim while the other retry tries it

    first, second = SlowFix(read_model), SlowFix(read_model)
    handled = await asyncio.gather(
        db.processor(PARK).retry_parked(first), db.processor(PARK).retry_parked(second)
    )
    assert sum(handled) == 2
    seen = sorted(e.global_position for e in first.seen + second.seen)
    assert seen == [e.global_position for e in poison]
    assert await db.parked_events() == []


async def test_stop_is_as_before_and_tries_handler_attempts_times(
    db: Database, read_model: ReadModel
) -> None:
    _, poison = await poisoned_log(db)
    projection = Poisoned(read_model)
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5, handler_attempts=2)
    assert config.on_failure is OnFailure.STOP
    with pytest.raises(ProjectionError) as caught:
        await db.processor(config).run(projection)
    assert caught.value.global_position == poison[0].global_position
    assert isinstance(caught.value.__cause__, ValueError)
    assert projection.tries == {poison[0].global_position: 2}
    assert await checkpoint(db, "recorder") == 0  # the first batch held the poison
    assert await read_model.rows() == []
    assert await db.parked_events() == []

    once = Poisoned(read_model)
    with pytest.raises(ProjectionError):
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=5)).run(once)
    assert once.tries == {poison[0].global_position: 1}


@pytest.mark.parametrize(
    "passing",
    [
        StoreUnavailableError("the database went away", location="db"),
        TransactionRolledBackError("deadlock", reason="deadlock", location="db"),
        ConnectionResetError("the downstream service blinked"),
    ],
    ids=["unavailable", "rolled back", "retryable"],
)
async def test_passing_troubles_are_retried_and_never_parked(
    db: Database, read_model: ReadModel, passing: Exception
) -> None:
    @dataclass
    class Blinking(Recorder):
        failures_left: int = 3
        retryable_errors: tuple[type[BaseException], ...] = (ConnectionResetError,)

        async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
            if event.global_position == 3 and self.failures_left:
                self.failures_left -= 1
                raise passing
            await super().handle(tx, event)

    stored = await append_many(db, 6)
    projection = Blinking(read_model)
    config = ProcessorConfig(
        run_mode=RunMode.ONE_OFF,
        batch_size=5,
        on_failure=OnFailure.PARK,
        retry_initial_delay=0.001,
    )
    await db.processor(config).run(projection)
    assert projection.failures_left == 0
    assert [p for _, p in await read_model.rows()] == [e.global_position for e in stored]
    assert await db.parked_events() == []


@dataclass
class BatchRecorder(Recorder):
    """A projection with ``handle_batch``: one bulk insert per batch, refused whole when
    any event of it is poison (as a multi-row INSERT would be)."""

    batches: list[list[int]] = field(default_factory=list)
    singles: list[int] = field(default_factory=list)

    async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
        self.batches.append([e.global_position for e in events])
        if any(e.event_type == "Poison" for e in events):
            raise ValueError("the bulk insert was refused")
        for event in events:
            await Recorder.handle(self, tx, event)

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        self.singles.append(event.global_position)
        if event.event_type == "Poison":
            raise ValueError("cannot handle Poison")
        await Recorder.handle(self, tx, event)


async def test_a_failed_batch_handler_is_replayed_event_by_event_to_park_the_culprit(
    db: Database, read_model: ReadModel
) -> None:
    good, poison = await poisoned_log(db)
    projection = BatchRecorder(read_model)
    await db.processor(PARK).run(projection)

    assert [p for _, p in await read_model.rows()] == [e.global_position for e in good]
    parked = await db.parked_events("recorder")
    assert [(p.global_position, p.attempts) for p in parked] == [
        (e.global_position, 1) for e in poison
    ]
    assert {p.error for p in parked} == {"ValueError: cannot handle Poison"}
    # Each batch with a poison event failed once whole, then ran event by event (the
    # culprit's one try, then the replay that parked it); the batch without one stayed
    # whole, and the batch after a parked one is whole again.
    assert projection.batches == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]
    assert projection.singles == [1, 2, 3, 4, 1, 2, 3, 5, 6, 7, 8, 9, 6, 7, 8, 10]


@dataclass
class Skipper:
    """A projection that writes nothing and fails on ``Poison`` events."""

    name: str

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if event.event_type == "Poison":
            raise ValueError("cannot handle Poison")


async def test_a_partition_parks_for_its_own_checkpoint_and_names_match_exactly(
    db: Database, read_model: ReadModel
) -> None:
    _, poison = await poisoned_log(db)
    owner = next(
        k
        for k in range(2)
        if ProcessorConfig(total_partitions=2).partition_strategy.should_process(
            poison[0].aggregate_id, k, 2
        )
    )
    for key in range(2):
        config = ProcessorConfig(
            run_mode=RunMode.ONE_OFF,
            batch_size=5,
            on_failure=OnFailure.PARK,
            partition_key=key,
            total_partitions=2,
        )
        await db.processor(config).run(Poisoned(read_model))
    # Another projection whose name starts the same parks its own.
    await db.processor(PARK).run(Skipper("recorder_p2_archive"))

    mine = await db.parked_events("recorder")
    assert {p.checkpoint for p in mine} == {f"recorder_p{owner}"}
    assert [p.global_position for p in mine] == [e.global_position for e in poison]
    assert {p.checkpoint for p in await db.parked_events("recorder_p2_archive")} == {
        "recorder_p2_archive"
    }
    assert len(await db.parked_events()) == 4

    # Resetting one projection drops its parked events, not the other's.
    assert await db.reset_projection("recorder") == 2
    assert await db.parked_events("recorder") == []
    assert len(await db.parked_events("recorder_p2_archive")) == 2


async def test_an_error_text_is_stored_as_one_line_every_database_takes(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 1, event_type="Poison")
    message = "nul\x00 tab\t line\nbreak é \udc80 " + "x" * 5000
    await db.processor(PARK).run(Poisoned(read_model, message=message))
    [parked] = await db.parked_events()
    assert parked.error == error_text(ValueError(message))
    assert parked.error.startswith("ValueError: nul\\x00 tab line break é \\udc80 xxx")
    assert len(parked.error) == MAX_ERROR_LENGTH
    assert parked.error.endswith("…")


async def test_parking_an_event_again_replaces_its_record(
    db: Database, read_model: ReadModel
) -> None:
    await append_many(db, 3, event_type="Poison")
    await db.processor(PARK).run(Poisoned(read_model))
    first = await db.parked_events()
    # The record stays when only the checkpoint goes (as an operator's own SQL might).
    async with db.transaction() as tx:
        await db.store.delete_checkpoints(tx, ["recorder"])
    await db.processor(PARK).run(Poisoned(read_model, message="other"))
    second = await db.parked_events()
    assert [p.global_position for p in second] == [p.global_position for p in first]
    assert {p.error for p in second} == {"ValueError: other"}


def test_a_parked_event_as_json_data() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    event_id = uuid.uuid4()
    parked = ParkedEvent("orders_p1", 7, event_id, "OrderPlaced", "ValueError: x", 2, moment)
    assert parked.as_dict() == {
        "checkpoint": "orders_p1",
        "global_position": 7,
        "event_id": str(event_id),
        "event_type": "OrderPlaced",
        "error": "ValueError: x",
        "attempts": 2,
        "parked_at": "2024-01-02T03:04:05+00:00",
    }


@pytest.mark.parametrize(
    ("options", "field_name"),
    [
        ({"on_failure": "park"}, "on_failure"),
        ({"handler_attempts": 0}, "handler_attempts"),
        ({"handler_attempts": True}, "handler_attempts"),
        ({"handler_attempts": 1.5}, "handler_attempts"),
    ],
)
def test_the_failure_options_refuse_bad_values(options: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValueError, match=field_name):
        ProcessorConfig(**options)


async def test_a_parked_record_whose_event_is_not_in_the_log_stays_parked(
    db: Database, read_model: ReadModel
) -> None:
    [stored] = await append_many(db, 1)
    # A record that names another event at that position (the log was rewritten by hand).
    stranger = dataclasses.replace(stored, event_id=uuid.uuid4())
    async with db.transaction() as tx:
        await db.store.parked.park(tx, "recorder", stranger, "ValueError: x", 1)
    assert await db.processor(PARK).retry_parked(Recorder(read_model)) == 0
    [parked] = await db.parked_events()
    assert parked.attempts == 2
    assert parked.error == (
        f"LookupError: event {stranger.event_id} is not at position {stored.global_position}"
    )
    assert await read_model.rows() == []


async def test_without_the_parked_table_health_says_so_and_parking_fails_clearly(
    db: Database, read_model: ReadModel, raw: RawSQL
) -> None:
    table = f"{db.store.config.events_table}_parked"
    async with db.transaction() as tx:
        await raw.execute(tx, f"DROP TABLE {table}")
    await append_many(db, 1, event_type="Poison")
    report = await db.health()
    assert report.reachable
    assert any(table in note and "migrate()" in note for note in report.schema_notes)
    with pytest.raises(SchemaError, match=table):
        await db.parked_events()
    with pytest.raises(SchemaError):
        await db.processor(PARK).run(Poisoned(read_model))
    await db.migrate()
    await db.processor(PARK).run(Poisoned(read_model))
    assert len(await db.parked_events()) == 1
