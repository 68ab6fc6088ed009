"""PostgreSQL adapter, on asyncpg.

``Store`` works on any asyncpg connection the caller holds in a transaction; users who
own a pool use it directly, everyone else goes through ``pupsourcing_async.connect``.
"""

from __future__ import annotations

from ...store import StoreConfig, default_store_config
from .backend import PostgresBackend, Processor
from .errors import is_unavailable, translated
from .sql import notify_channel
from .store import Connection, Store

__all__ = [
    "Connection",
    "PostgresBackend",
    "Processor",
    "Store",
    "StoreConfig",
    "default_store_config",
    "is_unavailable",
    "notify_channel",
    "translated",
]
