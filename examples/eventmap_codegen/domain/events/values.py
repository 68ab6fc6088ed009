"""Value types carried inside the order events."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Currency(StrEnum):
    """An ISO 4217 currency code."""

    EUR = "EUR"
    USD = "USD"


class PaymentMethod(StrEnum):
    """How an order was paid."""

    CARD = "card"
    BANK_TRANSFER = "bank_transfer"


@dataclass(frozen=True, slots=True)
class LineItem:
    """One product line of an order."""

    sku: str
    quantity: int
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        """Quantity times unit price."""
        return self.unit_price * self.quantity


@dataclass(frozen=True, slots=True)
class Address:
    """Where an order goes."""

    street: str
    city: str
    country: str
