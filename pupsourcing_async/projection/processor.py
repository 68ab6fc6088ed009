"""The projection processor: one loop for every database.

Each batch is one transaction: read the checkpoint, read the events after it (gap-safe),
hand those in scope to the projection, write the checkpoint, commit. What differs per
database — the lease that keeps a second worker out, the wake-ups when new events arrive,
which errors are worth a retry — comes from the adapter's backend.

A lease lost with its connection makes the next batch fail with a connection error, which
counts as transient: the worker rolls back, waits, and queues for the lease again.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic

from .. import es
from .._holes import hole_above
from ..adapters.base import Backend, Lease, News
from ..errors import ProjectionError, ProjectionStoppedError
from ..log import Logger, get_logger
from ..observe import BatchObservation, notify, observing
from .base import Projection, check_projection_name
from .config import ProcessorConfig, RunMode
from .parking import Parking, parking_for, retry_parked
from .runs import runs_of

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    TxT = TypeVar("TxT", default=Any)
else:
    from typing import TypeVar

    TxT = TypeVar("TxT")

__all__ = ["Processor"]


class _Transient(Exception):
    """A batch failed on something worth retrying; ``__cause__`` says what."""


class _Streak:
    """Failed attempts in a row; a batch that goes through ends the streak."""

    __slots__ = ("failures",)

    def __init__(self) -> None:
        self.failures = 0


class Processor(Generic[TxT]):
    """Runs projections with one configuration against one database.

    Made by ``Database.processor(config)``, or by an adapter's ``Processor(pool, store,
    config)`` for a pool you own. One processor can run several projections in turn or
    at once; each ``run`` holds its own lease.

    Args:
        backend: The database's backend.
        config: How to run; the defaults when omitted.
    """

    def __init__(self, backend: Backend, config: ProcessorConfig | None = None) -> None:
        self._backend = backend
        self._config = config or ProcessorConfig()
        self._log: Logger = get_logger(self._config.logger, "pupsourcing_async.projection")

    @property
    def config(self) -> ProcessorConfig:
        """How this processor runs."""
        return self._config

    async def run(self, projection: Projection[TxT]) -> None:
        """Process events for ``projection`` until cancelled or, in ``ONE_OFF`` mode,
        until caught up.

        Cancelling it is a clean stop: the batch in flight rolls back and the lease is
        released before ``CancelledError`` propagates.

        Raises:
            ProjectionError: the handler raised (``handler_attempts`` times, with
                ``OnFailure.STOP``); the batch was rolled back. The handler's exception
                is ``__cause__``.
            ProjectionStoppedError: passing database troubles outlasted ``max_retries``.
        """
        name = check_projection_name(_projection_name(projection))
        checkpoint = self._config.checkpoint_name(name)
        config = self._config
        observers = self._backend.store.config.observers
        streak = _Streak()
        parking = parking_for(config, self._backend, self._log, name, checkpoint)
        runs = runs_of(self._backend.store)
        async with runs.running(name, checkpoint), self._backend.news() as news:
            while True:
                try:
                    async with self._backend.lease(
                        checkpoint, poll_interval=config.lease_poll_interval, log=self._log
                    ) as lease:
                        self._log.info("lease taken", projection=name, checkpoint=checkpoint)
                        notify(observers, "lease", name, checkpoint, True)
                        try:
                            if await self._process(
                                lease, news, projection, name, checkpoint, streak, parking
                            ):
                                return
                        finally:
                            self._log.info("lease released", projection=name, checkpoint=checkpoint)
                            notify(observers, "lease", name, checkpoint, False)
                except ProjectionError as err:
                    notify(observers, "failure", name, checkpoint, err)
                    raise
                except _Transient as err:
                    cause: BaseException = err.__cause__ or err
                    self._log.info(
                        "lease given up after a failed batch",
                        projection=name,
                        checkpoint=checkpoint,
                    )
                except Exception as err:
                    # Taking the lease failed: while the database restarts, no connection
                    # for it can be had. That passes too, so it earns the same retries.
                    if not self._backend.is_transient(err):
                        raise
                    cause = err
                streak.failures += 1
                await self._pause_or_stop(name, checkpoint, cause, streak.failures)

    async def retry_parked(self, projection: Projection[TxT]) -> int:
        """Run the parked events of ``projection`` (every partition's) through it again,
        oldest first, each in a transaction of its own that also deletes its record;
        how many it handled.

        One that fails again stays parked, its attempts counted and its error updated.
        The events run out of their order in the log (after those that came later), and
        while the projection's workers may run: each is handled at most once, even with
        two retries at once.

        Raises:
            StoreUnavailableError: the database did not answer; what was not handled yet
                stays parked (so on any passing database trouble, such as a
                ``TransactionRolledBackError``).
        """
        name = check_projection_name(_projection_name(projection))
        return await retry_parked(self._backend, self._log, projection, name)

    async def _pause_or_stop(
        self, name: str, checkpoint: str, cause: BaseException, failures: int
    ) -> None:
        """Wait before the next attempt, or raise once retries are spent."""
        config = self._config
        observers = self._backend.store.config.observers
        if not config.retry_transient or (
            config.max_retries is not None and failures > config.max_retries
        ):
            stopped = ProjectionStoppedError(
                f"projection {name} stopped after {failures} failed attempt(s): {cause}",
                projection=name,
            )
            notify(observers, "failure", name, checkpoint, stopped)
            raise stopped from cause
        notify(observers, "retry", name, checkpoint, cause, failures)
        # Jittered, so workers that failed together (a database restart) do not all come
        # back in the same instant: between half and all of the capped exponential delay.
        delay = min(config.retry_initial_delay * 2 ** (failures - 1), config.retry_max_delay)
        delay *= random.uniform(0.5, 1.0)
        self._log.error(
            "batch failed on a passing database error; retrying",
            projection=name,
            checkpoint=checkpoint,
            attempt=failures,
            retry_in=round(delay, 3),
            error=f"{type(cause).__name__}: {cause}",
        )
        await asyncio.sleep(delay)

    async def _process(
        self,
        lease: Lease,
        news: News,
        projection: Projection,
        name: str,
        checkpoint: str,
        streak: _Streak,
        parking: Parking | None,
    ) -> bool:
        """Run batches under ``lease``; True once caught up in ONE_OFF mode."""
        config = self._config
        idle_wait = config.poll_interval
        await self._ensure_checkpoint(lease, checkpoint)
        while True:
            watch = news.watch()
            try:
                handled, caught_up = await self._batch(lease, projection, name, checkpoint, parking)
            except ProjectionError as err:
                if parking is None or not parking.replay(err):
                    raise
                continue
            streak.failures = 0
            if handled:
                idle_wait = config.poll_interval
                continue
            if not caught_up:
                # A hole below the head waits for its proof: look again soon.
                await news.wait(watch, config.poll_interval)
                continue
            if config.run_mode is RunMode.ONE_OFF:
                return True
            if await news.wait(watch, idle_wait):
                idle_wait = config.poll_interval
            else:
                idle_wait = min(idle_wait * config.poll_backoff_factor, config.max_poll_interval)

    async def _ensure_checkpoint(self, lease: Lease, checkpoint: str) -> None:
        # Writes the row if missing, so status and wait_for see every running partition.
        store = self._backend.store
        try:
            async with lease.transaction() as tx:
                await store.update_checkpoint(
                    tx, checkpoint, await store.get_checkpoint(tx, checkpoint)
                )
        except Exception as err:
            if self._backend.is_transient(err):
                raise _Transient from err
            raise

    async def _batch(
        self,
        lease: Lease,
        projection: Projection,
        name: str,
        checkpoint: str,
        parking: Parking | None = None,
    ) -> tuple[int, bool]:
        """Run one batch; how many events it read, and whether the log is exhausted."""
        store = self._backend.store
        config = self._config
        observers = store.config.observers
        observation = None
        if observers:
            observation = BatchObservation(
                projection=name,
                checkpoint=checkpoint,
                partition_key=config.partition_key,
                total_partitions=config.total_partitions,
                from_position=0,
                head_position=0,
            )
        started = time.perf_counter()
        with (
            observing(observers, "observe_batch", observation)
            if observation is not None
            else contextlib.nullcontext()
        ):
            try:
                if parking is not None:
                    parking.begin()
                async with lease.transaction() as tx:
                    position = await store.get_checkpoint(tx, checkpoint)
                    if observation is not None:
                        observation.from_position = observation.to_position = position
                        observation.head_position = await store.latest_global_position(tx)
                    events = await store.read_events(tx, position, config.batch_size)
                    if not events:
                        pending = hole_above(store.pending_holes(), position)
                        return 0, not pending
                    handled = await self._handle_all(tx, projection, name, events, parking)
                    await store.update_checkpoint(tx, checkpoint, events[-1].global_position)
                if parking is not None:
                    parking.committed()
                if observation is not None:
                    observation.events_read = len(events)
                    observation.events_handled = handled
                    observation.oldest_unprocessed = events[0].created_at
                    observation.to_position = events[-1].global_position
            except Exception as err:
                if observation is not None:
                    # A passing failure of the handler comes wrapped; observers see itself.
                    observation.error = err.__cause__ if isinstance(err, _Transient) else err
                if not isinstance(err, _Transient) and self._backend.is_transient(err):
                    raise _Transient from err
                raise
            finally:
                if observation is not None:
                    observation.duration = time.perf_counter() - started
        self._backend.progress.fire()
        self._log.debug(
            "batch committed",
            projection=name,
            checkpoint=checkpoint,
            events=len(events),
            handled=handled,
            position=events[-1].global_position,
        )
        return len(events), False

    async def _handle_all(
        self,
        tx: Any,
        projection: Projection,
        name: str,
        events: Sequence[es.PersistedEvent],
        parking: Parking | None = None,
    ) -> int:
        """Hand the events in scope and partition to the projection; how many that was.

        A projection with ``handle_batch`` gets them in one call, else each in a ``handle``.
        With ``parking``, an event due to be parked is recorded instead of handled, and a
        batch whose ``handle_batch`` failed is handled event by event.
        """
        config = self._config
        types = tuple(getattr(projection, "aggregate_types", ()) or ())
        contexts = tuple(getattr(projection, "bounded_contexts", ()) or ())
        partitioned = config.total_partitions > 1
        should_process = config.partition_strategy.should_process
        retryable: tuple[type[BaseException], ...] = tuple(
            getattr(projection, "retryable_errors", ()) or ()
        )
        handle_batch = getattr(projection, "handle_batch", None)
        if parking is not None and parking.one_by_one:
            handle_batch = None
        selected: list[es.PersistedEvent] = []
        handled = 0
        for event in events:
            if types and event.aggregate_type not in types:
                continue
            if contexts and event.bounded_context not in contexts:
                continue
            if partitioned and not should_process(
                event.aggregate_id, config.partition_key, config.total_partitions
            ):
                continue
            if parking is not None and parking.due(event):
                await parking.park(tx, event)
                continue
            if handle_batch is not None:
                selected.append(event)
                continue
            try:
                await projection.handle(tx, event)
                handled += 1
            except Exception as err:
                if self._backend.is_transient(err) or isinstance(err, retryable):
                    raise _Transient from err
                self._log.error(
                    "projection handler failed",
                    projection=name,
                    global_position=event.global_position,
                    event_type=event.event_type,
                    error=f"{type(err).__name__}: {err}",
                )
                raise ProjectionError(
                    f"projection {name} failed on event {event.global_position} "
                    f"({event.event_type}): {type(err).__name__}: {err}",
                    projection=name,
                    global_position=event.global_position,
                    event_type=event.event_type,
                ) from err
        if selected:
            try:
                await self._handle_batch(tx, handle_batch, name, selected, retryable)
            except ProjectionError:
                if parking is not None:
                    parking.batch_failed()
                raise
        return handled + len(selected)

    async def _handle_batch(
        self,
        tx: Any,
        handle_batch: Any,
        name: str,
        events: list[es.PersistedEvent],
        retryable: tuple[type[BaseException], ...],
    ) -> None:
        """Hand a batch's events in scope to ``handle_batch``; a failure fails the batch
        as a ``handle`` failure does, naming the batch's first event."""
        try:
            await handle_batch(tx, events)
        except Exception as err:
            if self._backend.is_transient(err) or isinstance(err, retryable):
                raise _Transient from err
            first = events[0]
            self._log.error(
                "projection batch handler failed",
                projection=name,
                global_position=first.global_position,
                events=len(events),
                error=f"{type(err).__name__}: {err}",
            )
            raise ProjectionError(
                f"projection {name} failed on a batch of {len(events)} event(s) from "
                f"{first.global_position} ({first.event_type}): {type(err).__name__}: {err}",
                projection=name,
                global_position=first.global_position,
                event_type=first.event_type,
            ) from err


def _projection_name(projection: object) -> str:
    name = getattr(projection, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"a projection needs a non-empty str name, got {name!r} on {projection!r}")
    handle = getattr(projection, "handle", None)
    if not callable(handle):
        raise TypeError(f"a projection needs an async handle(tx, event) method: {projection!r}")
    # An object whose __call__ is async counts too.
    if not (inspect.iscoroutinefunction(handle) or inspect.iscoroutinefunction(handle.__call__)):
        raise TypeError(
            f"projection {name}: handle must be a coroutine function (async def handle(tx, "
            f"event)), got {handle!r}"
        )
    return name
