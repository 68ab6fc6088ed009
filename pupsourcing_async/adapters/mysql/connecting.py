"""The MySQL adapter's typed ``connect``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ... import database
from ...database import Connecting
from ...store import StoreConfig
from .._connect import check_dialect
from .store import Connection

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["connect"]


def connect(
    url: str | AsyncEngine,
    *,
    store_config: StoreConfig | None = None,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    pool_options: Mapping[str, Any] | None = None,
) -> Connecting[Connection]:
    """``pupsourcing_async.connect()`` for MySQL and MariaDB only, typed: its ``tx`` is
    an aiomysql connection, typed by the
    ``Connection`` Protocol.

    Raises:
        UnsupportedURLError: ``url`` (or the engine) is for another database.
    """
    check_dialect(url, "mysql")
    return cast(
        "Connecting[Connection]",
        database.connect(
            url,
            store_config=store_config,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            pool_options=pool_options,
        ),
    )
