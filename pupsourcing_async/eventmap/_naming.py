"""Names derived from event types: ``OrderCreated`` -> ``order_created``."""

from __future__ import annotations

import re

__all__ = ["snake_case", "upcaster_name"]

# A boundary before an upper-case letter that follows a lower-case letter or digit, and
# inside a run of capitals before the last one (``HTTPRequest`` -> ``http_request``).
_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``OrderCreated`` -> ``order_created``, ``HTTPRequestSent`` -> ``http_request_sent``."""
    return _BOUNDARY.sub("_", name).lower()


def upcaster_name(event_type: str, from_version: int) -> str:
    """The conventional name of the upcaster from ``from_version`` to the next version."""
    return f"upcast_{snake_case(event_type)}_v{from_version}_to_v{from_version + 1}"
