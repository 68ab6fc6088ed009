"""What a database adapter provides beyond the six store methods.

:class:`~pupsourcing_async.database.Database` and the projection processor are written
once against these Protocols; each adapter module implements them for its driver.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from .._holes import PendingHole
from ..store import EventStore

__all__ = ["Backend", "GapSafeStore"]


class GapSafeStore(EventStore[Any], Protocol):
    """A store that can say which holes in the log its readers are waiting on."""

    def pending_holes(self) -> list[PendingHole]:
        """Holes below visible positions not yet proven dead or filled."""
        ...


class Backend(Protocol):
    """A connection pool for one database plus the store that reads and writes it."""

    @property
    def dialect(self) -> str:
        """``"postgres"``, ``"sqlite"`` or ``"mysql"``."""
        ...

    @property
    def location(self) -> str:
        """Where the database is, for messages; never includes a password."""
        ...

    @property
    def store(self) -> GapSafeStore:
        """The event store bound to this database's tables."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A connection inside a new transaction: committed when the block exits normally,
        rolled back when it raises or is cancelled."""
        ...

    async def migrate(self) -> None:
        """Create the store's tables and indexes if they do not exist."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...
