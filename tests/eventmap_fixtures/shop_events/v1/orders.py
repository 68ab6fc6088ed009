"""Order events, version 1."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..values import LineItem


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """An order was placed."""

    order_id: str
    customer_id: str
    lines: list[LineItem]


@dataclass(frozen=True, slots=True)
class OrderPaid:
    """An order was paid in full."""

    order_id: str
    amount: Decimal
    paid_at: datetime
