"""Order events, version 3: orders know when they were placed, and more."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..values import Address, Currency, LineItem, Priority


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """An order was placed."""

    order_id: str
    customer_id: str
    lines: list[LineItem]
    currency: Currency
    placed_at: datetime
    ship_to: Address | None = None
    priority: Priority = Priority.NORMAL
    discount: float = 0.0
    gift: bool = False
    notes: dict[str, str] = field(default_factory=dict)
