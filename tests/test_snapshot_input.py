"""Snapshots refuse bad input with clear errors, and write nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pupsourcing_async import Database, StoreConfig
from pupsourcing_async.eventmap import AggregateRepository, AggregateRoot, SnapshotAggregate
from pupsourcing_async.snapshots import Snapshot, snapshots_table

from .test_snapshots import REGISTRY, Account, AccountState, AccountV2, Deposited


def test_bad_snapshot_every_is_refused() -> None:
    store: Any = type("FakeStore", (), {"config": StoreConfig(), "snapshots": object()})()
    cases: list[tuple[Any, type[Exception], str]] = [
        (0, ValueError, "snapshot_every must be 1 or more"),
        (-5, ValueError, "got -5"),
        ("10", TypeError, "snapshot_every must be an int or None, got str"),
        (True, TypeError, "got bool"),
        (2.5, TypeError, "got float"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            AggregateRepository(store, REGISTRY, Account, snapshot_every=bad)


def test_snapshots_need_an_aggregate_that_takes_them() -> None:
    class Plain(AggregateRoot):
        bounded_context = "Banking"

    class NoMethods(SnapshotAggregate[AccountState]):
        bounded_context = "Banking"

    store: Any = type("FakeStore", (), {"config": StoreConfig(), "snapshots": object()})()
    bare: Any = type("BareStore", (), {"config": StoreConfig()})()
    with pytest.raises(TypeError, match="Plain takes no snapshots: subclass SnapshotAggregate"):
        AggregateRepository(store, REGISTRY, Plain, snapshot_every=10)
    with pytest.raises(TypeError, match="NoMethods must define snapshot_state"):
        AggregateRepository(store, REGISTRY, NoMethods)
    with pytest.raises(TypeError, match="BareStore keeps no snapshots"):
        AggregateRepository(bare, REGISTRY, Account)
    AggregateRepository(bare, REGISTRY, Plain)  # a plain aggregate needs none


def test_bad_state_classes_are_refused_when_the_aggregate_is_defined() -> None:
    with pytest.raises(TypeError, match=r"Broken\.snapshot_class must be a dataclass, got dict"):

        class Broken(SnapshotAggregate[dict[str, int]]):
            bounded_context = "Banking"

    @dataclass
    class Unstorable:
        values: set[int]

    with pytest.raises(TypeError, match=r"Unstored cannot snapshot its state: .*Unstorable.values"):

        class Unstored(SnapshotAggregate[Unstorable]):
            bounded_context = "Banking"

    versions: list[tuple[Any, type[Exception]]] = [
        (0, ValueError),
        ("2", TypeError),
        (2**31, ValueError),
    ]
    for bad, error in versions:
        with pytest.raises(error, match=r"BadVersion\.snapshot_schema_version"):

            class BadVersion(SnapshotAggregate[AccountState]):
                bounded_context = "Banking"
                snapshot_schema_version = bad

    with pytest.raises(TypeError, match=r"BadType\.snapshot_type must be a non-empty string"):

        class BadType(SnapshotAggregate[AccountState]):
            bounded_context = "Banking"
            snapshot_type = ""


def test_the_state_class_comes_from_the_type_argument_or_the_attribute() -> None:
    class Direct(SnapshotAggregate[AccountState]):
        bounded_context = "Banking"

    class Named(SnapshotAggregate[Any]):
        bounded_context = "Banking"
        snapshot_class = AccountState
        snapshot_type = "account-v1"

    assert (Direct.snapshot_class, Direct.snapshot_type) == (AccountState, "AccountState")
    assert (Named.snapshot_class, Named.snapshot_type) == (AccountState, "account-v1")
    assert (AccountV2.snapshot_type, AccountV2.snapshot_schema_version) == ("AccountState", 2)
    assert Account.snapshot_schema_version == 1


def test_bad_snapshots_and_filters_are_refused() -> None:
    good = ("Banking", "Account", "a", 1, "AccountState", 1, b"{}")
    Snapshot(*good)
    for index, bad, error, message in (
        (0, "", ValueError, "bounded_context must be a non-empty string"),
        (2, "x" * 256, ValueError, "aggregate_id must be a non-empty string of at most 255"),
        (2, "a\x00b", ValueError, "without NUL"),
        (1, 7, TypeError, "aggregate_type must be a str, got int"),
        (3, 0, ValueError, "aggregate_version must be between 1"),
        (3, "1", TypeError, "aggregate_version must be an int, got str"),
        (4, "", ValueError, "snapshot_type must be"),
        (5, 0, ValueError, "schema_version must be between 1"),
        (5, True, TypeError, "schema_version must be an int, got bool"),
        (6, "{}", TypeError, "payload must be bytes, got str"),
    ):
        values: list[Any] = list(good)
        values[index] = bad
        with pytest.raises(error, match=message):
            Snapshot(*values)


async def test_bad_arguments_to_the_snapshot_store_are_refused(db: Database) -> None:
    snapshots = db.store.snapshots
    async with db.transaction() as tx:
        with pytest.raises(TypeError, match="snapshot must be a Snapshot, got dict"):
            await snapshots.save(tx, {"payload": b""})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="aggregate_id must be a non-empty string"):
            await snapshots.load(tx, "Banking", "Account", "", 1)
        with pytest.raises(ValueError, match="schema_version must be between 1"):
            await snapshots.load(tx, "Banking", "Account", "a", 0)
        with pytest.raises(TypeError, match="schema_version must be an int, got str"):
            await snapshots.purge(tx, schema_version="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="snapshot_type must be a non-empty string"):
            await snapshots.purge(tx, snapshot_type="")


def test_a_table_named_like_a_helper_table_is_refused() -> None:
    with pytest.raises(ValueError, match="checkpoints_table 'ev_snapshots' would collide"):
        StoreConfig(events_table="ev", checkpoints_table="ev_snapshots")
    with pytest.raises(ValueError, match="aggregate_heads_table 'EV_IN_FLIGHT' would collide"):
        StoreConfig(events_table="ev", aggregate_heads_table="EV_IN_FLIGHT")
    assert snapshots_table(StoreConfig(events_table="billing_events")) == "billing_events_snapshots"


async def test_a_repository_saves_only_aggregates_of_its_class(db: Database) -> None:
    class Ledger(AggregateRoot):
        bounded_context = "Banking"
        aggregate_type = "Account"

        def apply_deposited(self, event: Deposited) -> None:
            pass

    accounts = AggregateRepository(db.store, REGISTRY, Account, snapshot_every=1)
    ledger = Ledger("acc-18")
    ledger.record(Deposited(1))
    with pytest.raises(TypeError, match="this repository saves Account aggregates, got Ledger"):
        async with db.transaction() as tx:
            await accounts.save(tx, ledger)  # type: ignore[arg-type]
    async with db.transaction() as tx:
        assert (await db.store.read_aggregate_stream(tx, "Banking", "Account", "acc-18")).is_empty
