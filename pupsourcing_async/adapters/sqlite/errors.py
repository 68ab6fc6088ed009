"""Translating sqlite3's errors into the library's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ...errors import PupsourcingError, SchemaError, StoreError, StoreUnavailableError
from .._shared import rolled_back


def is_busy(err: BaseException) -> bool:
    """Whether ``err`` is SQLite's "database is locked" (the busy timeout ran out)."""
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


@contextmanager
def translated(location: str) -> Iterator[None]:
    """Translate sqlite3's errors into this library's, naming ``location``."""
    try:
        yield
    except PupsourcingError:
        raise
    except sqlite3.OperationalError as err:
        message = str(err)
        if message.startswith("no such table"):
            raise SchemaError(
                f"{message}: the event store's tables are missing; run `await db.migrate()` "
                "or `pupsourcing-async migrate --url URL`",
                table=message.rpartition(" ")[2],
            ) from err
        if "no such column" in message or "has no column named" in message:
            raise SchemaError(
                f"{message}: the event store's tables do not have the expected columns"
            ) from err
        if is_busy(err):
            raise rolled_back(
                "lock timeout",
                location,
                f"another writer held the database past the busy timeout: {message}",
            ) from err
        if "unable to open" in message or "disk I/O error" in message:
            raise StoreUnavailableError(
                f"SQLite database {location} is unavailable: {message}", location=location
            ) from err
        raise _refused(err, location) from err
    except sqlite3.Error as err:
        raise _refused(err, location) from err
    except ValueError as err:
        # aiosqlite raises ValueError("no active connection") once it is closed.
        if "no active connection" in str(err):
            raise StoreUnavailableError(
                f"the connection to SQLite database {location} is closed", location=location
            ) from err
        raise


def _refused(err: sqlite3.Error, location: str) -> StoreError:
    return StoreError(
        f"SQLite database {location} refused a statement: {err}",
        code=getattr(err, "sqlite_errorname", None),
    )
