"""Each adapter's typed ``connect``: ``connect()`` for one database, with its own ``tx``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._url import parse_url
from ..errors import UnsupportedURLError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["check_dialect"]

_NAMES = {"postgres": "postgres", "sqlite": "sqlite", "mysql": "mysql"}


def check_dialect(url: str | AsyncEngine | Any, dialect: str) -> None:
    """Refuse a URL or engine for another database than ``dialect``'s adapter serves."""
    if isinstance(url, str):
        found = parse_url(url).dialect
        what = "URL"
    else:
        from ..sqlalchemy._open import engine_dialect

        found = engine_dialect(url)
        what = "engine"
    if found != dialect:
        raise UnsupportedURLError(
            f"pupsourcing_async.adapters.{_NAMES[dialect]}.connect() opens {dialect} "
            f"databases, got a {found} {what}: use its own adapter, or "
            "pupsourcing_async.connect()",
            scheme=found,
        )
