"""What every adapter shares: argument checks, conflict errors, leases and wake-ups."""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from .. import es
from .._signals import Signal, Watch
from ..errors import DuplicateEventError, OptimisticConcurrencyError
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
    "conflict_error",
    "lease_key",
    "lease_name",
    "local_news",
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


def check_projection_name(name: object) -> None:
    """Raise ``ValueError`` unless ``name`` can key a checkpoint row."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > es.MAX_TEXT_LENGTH:
        raise ValueError(
            "projection_name must be a non-empty string of at most "
            f"{es.MAX_TEXT_LENGTH} characters, got {name!r}"
        )


def check_stream_args(
    bounded_context: object,
    aggregate_type: object,
    aggregate_id: object,
    from_version: int | None,
    to_version: int | None,
) -> tuple[int, int]:
    """Check ``read_aggregate_stream``'s arguments; return the inclusive version bounds."""
    for name, value in (
        ("bounded_context", bounded_context),
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
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


class AppendTracker:
    """Which connections run in a transaction the backend manages, and which appended in it.

    A backend's transaction registers its connection, asks at commit whether it appended,
    and if so wakes processors (in this process at once; elsewhere by notification).
    Connections are known by ``id()``; entries live only while their transaction does.
    """

    __slots__ = ("_appended", "_managed")

    def __init__(self) -> None:
        self._managed: set[int] = set()
        self._appended: set[int] = set()

    def begin(self, tx: object) -> None:
        """A managed transaction starts on ``tx``."""
        self._managed.add(id(tx))
        self._appended.discard(id(tx))

    def end(self, tx: object) -> bool:
        """The managed transaction on ``tx`` ended; whether it appended."""
        self._managed.discard(id(tx))
        try:
            self._appended.remove(id(tx))
        except KeyError:
            return False
        return True

    def managed(self, tx: object) -> bool:
        """Whether ``tx`` runs in a transaction the backend manages."""
        return id(tx) in self._managed

    def note(self, tx: object) -> None:
        """``tx`` appended in its current transaction."""
        if id(tx) in self._managed:
            self._appended.add(id(tx))


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
