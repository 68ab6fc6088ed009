"""The exception hierarchy. Every error the library raises derives from one root::

    PupsourcingError
    ├── InvalidEventError(ValueError)          bad input, nothing written
    ├── NoEventsError(ValueError)              append got an empty list
    ├── OptimisticConcurrencyError             the aggregate was not at the expected version
    │   └── DuplicateEventError                an event_id that is already stored
    ├── EventMappingError(LookupError)         unknown event type or version when decoding
    ├── StoreUnavailableError(ConnectionError) the database did not answer: safe to retry
    ├── TransactionRolledBackError             a deadlock or lock timeout rolled the whole
    │                                          transaction back: retry it from the start
    ├── SchemaError                            tables missing or unreadable
    ├── StoreError                             the database refused a statement for a
    │                                          reason the library does not foresee
    ├── UnsupportedURLError(ValueError)        connect() got a URL it cannot use
    └── ProjectionError                        a projection handler failed
        └── ProjectionStoppedError

The same failure raises the same type on every database. Driver errors are translated
at the adapter boundary and chained as ``__cause__``.

What each error means for the transaction it happened in:

=============================  =====================  ===================  ==================
error                          transaction usable?    rolled back?         retry can succeed?
=============================  =====================  ===================  ==================
InvalidEventError, NoEvents    yes (nothing written)  no                   not unchanged
OptimisticConcurrencyError     yes (nothing written)  no                   after a fresh read
DuplicateEventError            yes (nothing written)  no                   no: the ids exist
TransactionRolledBackError     no                     yes, all of it       yes, from the start
StoreUnavailableError          no                     unknown at COMMIT    yes (appends are
                                                      else yes             idempotent by id)
SchemaError                    no                     yes                  after migrate()
StoreError                     no                     yes                  no
=============================  =====================  ===================  ==================
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .es import ExpectedVersion

__all__ = [
    "DuplicateEventError",
    "EventMappingError",
    "InvalidEventError",
    "NoEventsError",
    "OptimisticConcurrencyError",
    "ProjectionError",
    "ProjectionStoppedError",
    "PupsourcingError",
    "SchemaError",
    "StoreError",
    "StoreUnavailableError",
    "TransactionRolledBackError",
    "UnsupportedURLError",
]


class PupsourcingError(Exception):
    """The root of every error this library raises."""


class InvalidEventError(PupsourcingError, ValueError):
    """An event failed validation before any SQL ran; nothing was written.

    Attributes:
        index: The position of the offending event in the appended sequence.
        field: The name of the offending field.
        reason: What is wrong with it.
    """

    def __init__(self, index: int, field: str, reason: str) -> None:
        self.index = index
        self.field = field
        self.reason = reason
        super().__init__(f"event {index}: {field} {reason}")


class NoEventsError(PupsourcingError, ValueError):
    """``append`` was given no events."""


class OptimisticConcurrencyError(PupsourcingError):
    """The aggregate was not at the expected version, so nothing was appended.

    The caller's transaction is no longer usable: roll it back and retry from a fresh read.

    Attributes:
        expected: The expected version the append asked for.
        actual: The aggregate's version as found (0 for no stream), or ``None`` when unknown.
        bounded_context: The aggregate's bounded context.
        aggregate_type: The aggregate's type.
        aggregate_id: The aggregate's id.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: ExpectedVersion,
        actual: int | None,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
    ) -> None:
        self.expected = expected
        self.actual = actual
        self.bounded_context = bounded_context
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        super().__init__(message)


class DuplicateEventError(OptimisticConcurrencyError):
    """An event with the same ``event_id`` is already stored; nothing was appended.

    Attributes:
        event_id: The duplicated id, when the database reported it.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: ExpectedVersion,
        actual: int | None,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        event_id: uuid.UUID | None,
    ) -> None:
        self.event_id = event_id
        super().__init__(
            message,
            expected=expected,
            actual=actual,
            bounded_context=bounded_context,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
        )


class EventMappingError(PupsourcingError, LookupError):
    """An event's type or version has no mapping.

    Attributes:
        event_type: The event type that could not be mapped.
        event_version: Its version.
    """

    def __init__(self, message: str, *, event_type: str, event_version: int | None) -> None:
        self.event_type = event_type
        self.event_version = event_version
        super().__init__(message)


class StoreUnavailableError(PupsourcingError, ConnectionError):
    """The database did not answer or dropped the connection; retrying is safe.

    The message never contains a password.

    Attributes:
        location: Where the database was expected, e.g. ``"127.0.0.1:5432/app"``.
    """

    def __init__(self, message: str, *, location: str) -> None:
        self.location = location
        super().__init__(message)


class TransactionRolledBackError(PupsourcingError):
    """The database rolled the whole transaction back (a deadlock, a lock wait that timed
    out, a serialization failure): nothing of it was kept, appends made earlier in it
    included.

    The transaction is gone: retry it from the start (read again, decide again, append
    again). A block of ``Database.transaction()`` that swallows this error does not commit:
    leaving the block raises it again.

    Attributes:
        reason: ``"deadlock"``, ``"lock timeout"`` or ``"serialization failure"``.
        location: Where the database is (no password).
    """

    def __init__(self, message: str, *, reason: str, location: str) -> None:
        self.reason = reason
        self.location = location
        super().__init__(message)


class SchemaError(PupsourcingError):
    """The event store's tables are missing or do not have the expected shape.

    Attributes:
        table: The table that is missing or unreadable, when known.
    """

    def __init__(self, message: str, *, table: str | None = None) -> None:
        self.table = table
        super().__init__(message)


class StoreError(PupsourcingError):
    """The database refused a statement for a reason the library does not foresee: a
    constraint, trigger or column of your own on its tables, a server limit, a permission.
    The transaction it happened in is failed; roll it back.

    Attributes:
        code: The database's own error code (SQLSTATE on PostgreSQL, the error number on
            MySQL, the result name on SQLite), when it gave one.
    """

    def __init__(self, message: str, *, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class UnsupportedURLError(PupsourcingError, ValueError):
    """``connect()`` was given a URL it cannot use: an unknown scheme, a malformed host or
    port, or an option the database's driver does not take. The message never contains
    a password.

    Attributes:
        scheme: The scheme found in the URL.
    """

    def __init__(self, message: str, *, scheme: str) -> None:
        self.scheme = scheme
        super().__init__(message)


class ProjectionError(PupsourcingError):
    """A projection failed while handling an event; its batch was rolled back.

    The handler's exception is ``__cause__``.

    Attributes:
        projection: The projection's name.
        global_position: The position of the event being handled, when known.
        event_type: The type of that event, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        projection: str,
        global_position: int | None = None,
        event_type: str | None = None,
    ) -> None:
        self.projection = projection
        self.global_position = global_position
        self.event_type = event_type
        super().__init__(message)


class ProjectionStoppedError(ProjectionError):
    """A projection's processor stopped and can no longer make progress."""
