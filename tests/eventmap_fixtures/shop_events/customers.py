"""Customer events: outside any v<N> package, so version 1."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from uuid import UUID

from .values import Address


@dataclass(frozen=True, slots=True)
class CustomerRegistered:
    """A customer signed up."""

    customer_id: UUID
    email: str
    address: Address
    birthday: date | None = None
    tags: tuple[str, ...] = ()
    preferences: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _AuditNote:
    """Private: not an event."""

    text: str
