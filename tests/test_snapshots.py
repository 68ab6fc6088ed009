"""Aggregate snapshots, on every backend: the snapshot store and the repository that uses it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from pupsourcing_async import Database, OptimisticConcurrencyError, SchemaError, es
from pupsourcing_async.eventmap import (
    AggregateRepository,
    EventRegistry,
    SnapshotAggregate,
)
from pupsourcing_async.snapshots import Snapshot, SnapshotStore, snapshots_table

from .conftest import RawSQL


@dataclass(frozen=True, slots=True)
class Deposited:
    amount: int


@dataclass(frozen=True, slots=True)
class Withdrawn:
    amount: int


REGISTRY = EventRegistry()
REGISTRY.register(Deposited)
REGISTRY.register(Withdrawn)


@dataclass(frozen=True, slots=True)
class AccountState:
    balance: int
    operations: int
    history: tuple[int, ...] = ()


class Account(SnapshotAggregate[AccountState]):
    bounded_context = "Banking"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.balance = 0
        self.operations = 0
        self.history: list[int] = []

    def deposit(self, amount: int) -> None:
        self.record(Deposited(amount))

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.record(Withdrawn(amount))

    def apply_deposited(self, event: Deposited) -> None:
        self.balance += event.amount
        self.operations += 1
        self.history.append(event.amount)

    def apply_withdrawn(self, event: Withdrawn) -> None:
        self.balance -= event.amount
        self.operations += 1
        self.history.append(-event.amount)

    def snapshot_state(self) -> AccountState:
        return AccountState(self.balance, self.operations, tuple(self.history))

    def restore_snapshot(self, state: AccountState) -> None:
        self.balance = state.balance
        self.operations = state.operations
        self.history = list(state.history)


class AccountV2(Account):
    """The same aggregate after its state format changed."""

    aggregate_type = "Account"
    snapshot_schema_version = 2


def facts(account: Account) -> tuple[int, int, int, list[int]]:
    return account.version, account.balance, account.operations, account.history


async def grow(
    db: Database, repository: AggregateRepository[Account], aggregate_id: str, amounts: list[int]
) -> Account:
    """Deposit each amount in a transaction of its own; the aggregate as last saved."""
    account = Account(aggregate_id)
    for amount in amounts:
        async with db.transaction() as tx:
            account = await repository.load(tx, aggregate_id)
            account.deposit(amount)
            await repository.save(tx, account)
    return account


async def stored_snapshot(db: Database, aggregate_id: str, schema_version: int = 1) -> Any:
    async with db.transaction() as tx:
        return await db.store.snapshots.load(tx, "Banking", "Account", aggregate_id, schema_version)


async def snapshot_rows(db: Database) -> int:
    async with db.transaction() as tx:
        rows = await RawSQL(db.dialect).fetch(
            tx, f"SELECT COUNT(*) FROM {snapshots_table(db.store.config)}"
        )
    return int(rows[0][0])


# --- loading --------------------------------------------------------------------------------


async def test_load_with_and_without_a_snapshot_gives_the_same_state(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=10)
    saved = await grow(db, accounts, "acc-1", list(range(1, 26)))
    async with db.transaction() as tx:
        account = await accounts.load(tx, "acc-1")
        account.withdraw(7)
        account.deposit(3)
        await accounts.save(tx, account)

    snapshot = await stored_snapshot(db, "acc-1")
    assert snapshot is not None
    assert (snapshot.aggregate_version, snapshot.snapshot_type, snapshot.schema_version) == (
        20,
        "AccountState",
        1,
    )
    assert saved.snapshot_version == 20
    async with db.transaction() as tx:
        restored = await accounts.load(tx, "acc-1")
        replayed = await accounts.load(tx, "acc-1", use_snapshot=False)
    assert restored.snapshot_version == 20
    assert replayed.snapshot_version == 0
    assert facts(restored) == facts(replayed)
    assert facts(restored) == (27, sum(range(1, 26)) - 4, 27, [*range(1, 26), -7, 3])


async def test_a_snapshot_is_taken_every_n_events_past_the_last(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=5)
    versions = []
    for amount in range(1, 13):
        await grow(db, accounts, "acc-2", [amount])
        snapshot = await stored_snapshot(db, "acc-2")
        versions.append(None if snapshot is None else snapshot.aggregate_version)
    assert versions == [None, None, None, None, 5, 5, 5, 5, 5, 10, 10, 10]

    # One save of many events snapshots at its end.
    async with db.transaction() as tx:
        account = await accounts.load(tx, "acc-2")
        for amount in range(7):
            account.deposit(amount)
        await accounts.save(tx, account)
    assert (await stored_snapshot(db, "acc-2")).aggregate_version == 19


async def test_without_snapshot_every_loads_use_snapshots_but_saves_take_none(
    db: Database,
) -> None:
    writer = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=3)
    reader = AggregateRepository(db.store, REGISTRY, Account)
    await grow(db, writer, "acc-3", [1, 2, 3])
    await grow(db, reader, "acc-3", [4, 5, 6, 7])
    assert (await stored_snapshot(db, "acc-3")).aggregate_version == 3
    async with db.transaction() as tx:
        account = await reader.load(tx, "acc-3")
    assert (account.snapshot_version, account.version, account.balance) == (3, 7, 28)


async def test_a_snapshot_never_hides_an_event_appended_after_it(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=4)
    await grow(db, accounts, "acc-4", [10, 20, 30, 40])
    assert (await stored_snapshot(db, "acc-4")).aggregate_version == 4
    # Appended by a writer that takes no snapshot: the plain store.
    later = REGISTRY.to_events("Banking", "Account", "acc-4", [Withdrawn(5), Deposited(1)])
    async with db.transaction() as tx:
        await db.store.append(tx, es.Exact(4), later)
    async with db.transaction() as tx:
        account = await accounts.load(tx, "acc-4")
    assert account.snapshot_version == 4
    assert facts(account) == (6, 96, 6, [10, 20, 30, 40, -5, 1])

    # And the next save continues from the head, not from the snapshot.
    async with db.transaction() as tx:
        account.deposit(4)
        result = await accounts.save(tx, account)
    assert result is not None
    assert result.to_version == 7


async def test_a_snapshot_above_the_aggregates_head_is_never_used(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account)
    await grow(db, accounts, "acc-5", [1, 2])
    bogus = Snapshot("Banking", "Account", "acc-5", 9, "AccountState", 1, b'{"balance":999}')
    async with db.transaction() as tx:
        assert await db.store.snapshots.save(tx, bogus)
    assert await stored_snapshot(db, "acc-5") is None
    async with db.transaction() as tx:
        account = await accounts.load(tx, "acc-5")
    assert (account.snapshot_version, account.version, account.balance) == (0, 2, 3)


async def test_a_snapshot_of_another_schema_version_is_ignored(db: Database) -> None:
    old = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=2)
    new = AggregateRepository(db.store, REGISTRY, AccountV2, snapshot_every=2)
    await grow(db, old, "acc-6", [5, 5, 5])
    # A version 1 snapshot that disagrees with the events: whoever applies it shows 1000.
    wrong = Snapshot(
        "Banking", "Account", "acc-6", 3, "AccountState", 1, b'{"balance":1000,"operations":3}'
    )
    async with db.transaction() as tx:
        assert await db.store.snapshots.save(tx, wrong)
        by_old = await old.load(tx, "acc-6")
        by_new = await new.load(tx, "acc-6")
    assert by_old.balance == 1000  # the test's premise: version 1 readers do use it
    assert (by_new.snapshot_version, by_new.version, by_new.balance) == (0, 3, 15)

    # The new release writes its own snapshots; the old ones stay for the old release.
    async with db.transaction() as tx:
        by_new.deposit(1)
        await new.save(tx, by_new)
    async with db.transaction() as tx:
        again = await new.load(tx, "acc-6")
        summary = await db.store.snapshots.summary(tx)
    assert (again.snapshot_version, again.balance) == (4, 16)
    assert [(s.schema_version, s.count) for s in summary] == [(1, 1), (2, 1)]
    assert (await stored_snapshot(db, "acc-6", 1)).aggregate_version == 3


async def test_an_undecodable_snapshot_is_ignored_with_a_log_line(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=2)
    await grow(db, accounts, "acc-7", [1, 2, 3])
    for payload in (b"\xff not json", b'{"balance":"many"}', b"[1, 2]"):
        async with db.transaction() as tx:
            await db.store.snapshots.purge(tx)
            await db.store.snapshots.save(
                tx, Snapshot("Banking", "Account", "acc-7", 3, "AccountState", 1, payload)
            )
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="pupsourcing_async.eventmap"):
            async with db.transaction() as tx:
                account = await accounts.load(tx, "acc-7")
        assert facts(account) == (3, 6, 3, [1, 2, 3])
        assert account.snapshot_version == 0
        [record] = caplog.records
        assert "ignoring a snapshot that cannot be restored" in record.getMessage()
        assert "Banking/Account/acc-7" in record.getMessage()


async def test_a_snapshot_of_another_type_is_ignored(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account)
    await grow(db, accounts, "acc-8", [4])
    other = Snapshot("Banking", "Account", "acc-8", 1, "LedgerState", 1, b'{"balance":50}')
    async with db.transaction() as tx:
        await db.store.snapshots.save(tx, other)
        account = await accounts.load(tx, "acc-8")
    assert (account.snapshot_version, account.balance) == (0, 4)


class Fragile(Account):
    """Restores half its state, then fails."""

    aggregate_type = "Account"

    def restore_snapshot(self, state: AccountState) -> None:
        self.balance = state.balance
        raise RuntimeError("cannot restore")


async def test_a_restore_that_fails_leaves_no_half_restored_state(db: Database) -> None:
    await grow(db, AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1), "acc-9", [7])
    async with db.transaction() as tx:
        account = await AggregateRepository(db.store, REGISTRY, Fragile).load(tx, "acc-9")
    assert facts(account) == (1, 7, 1, [7])


@pytest.mark.parametrize("other", ["ACC-10", "acc-10 "], ids=["case", "trailing-space"])
async def test_identities_compare_exactly(db: Database, other: str) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1)
    await grow(db, accounts, "acc-10", [1, 2])
    await grow(db, accounts, other, [100])
    async with db.transaction() as tx:
        one = await accounts.load(tx, "acc-10")
        two = await accounts.load(tx, other)
    assert (one.snapshot_version, one.balance) == (2, 3)
    assert (two.snapshot_version, two.balance) == (1, 100)


# --- saving ---------------------------------------------------------------------------------


async def test_snapshot_writes_roll_back_with_their_transaction(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1)
    account = Account("acc-11")
    with pytest.raises(RuntimeError, match="changed my mind"):
        async with db.transaction() as tx:
            account.deposit(5)
            await accounts.save(tx, account)
            assert await db.store.snapshots.load(tx, "Banking", "Account", "acc-11", 1)
            raise RuntimeError("changed my mind")
    assert await snapshot_rows(db) == 0
    async with db.transaction() as tx:
        assert (await db.store.read_aggregate_stream(tx, "Banking", "Account", "acc-11")).is_empty


class GatedSnapshots:
    """A snapshot store that, once a snapshot is written, waits to be let go."""

    def __init__(self, inner: SnapshotStore[Any]) -> None:
        self.inner = inner
        self.written = asyncio.Event()
        self.release = asyncio.Event()

    async def save(self, tx: Any, snapshot: Snapshot) -> bool:
        stored = await self.inner.save(tx, snapshot)
        self.written.set()
        await self.release.wait()
        return stored

    async def load(self, tx: Any, *args: Any) -> Snapshot | None:
        return await self.inner.load(tx, *args)

    async def summary(self, tx: Any) -> Any:
        return await self.inner.summary(tx)

    async def purge(self, tx: Any, **filters: Any) -> int:
        return await self.inner.purge(tx, **filters)


async def test_cancelling_a_save_leaves_no_half_state(db: Database) -> None:
    gated = GatedSnapshots(db.store.snapshots)
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=2, snapshots=gated)
    gated.release.set()
    account = await grow(db, accounts, "acc-12", [1])
    gated.release.clear()
    account.deposit(2)

    async def save() -> None:
        async with db.transaction() as tx:
            await accounts.save(tx, account)

    task = asyncio.create_task(save())
    await asyncio.wait_for(gated.written.wait(), 30)  # events and snapshot written, uncommitted
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert (account.version, account.pending_events) == (1, (Deposited(2),))
    assert await snapshot_rows(db) == 0
    async with db.transaction() as tx:
        stream = await db.store.read_aggregate_stream(tx, "Banking", "Account", "acc-12")
    assert stream.version == 1
    # The kept aggregate saves once the cancellation is over.
    gated.release.set()
    async with db.transaction() as tx:
        await accounts.save(tx, account)
    assert (await stored_snapshot(db, "acc-12")).aggregate_version == 2


async def test_concurrent_saves_of_one_aggregate_still_conflict(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1)
    await grow(db, accounts, "acc-13", [1])
    writers = 6
    for round_number in range(4):
        loaded: list[Account] = []
        for _ in range(writers):
            async with db.transaction() as tx:
                loaded.append(await accounts.load(tx, "acc-13"))
        for writer, account in enumerate(loaded):
            account.deposit(100 * round_number + writer)

        async def save(account: Account) -> bool:
            try:
                async with db.transaction() as tx:
                    await accounts.save(tx, account)
            except OptimisticConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(save(account) for account in loaded))
        assert outcomes.count(True) == 1, outcomes
        [winner] = [a for a, won in zip(loaded, outcomes, strict=True) if won]
        snapshot = await stored_snapshot(db, "acc-13")
        assert snapshot.aggregate_version == round_number + 2
        async with db.transaction() as tx:
            restored = await accounts.load(tx, "acc-13")
            replayed = await accounts.load(tx, "acc-13", use_snapshot=False)
        assert restored.snapshot_version == round_number + 2
        assert facts(restored) == facts(replayed) == facts(winner)
    assert await snapshot_rows(db) == 1


async def test_concurrent_writers_that_retry_lose_nothing(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=3)
    conflicts = 0

    async def writer(number: int) -> None:
        nonlocal conflicts
        for step in range(4):
            while True:
                try:
                    async with db.transaction() as tx:
                        account = await accounts.load(tx, "acc-14")
                        account.deposit(number * 10 + step)
                        await accounts.save(tx, account)
                    break
                except OptimisticConcurrencyError:
                    conflicts += 1

    await asyncio.gather(*(writer(number) for number in range(1, 7)))
    async with db.transaction() as tx:
        restored = await accounts.load(tx, "acc-14")
        replayed = await accounts.load(tx, "acc-14", use_snapshot=False)
    assert facts(restored) == facts(replayed)
    assert restored.version == 24
    assert sorted(restored.history) == sorted(n * 10 + s for n in range(1, 7) for s in range(4))
    assert restored.snapshot_version > 0


async def test_a_state_that_cannot_be_encoded_fails_the_save_before_writing(
    db: Database,
) -> None:
    class Naive(Account):
        aggregate_type = "Account"

        def snapshot_state(self) -> AccountState:
            return AccountState(self.balance, self.operations, ("x",))  # type: ignore[arg-type]

    class Wrong(Account):
        aggregate_type = "Account"

        def snapshot_state(self) -> AccountState:
            return {"balance": self.balance}  # type: ignore[return-value]

    for cls, error, message in (
        (Naive, TypeError, r"AccountState.history\[0\]: expected int"),
        (Wrong, TypeError, "Wrong.snapshot_state\\(\\) must return a AccountState, got dict"),
    ):
        repository: AggregateRepository[Account] = AggregateRepository(
            db.store, REGISTRY, cls, snapshot_every=1
        )
        account = cls("acc-15")
        account.deposit(1)
        with pytest.raises(error, match=message):
            async with db.transaction() as tx:
                await repository.save(tx, account)
        assert account.pending_events == (Deposited(1),)
    async with db.transaction() as tx:
        assert (await db.store.read_aggregate_stream(tx, "Banking", "Account", "acc-15")).is_empty
    assert await snapshot_rows(db) == 0


# --- the snapshot store ---------------------------------------------------------------------


async def test_the_store_keeps_the_newest_snapshot_per_schema_version(db: Database) -> None:
    snapshots = db.store.snapshots
    accounts = AggregateRepository(db.store, REGISTRY, Account)
    await grow(db, accounts, "acc-16", [1, 2, 3, 4])

    def make(version: int, payload: bytes, schema: int = 1) -> Snapshot:
        return Snapshot("Banking", "Account", "acc-16", version, "AccountState", schema, payload)

    before = datetime.now(UTC).replace(microsecond=0)
    async with db.transaction() as tx:
        assert await snapshots.save(tx, make(2, b"two"))
        assert await snapshots.save(tx, make(3, b"three"))
        assert not await snapshots.save(tx, make(1, b"one"))
        assert not await snapshots.save(tx, make(3, b"three again"))
        assert await snapshots.save(tx, make(1, b"one of v2", 2))
        newest = await snapshots.load(tx, "Banking", "Account", "acc-16", 1)
        other = await snapshots.load(tx, "Banking", "Account", "acc-16", 2)
        assert await snapshots.load(tx, "Banking", "Account", "acc-16", 3) is None
        assert await snapshots.load(tx, "Banking", "Account", "nobody", 1) is None
    assert newest is not None
    assert other is not None
    assert (newest.aggregate_version, newest.payload) == (3, b"three")
    assert (other.aggregate_version, other.payload) == (1, b"one of v2")
    assert newest.created_at is not None
    assert newest.created_at.tzinfo is not None
    assert before <= newest.created_at.replace(microsecond=0) <= datetime.now(UTC)


async def test_summary_and_purge(db: Database) -> None:
    snapshots = db.store.snapshots
    accounts = AggregateRepository(db.store, REGISTRY, Account)
    for name in ("a", "b", "c"):
        await grow(db, accounts, name, [1])
    rows = [
        ("Banking", "Account", "a", "AccountState", 1, b"x" * 10),
        ("Banking", "Account", "b", "AccountState", 1, b"x" * 30),
        ("Banking", "Account", "a", "AccountState", 2, b"x" * 5),
        ("Banking", "Account", "c", "LedgerState", 1, b"x"),
    ]
    async with db.transaction() as tx:
        assert await snapshots.summary(tx) == []
        for context, kind, name, snapshot_type, schema, payload in rows:
            await snapshots.save(
                tx, Snapshot(context, kind, name, 1, snapshot_type, schema, payload)
            )
        summary = await snapshots.summary(tx)
    assert [
        (
            s.aggregate_type,
            s.snapshot_type,
            s.schema_version,
            s.count,
            s.total_bytes,
            s.largest_bytes,
        )
        for s in summary
    ] == [
        ("Account", "AccountState", 1, 2, 40, 30),
        ("Account", "AccountState", 2, 1, 5, 5),
        ("Account", "LedgerState", 1, 1, 1, 1),
    ]
    assert all(s.oldest is not None and s.newest is not None for s in summary)
    assert all(s.oldest <= s.newest for s in summary if s.oldest and s.newest)

    async with db.transaction() as tx:
        assert await snapshots.purge(tx, snapshot_type="AccountState", schema_version=1) == 2
        assert await snapshots.purge(tx, aggregate_type="Nothing") == 0
        assert [s.count for s in await snapshots.summary(tx)] == [1, 1]
        assert await snapshots.purge(tx, bounded_context="Banking", schema_version=2) == 1
        assert await snapshots.purge(tx) == 1
        assert await snapshots.summary(tx) == []


async def test_a_database_not_migrated_for_snapshots_says_so(db: Database) -> None:
    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1)
    async with db.transaction() as tx:
        await RawSQL(db.dialect).execute(tx, f"DROP TABLE {snapshots_table(db.store.config)}")
    with pytest.raises(SchemaError, match="migrate"):
        async with db.transaction() as tx:
            await accounts.load(tx, "acc-17")
    account = Account("acc-17")
    account.deposit(1)
    with pytest.raises(SchemaError, match="migrate"):
        async with db.transaction() as tx:
            await accounts.save(tx, account)
    await db.migrate()
    async with db.transaction() as tx:
        await accounts.save(tx, account)
    assert (await stored_snapshot(db, "acc-17")).aggregate_version == 1
