"""Tests of the bank's commands and its balances projection, against a real event store.

Each test gets ``event_db``: a fresh, migrated store (a SQLite file by default; the
database at ``PUPSOURCING_TEST_URL`` when set) whose tables no other test sees.
"""

from __future__ import annotations

import asyncio

import pytest

from pupsourcing_async import Database, OptimisticConcurrencyError, ProjectionError, es
from pupsourcing_async.testing import (
    capture_events,
    read_all_events,
    run_projections_until_caught_up,
)

from ..common.bank import Balances
from ..common.commands import (
    AccountExistsError,
    InsufficientFundsError,
    deposit,
    open_account,
    withdraw,
)

# Needed in pytest-asyncio's strict mode; harmless in auto mode.
pytestmark = pytest.mark.asyncio


async def test_opening_an_account_records_who_owns_it(event_db: Database) -> None:
    async with capture_events(event_db) as captured:
        await open_account(event_db, "acc-1", "Alice")
    assert captured.types == ["AccountOpened"]
    assert captured.payloads() == [{"owner": "Alice"}]
    assert captured.events[0].aggregate_version == 1


async def test_an_account_cannot_be_opened_twice(event_db: Database) -> None:
    await open_account(event_db, "acc-1", "Alice")
    with pytest.raises(AccountExistsError):
        await open_account(event_db, "acc-1", "Mallory")
    assert [e.event_type for e in await read_all_events(event_db)] == ["AccountOpened"]


async def test_a_withdrawal_the_balance_does_not_cover_records_nothing(event_db: Database) -> None:
    await open_account(event_db, "acc-1", "Alice")
    await deposit(event_db, "acc-1", 5_000)
    async with capture_events(event_db) as captured:
        with pytest.raises(InsufficientFundsError):
            await withdraw(event_db, "acc-1", 5_001)
    assert len(captured) == 0


async def test_concurrent_withdrawals_never_overdraw(event_db: Database) -> None:
    await open_account(event_db, "acc-1", "Alice")
    await deposit(event_db, "acc-1", 5_000)
    outcomes = await asyncio.gather(
        withdraw(event_db, "acc-1", 4_000),
        withdraw(event_db, "acc-1", 4_000),
        return_exceptions=True,
    )
    # One wins. The other either read the new balance (SQLite's writers take turns) or
    # lost the race for the version (PostgreSQL, MySQL).
    assert sum(isinstance(o, es.AppendResult) for o in outcomes) == 1
    assert (
        sum(isinstance(o, (InsufficientFundsError, OptimisticConcurrencyError)) for o in outcomes)
        == 1
    )


async def test_the_projection_keeps_balances(event_db: Database, balances: Balances) -> None:
    await open_account(event_db, "acc-1", "Alice")
    await open_account(event_db, "acc-2", "Bob")
    await deposit(event_db, "acc-1", 10_000)
    await withdraw(event_db, "acc-1", 2_500)
    await deposit(event_db, "acc-2", 700)

    await run_projections_until_caught_up(event_db, balances)

    rows = await balances.rows(event_db, ["acc-1", "acc-2"])
    assert rows == [("Alice", 7_500, 3), ("Bob", 700, 2)]


async def test_the_projection_picks_up_where_it_stopped(
    event_db: Database, balances: Balances
) -> None:
    await open_account(event_db, "acc-1", "Alice")
    await deposit(event_db, "acc-1", 1_000)
    await run_projections_until_caught_up(event_db, balances)
    await deposit(event_db, "acc-1", 500)

    await run_projections_until_caught_up(event_db, balances)

    assert await balances.rows(event_db, ["acc-1"]) == [("Alice", 1_500, 3)]


async def test_a_failing_handler_changes_nothing(event_db: Database, balances: Balances) -> None:
    await open_account(event_db, "acc-1", "Alice")
    # An event the projection cannot read: no "amount" in its payload.
    broken = es.Event("Banking", "Account", "acc-1", "MoneyDeposited", b"{}")
    async with event_db.transaction() as tx:
        await event_db.store.append(tx, es.Any(), [broken])

    with pytest.raises(ProjectionError) as failure:
        await run_projections_until_caught_up(event_db, balances)

    assert failure.value.projection == "balances"
    assert failure.value.global_position == 2
    assert isinstance(failure.value.__cause__, KeyError)
    # The batch rolled back: neither the read model nor the checkpoint moved.
    assert await balances.rows(event_db, ["acc-1"]) == []
    async with event_db.transaction() as tx:
        assert await event_db.store.get_checkpoint(tx, "balances") == 0
