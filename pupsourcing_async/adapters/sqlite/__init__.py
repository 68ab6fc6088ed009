"""SQLite adapter, on aiosqlite: the embedded default, no server needed.

SQLite runs one writer at a time. Every transaction begins with ``BEGIN IMMEDIATE``, so
a writer takes the write lock before it reads the aggregate's head, and concurrent
writers on other connections wait (up to the busy timeout) instead of failing with
"database is locked". A caller who brings their own connection must do the same.
"""

from __future__ import annotations

from ...store import StoreConfig, default_store_config
from .backend import SqliteBackend
from .errors import is_busy, translated
from .store import Store
from .timestamps import format_timestamp, parse_timestamp

__all__ = [
    "SqliteBackend",
    "Store",
    "StoreConfig",
    "default_store_config",
    "format_timestamp",
    "is_busy",
    "parse_timestamp",
    "translated",
]
