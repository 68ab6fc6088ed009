"""The order aggregate: created, paid, shipped, delivered.

Commands (``create``, ``pay``, ``ship``, ``deliver``) check the rules and record events;
``apply_<event>`` methods are the only place the state changes, for new events and for
replayed ones alike. Old ``OrderCreated`` v1 events reach ``apply_order_created`` upcast
to v2, so only the newest classes need handling.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from pupsourcing_async.eventmap import AggregateRoot

from .events.v1.orders import OrderDelivered, OrderPaid, OrderShipped
from .events.v2.orders import OrderCreated
from .events.values import Address, Currency, LineItem, PaymentMethod

__all__ = ["Order", "OrderRuleError"]


class OrderRuleError(ValueError):
    """A command that the order's current state does not allow."""


class Order(AggregateRoot):
    """An order in the shop's ``Sales`` context."""

    bounded_context = "Sales"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.status = "new"
        self.customer_id = ""
        self.currency = Currency.EUR
        self.total = Decimal("0")
        self.tracking_id: uuid.UUID | None = None

    # --- commands -----------------------------------------------------------------

    def create(
        self,
        customer_id: str,
        lines: list[LineItem],
        currency: Currency,
        *,
        at: datetime,
        ship_to: Address | None = None,
    ) -> None:
        """Place the order."""
        if self.status != "new":
            raise OrderRuleError(f"order {self.aggregate_id} already exists")
        if not lines:
            raise OrderRuleError("an order needs at least one line")
        self.record(OrderCreated(customer_id, lines, at, currency, ship_to))

    def pay(self, amount: Decimal, method: PaymentMethod, *, at: datetime) -> None:
        """Pay the order in full."""
        if self.status != "created":
            raise OrderRuleError(f"order {self.aggregate_id} is {self.status}, not created")
        if amount != self.total:
            raise OrderRuleError(f"order {self.aggregate_id} costs {self.total}, not {amount}")
        self.record(OrderPaid(amount, method, at))

    def ship(self, carrier: str, *, at: datetime) -> None:
        """Hand the order to a carrier."""
        if self.status != "paid":
            raise OrderRuleError(f"order {self.aggregate_id} is {self.status}, not paid")
        self.record(OrderShipped(carrier, uuid.uuid4(), at))

    def deliver(self, *, at: datetime, signed_by: str | None = None) -> None:
        """Record the delivery."""
        if self.status != "shipped":
            raise OrderRuleError(f"order {self.aggregate_id} is {self.status}, not shipped")
        self.record(OrderDelivered(at, signed_by))

    # --- state changes --------------------------------------------------------------

    def apply_order_created(self, event: OrderCreated) -> None:
        self.status = "created"
        self.customer_id = event.customer_id
        self.currency = event.currency
        self.total = sum((line.total for line in event.lines), Decimal("0"))

    def apply_order_paid(self, event: OrderPaid) -> None:
        self.status = "paid"

    def apply_order_shipped(self, event: OrderShipped) -> None:
        self.status = "shipped"
        self.tracking_id = event.tracking_id

    def apply_order_delivered(self, event: OrderDelivered) -> None:
        self.status = "delivered"
