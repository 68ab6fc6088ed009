"""The order story: an order is created, paid, shipped and delivered."""

from __future__ import annotations

import json
from typing import Any

from pupsourcing_async import es

__all__ = ["CONTEXT", "ORDER", "order_created", "order_delivered", "order_paid", "order_shipped"]

# Not "Sales": the eventmap_codegen example stores its own Order payloads there.
CONTEXT = "Shop"
ORDER = "Order"


def _event(order_id: str, event_type: str, data: dict[str, Any]) -> es.Event:
    return es.Event(CONTEXT, ORDER, order_id, event_type, json.dumps(data).encode())


def order_created(order_id: str, customer: str, total_cents: int) -> es.Event:
    """``OrderCreated``."""
    return _event(order_id, "OrderCreated", {"customer": customer, "total": total_cents})


def order_paid(order_id: str, cents: int) -> es.Event:
    """``OrderPaid``."""
    return _event(order_id, "OrderPaid", {"amount": cents})


def order_shipped(order_id: str, carrier: str, tracking: str) -> es.Event:
    """``OrderShipped``."""
    return _event(order_id, "OrderShipped", {"carrier": carrier, "tracking": tracking})


def order_delivered(order_id: str) -> es.Event:
    """``OrderDelivered``."""
    return _event(order_id, "OrderDelivered", {})
