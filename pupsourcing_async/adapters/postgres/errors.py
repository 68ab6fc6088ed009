"""Translating asyncpg's errors into the library's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import asyncpg.exceptions as pgerr

from ...errors import (
    PupsourcingError,
    SchemaError,
    StoreError,
    StoreUnavailableError,
    TransactionRolledBackError,
)
from .._shared import rolled_back

# Errors after which the connection is gone or the server refuses work for now.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    pgerr.PostgresConnectionError,
    pgerr.AdminShutdownError,
    pgerr.CrashShutdownError,
    pgerr.CannotConnectNowError,
    pgerr.TooManyConnectionsError,
    pgerr.IdleSessionTimeoutError,
    pgerr.IdleInTransactionSessionTimeoutError,
)

# Troubles that pass: retrying the batch is the answer.
TRANSIENT: tuple[type[BaseException], ...] = (
    StoreUnavailableError,
    TransactionRolledBackError,
    pgerr.DeadlockDetectedError,
    pgerr.SerializationError,
    pgerr.LockNotAvailableError,
)


_RELATION = re.compile(r'relation "([^"]+)" does not exist')


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the connection is gone or the server is not serving."""
    if isinstance(err, _UNAVAILABLE):
        return True
    # A connection the server dropped mid-query can be left between protocol states;
    # asyncpg then refuses the next query on it. Only a new connection helps.
    if isinstance(err, pgerr.InternalClientError) and "cannot switch to state" in str(err):
        return True
    # A pool releases a connection on its own when the server closes it; the proxy the
    # caller holds then refuses every call.
    message = str(err)
    return isinstance(err, asyncpg.InterfaceError) and (
        "closed" in message or "released back to the pool" in message
    )


@contextmanager
def translated(location: str) -> Iterator[None]:
    """Translate asyncpg's errors into this library's, naming ``location``."""
    try:
        yield
    except pgerr.UndefinedTableError as err:
        match = _RELATION.search(str(err))
        table = match.group(1) if match else None
        raise SchemaError(
            f"{err}: the event store's tables are missing; run `await db.migrate()` "
            "or `pupsourcing-async migrate --url URL`",
            table=table,
        ) from err
    except pgerr.UndefinedColumnError as err:
        raise SchemaError(
            f"{err}: the event store's tables do not have the expected columns; "
            "they may come from an older schema",
        ) from err
    except PupsourcingError:
        raise
    except Exception as err:
        raise translate(err, location) from err


def translate(err: Exception, location: str) -> Exception:
    """The library's error for a driver error (``err`` itself when it is none of the
    driver's)."""
    if is_unavailable(err):
        return StoreUnavailableError(
            f"lost the connection to PostgreSQL at {location}: {err}", location=location
        )
    for kind, reason in _ROLLED_BACK:
        if isinstance(err, kind):
            return rolled_back(reason, location, err)
    if isinstance(err, (asyncpg.PostgresError, asyncpg.DataError)):
        return StoreError(
            f"PostgreSQL at {location} refused a statement: {err}",
            code=getattr(err, "sqlstate", None),
        )
    return err


# Errors after which PostgreSQL has failed the whole transaction, and why.
_ROLLED_BACK: tuple[tuple[type[BaseException], str], ...] = (
    (pgerr.DeadlockDetectedError, "deadlock"),
    (pgerr.SerializationError, "serialization failure"),
    (pgerr.LockNotAvailableError, "lock timeout"),
    (pgerr.QueryCanceledError, "statement cancelled or timed out"),
    (pgerr.InFailedSQLTransactionError, "an earlier statement failed"),
)
