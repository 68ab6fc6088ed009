"""MySQL and MariaDB adapter, on aiomysql.

Store transactions run at READ COMMITTED with the session time zone at UTC; the pool
that ``connect`` opens sets both on every connection. REPEATABLE READ would make
appends to different new aggregates deadlock on gap locks, and would let a reader work
from a snapshot older than the proof that a hole is dead (such a reader then never
passes a hole rather than risk skipping an event).

Gap safety uses a registration fence, because MySQL exposes no snapshot horizon. Every
append first inserts and deletes a row in ``<events_table>_in_flight``; InnoDB keeps
the deleted row locked until the append's transaction ends, and the append draws its
positions only after registering. A reader that sees a hole registers too, after the
read: its registration id is the fence, larger than that of any append that could own
the hole. A later read first takes a ``NOWAIT`` locking read of every registration
below the fence. If no row there is locked, every such append has ended, and a hole
still missing in a snapshot taken afterwards was rolled back.
"""

from __future__ import annotations

from ...store import StoreConfig, default_store_config
from .backend import MysqlBackend, Processor
from .errors import error_code, is_unavailable, translated
from .sql import SESSION_SETUP
from .store import Connection, Store

__all__ = [
    "SESSION_SETUP",
    "Connection",
    "MysqlBackend",
    "Processor",
    "Store",
    "StoreConfig",
    "default_store_config",
    "error_code",
    "is_unavailable",
    "translated",
]
