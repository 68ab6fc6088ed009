"""Upcasters for the events of ``tests.eventmap_fixtures.shop_events``.

An upcaster turns the payload of one stored version into the payload of the next. This
file is yours: ``pupsourcing-async eventmap-gen`` adds a stub for every version step that
has none and never changes a function that is here. Replace a stub's body, then run the
generator again to register it.
"""

from __future__ import annotations

from typing import Any


def upcast_order_created_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """OrderCreated v1 -> v2: orders before v2 were all in euros."""
    return {**payload, "currency": "EUR"}


def upcast_order_created_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    """OrderCreated v2 -> v3: the v3 payload for a stored v2 payload."""
    raise NotImplementedError("write the OrderCreated v2 -> v3 upcaster")
