"""The SQLite adapter's typed ``connect``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from ... import database
from ...connections import SqliteConnection
from ...database import Connecting
from ...store import StoreConfig
from .._connect import check_dialect

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
) -> Connecting[SqliteConnection]:
    """``pupsourcing_async.connect()`` for SQLite only, typed: its ``tx`` is
    an aiosqlite connection.

    Raises:
        UnsupportedURLError: ``url`` (or the engine) is for another database.
    """
    check_dialect(url, "sqlite")
    return cast(
        "Connecting[SqliteConnection]",
        database.connect(
            url,
            store_config=store_config,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            pool_options=pool_options,
        ),
    )
