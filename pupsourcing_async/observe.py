"""Hooks for metrics and tracing: what the store and the processors report as they work.

Subclass :class:`Observer`, override what you need, and pass it in
``StoreConfig(observers=(...,))``; every append of that store, and every batch of the
processors that read through it, is reported. ``pupsourcing_async.prometheus`` and
``pupsourcing_async.otel`` are two such observers. With no observer configured the hooks
cost nothing.

An observer must not raise: a failing hook is logged and ignored, never allowed to fail
an append or a batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

from . import es
from .log import get_logger

if TYPE_CHECKING:
    from .projection.parking import ParkedEvent

__all__ = ["AppendObservation", "BatchObservation", "Observer"]

_log = get_logger(None, "pupsourcing_async.observe")


@dataclass(slots=True)
class AppendObservation:
    """One append, as the store saw it.

    Attributes:
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
        bounded_context: The aggregate's bounded context.
        aggregate_type: The aggregate's type.
        aggregate_id: The aggregate's id (mind the cardinality before using it as a label).
        expected: The expected version, as ``str()`` gives it (``Any``, ``Exact(3)``).
        events: How many events the append carried.
        duration: Seconds the append took; set when it ends.
        result: What was stored; set on success.
        error: Why it failed; set on failure (an ``OptimisticConcurrencyError`` for a
            conflict).
    """

    dialect: str
    bounded_context: str
    aggregate_type: str
    aggregate_id: str
    expected: str
    events: int
    duration: float = 0.0
    result: es.AppendResult | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class BatchObservation:
    """One projection batch, as the processor saw it.

    Attributes:
        projection: The projection's name.
        checkpoint: The checkpoint row it writes (``<name>_p<key>`` with partitions).
        partition_key: This worker's partition.
        total_partitions: How many partitions the projection has.
        from_position: The checkpoint the batch started from.
        to_position: The checkpoint it wrote; ``from_position`` when it read nothing.
        events_read: Events the batch read.
        events_handled: Events in scope and partition, handed to the projection.
        head_position: The highest committed position when the batch started.
        oldest_unprocessed: ``created_at`` of the first event read, the oldest one the
            projection had not processed; ``None`` when it read nothing.
        duration: Seconds the batch took; set when it ends.
        error: Why it failed, if it did.
    """

    projection: str
    checkpoint: str
    partition_key: int
    total_partitions: int
    from_position: int
    head_position: int
    to_position: int = 0
    events_read: int = 0
    events_handled: int = 0
    oldest_unprocessed: datetime | None = None
    duration: float = 0.0
    error: BaseException | None = None

    @property
    def lag(self) -> int:
        """Positions still to process after this batch: head minus the checkpoint written."""
        return max(self.head_position - self.to_position, 0)


class Observer:
    """The hooks; every method does nothing until overridden."""

    def prepare_events(self, events: Sequence[es.Event]) -> Sequence[es.Event]:
        """Adjust events before an append validates and stores them (for example to fill
        in a trace id). Return them unchanged to leave them alone."""
        return events

    def observe_append(self, observation: AppendObservation) -> AbstractContextManager[None]:
        """Wrap an append; ``observation`` is complete when the context exits."""
        return contextlib.nullcontext()

    def observe_batch(self, observation: BatchObservation) -> AbstractContextManager[None]:
        """Wrap a projection batch; ``observation`` is complete when the context exits."""
        return contextlib.nullcontext()

    def lease(self, projection: str, checkpoint: str, held: bool) -> None:
        """A worker took (``held``) or gave up the lease on ``checkpoint``."""

    def retry(self, projection: str, checkpoint: str, error: BaseException, attempt: int) -> None:
        """A batch failed on a passing trouble and will be retried."""

    def failure(self, projection: str, checkpoint: str, error: BaseException) -> None:
        """A projection stopped on an error."""

    def parked(self, projection: str, checkpoint: str, event: ParkedEvent) -> None:
        """A projection parked an event (``OnFailure.PARK``); told once its batch committed."""


def prepare_all(observers: Sequence[Observer], events: Sequence[es.Event]) -> Sequence[es.Event]:
    """Run every observer's :meth:`Observer.prepare_events`, keeping the events on failure."""
    for observer in observers:
        try:
            events = observer.prepare_events(events)
        except Exception as err:
            _log.error("observer failed preparing events", observer=repr(observer), error=str(err))
    return events


@contextlib.contextmanager
def observing(
    observers: Sequence[Observer], method: str, observation: AppendObservation | BatchObservation
) -> Iterator[None]:
    """Enter every observer's ``observe_append``/``observe_batch`` around the block.

    An observer that fails to enter or exit is logged and left out; the block's own
    exception always propagates unchanged.
    """
    with contextlib.ExitStack() as stack:
        for observer in observers:
            try:
                stack.enter_context(_Guarded(getattr(observer, method)(observation), observer))
            except Exception as err:
                _log.error("observer failed", observer=repr(observer), error=str(err))
        yield


class _Guarded:
    """An observer's context: it sees the block's exception (spans record it), but its own
    failure on exit is logged, and it can never swallow the block's exception."""

    __slots__ = ("_context", "_observer")

    def __init__(self, context: AbstractContextManager[None], observer: Observer) -> None:
        self._context = context
        self._observer = observer

    def __enter__(self) -> None:
        self._context.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._context.__exit__(exc_type, exc, tb)
        except Exception as err:
            _log.error("observer failed", observer=repr(self._observer), error=str(err))


def notify(observers: Sequence[Observer], method: str, *args: object) -> None:
    """Call ``method`` on every observer, logging and ignoring failures."""
    for observer in observers:
        try:
            getattr(observer, method)(*args)
        except Exception as err:
            _log.error("observer failed", observer=repr(observer), hook=method, error=str(err))


async def observed_append(
    observers: Sequence[Observer],
    dialect: str,
    expected: es.ExpectedVersion,
    events: Sequence[es.Event],
    append: Callable[[Sequence[es.Event]], Awaitable[es.AppendResult]],
) -> es.AppendResult:
    """Run ``append(events)`` with every observer around it."""
    events = prepare_all(observers, events)
    first = events[0] if events else None
    observation = AppendObservation(
        dialect=dialect,
        bounded_context=str(getattr(first, "bounded_context", "")),
        aggregate_type=str(getattr(first, "aggregate_type", "")),
        aggregate_id=str(getattr(first, "aggregate_id", "")),
        expected=str(expected),
        events=len(events),
    )
    started = time.perf_counter()
    with observing(observers, "observe_append", observation):
        try:
            observation.result = await append(events)
        except Exception as err:
            observation.error = err
            raise
        finally:
            observation.duration = time.perf_counter() - started
    return observation.result
