"""Order events, version 2: orders carry their currency."""

from __future__ import annotations

from dataclasses import dataclass

from ..values import Currency, LineItem


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """An order was placed."""

    order_id: str
    customer_id: str
    lines: list[LineItem]
    currency: Currency
