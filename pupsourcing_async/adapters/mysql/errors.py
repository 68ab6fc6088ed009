"""Translating aiomysql's errors into the library's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import pymysql.err

from ...errors import PupsourcingError, SchemaError, StoreError, StoreUnavailableError
from .._shared import rolled_back

# Error codes after which the connection is gone or the server refuses work for now.
_UNAVAILABLE_CODES = frozenset(
    {1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161, 1317, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
)
DUPLICATE_KEY = 1062
LOCK_ERRORS = frozenset({1205, 1213, 3572})  # lock wait timeout, deadlock, NOWAIT conflict
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205
_NO_SUCH_TABLE = 1146
_NO_SUCH_COLUMN = 1054
# The value does not fit its column (too long, out of range, a bad string, a failed CHECK):
# only a table with other column types than this library's can refuse a validated event.
DATA_ERRORS = frozenset({1264, 1292, 1366, 1406, 3140, 4025})


def error_code(err: BaseException) -> int | None:
    """The MySQL error number of a driver error, if it carries one."""
    if isinstance(err, pymysql.err.MySQLError) and err.args and isinstance(err.args[0], int):
        return err.args[0]
    return None


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` means the connection is gone or the server is not serving."""
    if isinstance(err, (OSError, pymysql.err.InterfaceError)):
        return True
    return error_code(err) in _UNAVAILABLE_CODES


@contextmanager
def translated(location: str) -> Iterator[None]:
    """Translate aiomysql's errors into this library's, naming ``location``."""
    try:
        yield
    except PupsourcingError:
        raise
    except pymysql.err.MySQLError as err:
        code = error_code(err)
        if code == _NO_SUCH_TABLE:
            match = re.search(r"Table '(?:[^'.]*\.)?([^']+)' doesn't exist", str(err))
            raise SchemaError(
                f"{err.args[-1]}: the event store's tables are missing; run "
                "`await db.migrate()` or `pupsourcing-async migrate --url URL`",
                table=match.group(1) if match else None,
            ) from err
        if code == _NO_SUCH_COLUMN:
            raise SchemaError(
                f"{err.args[-1]}: the event store's tables do not have the expected columns"
            ) from err
        if is_unavailable(err):
            raise StoreUnavailableError(
                f"lost the connection to MySQL at {location}: {err.args[-1]}", location=location
            ) from err
        if code == DEADLOCK:
            raise rolled_back("deadlock", location, err.args[-1]) from err
        if code in LOCK_ERRORS:
            raise rolled_back("lock timeout", location, err.args[-1]) from err
        raise StoreError(
            f"MySQL at {location} refused a statement: {err.args[-1]}",
            code=None if code is None else str(code),
        ) from err
    except OSError as err:
        raise StoreUnavailableError(
            f"lost the connection to MySQL at {location}: {err}", location=location
        ) from err
