"""Value types used inside events: not events themselves."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum, StrEnum


class Currency(StrEnum):
    """An ISO 4217 currency."""

    EUR = "EUR"
    USD = "USD"


class Priority(Enum):
    """How urgent an order is."""

    NORMAL = 1
    EXPRESS = 2


@dataclass(frozen=True, slots=True)
class Address:
    """A postal address."""

    street: str
    city: str
    country: str = "NL"


@dataclass(frozen=True, slots=True)
class LineItem:
    """One product line of an order."""

    sku: str
    quantity: int
    unit_price: Decimal
