"""Aggregate roots and the repository that replays and saves them, on every backend."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from pupsourcing_async import Database, OptimisticConcurrencyError, es
from pupsourcing_async.eventmap import AggregateRepository, AggregateRoot, EventRegistry

AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OrderCreatedV1:
    customer: str


@dataclass(frozen=True, slots=True)
class OrderCreated:
    customer: str
    currency: str


@dataclass(frozen=True, slots=True)
class OrderPaid:
    amount: Decimal


@dataclass(frozen=True, slots=True)
class OrderShipped:
    carrier: str


@dataclass(frozen=True, slots=True)
class OrderDelivered:
    at: datetime


REGISTRY = EventRegistry()
REGISTRY.register(OrderCreatedV1, event_type="OrderCreated", event_version=1)
REGISTRY.register(OrderCreated, event_version=2)
REGISTRY.register(OrderPaid)
REGISTRY.register(OrderShipped)
REGISTRY.register(OrderDelivered)


@REGISTRY.register_upcaster("OrderCreated", 1)
def _add_currency(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "currency": "EUR"}


class Order(AggregateRoot):
    bounded_context = "Shop"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = "new"
        self.customer = ""
        self.currency = ""
        self.history: list[str] = []

    def create(self, customer: str) -> None:
        if self.status != "new":
            raise ValueError("exists")
        self.record(OrderCreated(customer, "EUR"))

    def pay(self, amount: Decimal) -> None:
        if self.status != "created":
            raise ValueError(f"cannot pay a {self.status} order")
        self.record(OrderPaid(amount))

    def ship(self, carrier: str) -> None:
        self.record(OrderShipped(carrier))

    def deliver(self) -> None:
        self.record(OrderDelivered(AT))

    def apply_order_created(self, event: OrderCreated) -> None:
        self.status, self.customer, self.currency = "created", event.customer, event.currency
        self.history.append("created")

    def apply_order_paid(self, event: OrderPaid) -> None:
        self.status = "paid"
        self.history.append(f"paid {event.amount}")

    def apply_order_shipped(self, event: OrderShipped) -> None:
        self.status = "shipped"
        self.history.append(f"shipped with {event.carrier}")

    def apply_order_delivered(self, event: OrderDelivered) -> None:
        self.status = "delivered"
        self.history.append("delivered")


class MatchingOrder(AggregateRoot):
    """Applies events with ``match`` instead of ``apply_*`` methods."""

    bounded_context = "Shop"
    aggregate_type = "Order"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.seen: list[str] = []

    def apply(self, event: object) -> None:
        match event:
            case OrderCreated(customer=customer):
                self.seen.append(f"created for {customer}")
            case OrderCreatedV1(customer=customer):
                self.seen.append(f"created v1 for {customer}")
            case OrderPaid(amount=amount):
                self.seen.append(f"paid {amount}")
            case _:
                self.seen.append(type(event).__name__)


async def test_an_order_lives_through_created_paid_shipped_delivered(db: Database) -> None:
    orders = AggregateRepository(db.store, REGISTRY, Order)
    async with db.transaction() as tx:
        order = await orders.load(tx, "order-1")
        assert order.version == 0
        assert order.status == "new"
        order.create("ann")
        order.pay(Decimal("9.90"))
        assert list(order.pending_events) == [
            OrderCreated("ann", "EUR"),
            OrderPaid(Decimal("9.90")),
        ]
        result = await orders.save(tx, order, causation_id="cmd-1", metadata={"by": "test"})
    assert result is not None
    assert (result.from_version, result.to_version) == (0, 2)
    assert order.version == 2
    assert order.pending_events == ()

    async with db.transaction() as tx:
        order = await orders.load(tx, "order-1")
        assert (order.version, order.status, order.customer) == (2, "paid", "ann")
        order.ship("DHL")
        order.deliver()
        await orders.save(tx, order)
    async with db.transaction() as tx:
        loaded = await orders.load(tx, "order-1")
        stream = await db.store.read_aggregate_stream(tx, "Shop", "Order", "order-1")
    assert loaded.version == 4
    assert loaded.history == ["created", "paid 9.90", "shipped with DHL", "delivered"]
    assert [(e.event_type, e.event_version) for e in stream] == [
        ("OrderCreated", 2),
        ("OrderPaid", 1),
        ("OrderShipped", 1),
        ("OrderDelivered", 1),
    ]
    assert stream.events[0].causation_id == "cmd-1"
    assert json.loads(stream.events[0].metadata or b"null") == {"by": "test"}
    assert REGISTRY.from_events(stream.events) == [
        OrderCreated("ann", "EUR"),
        OrderPaid(Decimal("9.90")),
        OrderShipped("DHL"),
        OrderDelivered(AT),
    ]


async def test_a_stale_save_raises_and_keeps_its_events(db: Database) -> None:
    orders = AggregateRepository(db.store, REGISTRY, Order)
    async with db.transaction() as tx:
        order = await orders.load(tx, "order-2")
        order.create("bob")
        await orders.save(tx, order)

    async with db.transaction() as tx:
        first = await orders.load(tx, "order-2")
    async with db.transaction() as tx:
        second = await orders.load(tx, "order-2")
    first.pay(Decimal(1))
    second.pay(Decimal(2))
    async with db.transaction() as tx:
        await orders.save(tx, first)
    with pytest.raises(OptimisticConcurrencyError) as caught:
        async with db.transaction() as tx:
            await orders.save(tx, second)
    assert caught.value.expected == es.Exact(1)
    assert caught.value.actual == 2
    assert second.version == 1
    assert second.pending_events == (OrderPaid(Decimal(2)),)

    async with db.transaction() as tx:
        fresh = await orders.load(tx, "order-2")
    assert (fresh.version, fresh.history) == (2, ["created", "paid 1"])
    with pytest.raises(ValueError, match="cannot pay a paid order"):
        fresh.pay(Decimal(2))


async def test_two_new_aggregates_with_one_id_conflict(db: Database) -> None:
    orders = AggregateRepository(db.store, REGISTRY, Order)
    one, two = Order("order-3"), Order("order-3")
    one.create("ann")
    two.create("bob")
    async with db.transaction() as tx:
        await orders.save(tx, one)
    with pytest.raises(OptimisticConcurrencyError):
        async with db.transaction() as tx:
            await orders.save(tx, two)


async def test_old_versions_are_replayed_upcast_or_as_stored(db: Database) -> None:
    legacy = REGISTRY.to_event("Shop", "Order", "order-4", OrderCreatedV1("cid"))
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [legacy])
    async with db.transaction() as tx:
        upcast = await AggregateRepository(db.store, REGISTRY, Order).load(tx, "order-4")
        exact = await AggregateRepository(db.store, REGISTRY, MatchingOrder, latest=False).load(
            tx, "order-4"
        )
        newest = await AggregateRepository(db.store, REGISTRY, MatchingOrder).load(tx, "order-4")
    assert (upcast.status, upcast.currency, upcast.version) == ("created", "EUR", 1)
    assert exact.seen == ["created v1 for cid"]
    assert newest.seen == ["created for cid"]


async def test_saving_nothing_appends_nothing(db: Database) -> None:
    orders = AggregateRepository(db.store, REGISTRY, Order)
    async with db.transaction() as tx:
        assert await orders.save(tx, Order("order-5")) is None
        assert (await db.store.read_aggregate_stream(tx, "Shop", "Order", "order-5")).is_empty


def test_an_event_without_an_apply_method_is_a_type_error() -> None:
    order = Order("order-6")
    with pytest.raises(TypeError, match=r"Order cannot apply OrderCreatedV1: define apply_order"):
        order.record(OrderCreatedV1("x"))
    assert order.pending_events == ()


def test_aggregate_type_defaults_to_the_class_name() -> None:
    assert Order.aggregate_type == "Order"
    assert MatchingOrder.aggregate_type == "Order"
    assert repr(Order("o-7")) == "<Order o-7 v0>"
    with pytest.raises(ValueError, match="aggregate_id must be a non-empty string"):
        Order("")


def test_the_repository_refuses_what_it_cannot_build() -> None:
    class NoContext(AggregateRoot):
        pass

    no_store: Any = None
    with pytest.raises(TypeError, match="NoContext must set the bounded_context attribute"):
        AggregateRepository(no_store, REGISTRY, NoContext)
    with pytest.raises(TypeError, match="aggregate_class must subclass AggregateRoot"):
        AggregateRepository(no_store, REGISTRY, dict)  # type: ignore[type-var]
