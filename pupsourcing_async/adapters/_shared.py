"""What every adapter shares: argument checks, conflict errors, leases and wake-ups."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .. import es
from .._signals import Signal, Watch
from ..errors import DuplicateEventError, OptimisticConcurrencyError, TransactionRolledBackError
from ..log import Logger

__all__ = [
    "AppendTracker",
    "LocalNews",
    "NoLease",
    "as_bytes",
    "check_limit",
    "checkpoint_names",
    "check_position",
    "check_projection_name",
    "check_stream_args",
    "check_text",
    "conflict_error",
    "lease_key",
    "lease_name",
    "local_news",
    "refused_commit",
    "replayed",
    "rolled_back",
    "wait_for_lock",
]

MAX_BIGINT = 2**63 - 1


def as_bytes(value: bytes | str | None) -> bytes | None:
    """A stored payload or metadata as bytes: a driver, or a writer other than this
    library, may hand back text where the library stores bytes."""
    return value.encode() if isinstance(value, str) else value


def check_position(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a position or version (0 to 2**63-1)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BIGINT:
        raise ValueError(f"{name} must be an int between 0 and 2**63-1, got {value!r}")


def check_limit(limit: object) -> None:
    """Raise ``ValueError`` unless ``limit`` is a positive int."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")


def check_text(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is text every database stores as a key: a
    non-empty string of at most 255 characters, UTF-8 encodable, without NUL."""
    if (
        not isinstance(value, str)
        or not value
        or len(value) > es.MAX_TEXT_LENGTH
        or "\x00" in value
        or not (value.isascii() or _encodable(value))
    ):
        raise ValueError(
            f"{name} must be a non-empty string of at most {es.MAX_TEXT_LENGTH} characters, "
            f"UTF-8 encodable and without NUL, got {value!r}"
        )


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_projection_name(name: object) -> None:
    """Raise ``ValueError`` unless ``name`` can key a checkpoint row."""
    check_text("projection_name", name)


def check_stream_args(
    bounded_context: object,
    aggregate_type: object,
    aggregate_id: object,
    from_version: int | None,
    to_version: int | None,
) -> tuple[int, int]:
    """Check ``read_aggregate_stream``'s arguments; return the inclusive version bounds."""
    check_text("bounded_context", bounded_context)
    check_text("aggregate_type", aggregate_type)
    check_text("aggregate_id", aggregate_id)
    low = 0 if from_version is None else from_version
    high = MAX_BIGINT if to_version is None else to_version
    check_position("from_version", low)
    check_position("to_version", high)
    if low > high:
        raise ValueError(f"from_version ({low}) must not be greater than to_version ({high})")
    return low, high


def conflict_error(
    log: Logger,
    expected: es.ExpectedVersion,
    first: es.Event,
    *,
    actual: int | None,
    duplicate: bool = False,
    event_id: uuid.UUID | None = None,
) -> OptimisticConcurrencyError:
    """The error for an append that wrote nothing because of a conflict.

    Args:
        log: Where to log the conflict.
        expected: What the append expected.
        first: The append's first event, naming the aggregate.
        actual: The aggregate's version as found; ``None`` when a concurrent transaction
            won a unique index and the version is unknown.
        duplicate: An event id of the append is already stored.
        event_id: That event id, when known.
    """
    where = f"{first.bounded_context}/{first.aggregate_type}/{first.aggregate_id}"
    if duplicate or event_id is not None:
        shown = event_id or "(unknown)"
        log.info("duplicate event id", aggregate=where, event_id=str(shown))
        return DuplicateEventError(
            f"{where}: event id {shown} is already stored",
            expected=expected,
            actual=actual,
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            event_id=event_id,
        )
    if actual is None:
        found = "a concurrent transaction stored that version first"
    else:
        found = f"the aggregate is at version {actual}"
    log.info(
        "optimistic concurrency conflict", aggregate=where, expected=str(expected), actual=actual
    )
    return OptimisticConcurrencyError(
        f"{where}: expected version {expected}, but {found}",
        expected=expected,
        actual=actual,
        bounded_context=first.bounded_context,
        aggregate_type=first.aggregate_type,
        aggregate_id=first.aggregate_id,
    )


def replayed(
    log: Logger,
    expected: es.ExpectedVersion,
    events: Sequence[es.Event],
    stored: Mapping[uuid.UUID, es.PersistedEvent],
) -> es.AppendResult:
    """The result of an append some of whose event ids are stored already.

    If every id is stored, as consecutive events of the same aggregate in the given order
    with the same types and payloads, the append is a retry of one that succeeded: its
    stored result is returned and nothing is written. Any other overlap is a conflict.

    Raises:
        DuplicateEventError: the ids are stored, but not as this append would store them.
    """
    first = events[0]
    found = [stored.get(event.event_id) for event in events]
    base = found[0].aggregate_version if found[0] is not None else 0
    for offset, (event, persisted) in enumerate(zip(events, found, strict=True)):
        if (
            persisted is None
            or persisted.aggregate_version != base + offset
            or persisted.aggregate_id != first.aggregate_id
            or persisted.aggregate_type != first.aggregate_type
            or persisted.bounded_context != first.bounded_context
            or persisted.event_type != event.event_type
            or persisted.payload != event.payload
        ):
            shown = next((e.event_id for e, p in zip(events, found, strict=True) if p), None)
            raise conflict_error(log, expected, first, actual=None, event_id=shown)
    complete = [persisted for persisted in found if persisted is not None]
    log.info(
        "append already stored; returning its result",
        aggregate=f"{first.bounded_context}/{first.aggregate_type}/{first.aggregate_id}",
        from_version=base,
        to_version=complete[-1].aggregate_version,
    )
    return es.AppendResult(complete, [persisted.global_position for persisted in complete])


def rolled_back(reason: str, location: str, detail: object) -> TransactionRolledBackError:
    """The error for a transaction the database rolled back whole (``reason``: "deadlock",
    "lock timeout" or "serialization failure")."""
    return TransactionRolledBackError(
        f"the database at {location} rolled the transaction back ({reason}: {detail}); "
        "nothing of it was kept: retry it from the start",
        reason=reason,
        location=location,
    )


class AppendTracker:
    """Which connections run in a transaction the backend manages, which appended in it,
    and which the database has already failed.

    A backend's transaction registers its connection, asks at commit whether it appended,
    and if so wakes processors (in this process at once; elsewhere by notification). A
    store that finds the transaction rolled back under it (a deadlock, a lock timeout)
    dooms it, so that a block which swallowed the error cannot commit what is left.
    Connections are known by ``id()``; entries live only while their transaction does.
    """

    __slots__ = ("_appended", "_doomed", "_managed")

    def __init__(self) -> None:
        self._managed: set[int] = set()
        self._appended: dict[int, int] = {}
        self._doomed: dict[int, BaseException] = {}

    def begin(self, tx: object) -> None:
        """A managed transaction starts on ``tx``."""
        self._managed.add(id(tx))
        self._appended.pop(id(tx), None)
        self._doomed.pop(id(tx), None)

    def end(self, tx: object) -> int | None:
        """The managed transaction on ``tx`` ended; the last position it appended, if any."""
        self._managed.discard(id(tx))
        self._doomed.pop(id(tx), None)
        return self._appended.pop(id(tx), None)

    def managed(self, tx: object) -> bool:
        """Whether ``tx`` runs in a transaction the backend manages."""
        return id(tx) in self._managed

    def note(self, tx: object, position: int) -> None:
        """``tx`` appended, up to ``position``, in its current transaction."""
        if id(tx) in self._managed:
            key = id(tx)
            self._appended[key] = max(position, self._appended.get(key, 0))

    def doom(self, tx: object, error: BaseException) -> None:
        """The database rolled back the transaction on ``tx`` (``error`` said so)."""
        if id(tx) in self._managed:
            self._doomed.setdefault(id(tx), error)

    def doomed(self, tx: object) -> BaseException | None:
        """Why the managed transaction on ``tx`` cannot commit, if it cannot."""
        return self._doomed.get(id(tx))


def refused_commit(error: BaseException, location: str) -> TransactionRolledBackError:
    """The error a block that swallowed ``error`` gets instead of its COMMIT."""
    reason = error.reason if isinstance(error, TransactionRolledBackError) else "error"
    return TransactionRolledBackError(
        f"not committed: the database at {location} had already rolled this transaction "
        f"back ({error}); retry it from the start",
        reason=reason,
        location=location,
    )


class LocalNews:
    """Wake-ups from this process only: appends committed through this backend."""

    __slots__ = ("_signal",)

    def __init__(self, signal: Signal) -> None:
        self._signal = signal

    def watch(self) -> Watch:
        """Start watching; take it before reading."""
        return self._signal.watch()

    async def wait(self, watch: Watch, timeout: float) -> bool:
        """Wait up to ``timeout`` for an append since ``watch``."""
        return await watch.wait(timeout)


@asynccontextmanager
async def local_news(signal: Signal) -> AsyncIterator[LocalNews]:
    """``Backend.news()`` for databases without notifications: polling plus local appends."""
    yield LocalNews(signal)


async def wait_for_lock(
    try_lock: Callable[[], Awaitable[bool]], *, checkpoint: str, poll_interval: float, log: Logger
) -> None:
    """Try ``try_lock`` every ``poll_interval`` seconds until it succeeds; say once that
    another worker holds the lease."""
    waiting = False
    while not await try_lock():
        if not waiting:
            log.info("waiting for the lease held by another worker", checkpoint=checkpoint)
            waiting = True
        await asyncio.sleep(poll_interval)


class NoLease:
    """The lease of a database whose batch transactions already exclude each other."""

    __slots__ = ("_transaction",)

    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[Any]]) -> None:
        self._transaction = transaction

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A batch transaction from the backend's pool."""
        return self._transaction()


def lease_name(events_table: str, checkpoint: str) -> str:
    """A stable lock name for a checkpoint of one event store, at most 64 characters."""
    digest = hashlib.blake2b(f"{events_table}:{checkpoint}".encode(), digest_size=20)
    return f"pupsourcing:{digest.hexdigest()}"


def lease_key(events_table: str, checkpoint: str) -> int:
    """A stable signed 64-bit lock key for a checkpoint of one event store."""
    digest = hashlib.blake2b(f"{events_table}:{checkpoint}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def checkpoint_names(names: list[str], wanted: str) -> list[str]:
    """The checkpoint rows of projection ``wanted``: its own, or its partitions'."""
    partition = re.compile(re.escape(wanted) + r"_p\d+")
    return [name for name in names if name == wanted or partition.fullmatch(name)]
