"""Order events, version 1: the order's whole life, created to delivered."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from ..values import LineItem, PaymentMethod


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """A customer placed an order. Version 1 had no currency: every order was in euros."""

    customer_id: str
    lines: list[LineItem]
    placed_at: datetime


@dataclass(frozen=True, slots=True)
class OrderPaid:
    """The order was paid in full."""

    amount: Decimal
    method: PaymentMethod
    paid_at: datetime


@dataclass(frozen=True, slots=True)
class OrderShipped:
    """The order left the warehouse."""

    carrier: str
    tracking_id: UUID
    shipped_at: datetime


@dataclass(frozen=True, slots=True)
class OrderDelivered:
    """The order reached the customer."""

    delivered_at: datetime
    signed_by: str | None = None
