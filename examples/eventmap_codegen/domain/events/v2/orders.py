"""Order events, version 2: orders carry a currency and may name a delivery address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..values import Address, Currency, LineItem


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """A customer placed an order."""

    customer_id: str
    lines: list[LineItem]
    placed_at: datetime
    currency: Currency
    ship_to: Address | None = None
