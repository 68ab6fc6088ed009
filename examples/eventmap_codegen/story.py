"""The story ``python -m examples.eventmap_codegen`` tells, on any database.

1. An order stored by an older release, as ``OrderCreated`` v1, is loaded as v2.
2. A new order goes through its life: created, paid, shipped, delivered.
3. Two clerks pay the same order at once: ``Exact(version)`` lets one win.
4. The stream reads back as typed events, and every stored version is checked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TextIO

import pupsourcing_async
from pupsourcing_async import OptimisticConcurrencyError, es
from pupsourcing_async.eventmap import AggregateRepository

from .domain.events.v1.orders import OrderCreated as OrderCreatedV1
from .domain.events.v1.orders import OrderDelivered, OrderPaid, OrderShipped
from .domain.events.v2.orders import OrderCreated
from .domain.events.values import Address, Currency, LineItem, PaymentMethod
from .domain.order import Order
from .eventmap.event_mapping import REGISTRY, DomainEvent, from_es_events, to_order_created_v1

__all__ = ["run"]

START = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def run(url: str, out: TextIO) -> None:
    """Tell the story against the event store at ``url``."""
    async with pupsourcing_async.connect(url) as db:
        await db.migrate()
        orders = AggregateRepository(db.store, REGISTRY, Order)
        suffix = uuid.uuid4().hex[:8]
        legacy_id, new_id = f"order-legacy-{suffix}", f"order-{suffix}"

        # 1. What an older release wrote: OrderCreated v1, through its typed mapper.
        legacy = OrderCreatedV1("cust-7", [LineItem("mug", 2, Decimal("7.50"))], START)
        async with db.transaction() as tx:
            event = to_order_created_v1(Order.bounded_context, "Order", legacy_id, legacy)
            await db.store.append(tx, es.NoStream(), [event])
        async with db.transaction() as tx:
            old = await orders.load(tx, legacy_id)
        print(f"{legacy_id}: stored as OrderCreated v1, loaded as v2", file=out)
        print(f"  status {old.status}, total {old.total} {old.currency}", file=out)

        # 2. A new order, one transaction per command, each saved at Exact(version).
        async def handle(command: Callable[[Order], None]) -> int:
            async with db.transaction() as tx:
                order = await orders.load(tx, new_id)
                command(order)
                result = await orders.save(tx, order)
            assert result is not None
            print(f"{new_id}: {order.status:<9} -> version {result.to_version}", file=out)
            return result.to_version

        lines = [LineItem("teapot", 1, Decimal("24.90")), LineItem("cup", 4, Decimal("3.25"))]
        address = Address("Damrak 1", "Amsterdam", "NL")
        await handle(lambda o: o.create("cust-42", lines, Currency.EUR, at=START, ship_to=address))
        paid_at = START + timedelta(minutes=5)
        await handle(lambda o: o.pay(Decimal("37.90"), PaymentMethod.CARD, at=paid_at))
        await handle(lambda o: o.ship("PostNL", at=START + timedelta(days=1)))
        await handle(lambda o: o.deliver(at=START + timedelta(days=2), signed_by="J. Smit"))

        # 3. Two clerks load the legacy order and both try to take the payment.
        async with db.transaction() as tx:
            first = await orders.load(tx, legacy_id)
        async with db.transaction() as tx:
            second = await orders.load(tx, legacy_id)
        first.pay(first.total, PaymentMethod.CARD, at=START + timedelta(hours=1))
        second.pay(second.total, PaymentMethod.BANK_TRANSFER, at=START + timedelta(hours=1))
        async with db.transaction() as tx:
            await orders.save(tx, first)
        try:
            async with db.transaction() as tx:
                await orders.save(tx, second)
        except OptimisticConcurrencyError as err:
            print(
                f"{legacy_id}: second payment refused: expected {err.expected}, "
                f"found version {err.actual}",
                file=out,
            )

        # 4. The stream as typed events, then the registry against every stored version.
        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(tx, "Sales", "Order", new_id)
            stored = await db.store.event_types(tx)
        print(f"{new_id} as typed events:", file=out)
        for persisted, domain in zip(stream.events, from_es_events(stream.events), strict=True):
            name = f"{type(domain).__name__} v{persisted.event_version}"
            print(f"  {persisted.aggregate_version}. {name:<18} {_summary(domain)}", file=out)
        print(f"  stored payload of event 1: {stream.events[0].payload.decode()}", file=out)
        problems = REGISTRY.problems(stored)
        listed = ", ".join(f"{t} v{v}" for t, v in stored)
        print(f"stored event versions: {listed}", file=out)
        print(
            "every stored version can be read as the newest"
            if not problems
            else f"cannot read: {'; '.join(map(str, problems))}",
            file=out,
        )


def _summary(event: DomainEvent) -> str:
    match event:
        case OrderCreated(lines=lines, currency=currency, ship_to=ship_to):
            where = f", to {ship_to.city}" if ship_to else ""
            return f"{len(lines)} lines in {currency}{where}"
        case OrderCreatedV1(lines=lines):
            return f"{len(lines)} lines"
        case OrderPaid(amount=amount, method=method):
            return f"{amount} by {method}"
        case OrderShipped(carrier=carrier, tracking_id=tracking_id):
            return f"with {carrier}, tracking {tracking_id}"
        case OrderDelivered(signed_by=signed_by):
            return f"signed by {signed_by or 'nobody'}"
    raise AssertionError(f"unexpected event {event!r}")
