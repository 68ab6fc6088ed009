"""pupsourcing_async: asyncio-native event sourcing on PostgreSQL, SQLite and MySQL/MariaDB.

```python
import pupsourcing_async
from pupsourcing_async import es

async with pupsourcing_async.connect("sqlite:///app.db") as db:
    await db.migrate()
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [es.Event("Bank", "Account", "acc-1",
                                                           "AccountOpened", b"{}")])
```

Importing this package imports no database driver: each adapter loads its own when a URL
or adapter module asks for it.
"""

from __future__ import annotations

from . import es
from .database import Database, connect
from .errors import (
    DuplicateEventError,
    EventMappingError,
    InvalidEventError,
    NoEventsError,
    OptimisticConcurrencyError,
    ProjectionError,
    ProjectionStoppedError,
    PupsourcingError,
    SchemaError,
    StoreError,
    StoreUnavailableError,
    TransactionRolledBackError,
    UnsupportedURLError,
)
from .log import Logger
from .store import EventStore, StoreConfig, default_store_config

__version__ = "0.1.0"

__all__ = [
    "Database",
    "DuplicateEventError",
    "EventMappingError",
    "EventStore",
    "InvalidEventError",
    "Logger",
    "NoEventsError",
    "OptimisticConcurrencyError",
    "ProjectionError",
    "ProjectionStoppedError",
    "PupsourcingError",
    "SchemaError",
    "StoreConfig",
    "StoreError",
    "StoreUnavailableError",
    "TransactionRolledBackError",
    "UnsupportedURLError",
    "connect",
    "default_store_config",
    "es",
]
