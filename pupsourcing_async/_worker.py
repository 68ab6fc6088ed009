"""Running projections as a worker process: until SIGINT or SIGTERM, reporting progress.

:func:`run_worker` is what the command line's worker commands run: the projections in
one task group (fail-fast, as :func:`~pupsourcing_async.projection.run_projections`), a
progress report every ``progress_interval`` seconds while any of them is behind, and a
clean stop on a signal — the batch in flight rolls back or commits, leases are released
— with exit code 0. :func:`configure_logging` sets up the process's logs, as text or as
one JSON object per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING

from .errors import ProjectionError
from .log import Logger, get_logger
from .observe import BatchObservation, Observer
from .projection.base import Projection
from .projection.config import ProcessorConfig
from .projection.runner import run_projections
from .store import StoreConfig

if TYPE_CHECKING:
    from .database import Database

__all__ = [
    "JsonFormatter",
    "ProgressObserver",
    "SignalStop",
    "configure_logging",
    "run_worker",
    "stop_on_signals",
    "with_progress",
]

#: The signals that stop a worker.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """Which signal stopped the block of :func:`stop_on_signals`, if one did.

    Attributes:
        received: The signal's name (``"SIGTERM"``), or ``None``.
    """

    __slots__ = ("received",)

    def __init__(self) -> None:
        self.received: str | None = None


@contextlib.contextmanager
def stop_on_signals(
    log: Logger | None = None, signals: Sequence[signal.Signals] = STOP_SIGNALS
) -> Iterator[SignalStop]:
    """While in the block, SIGINT and SIGTERM cancel the task running it.

    Cancellation is the library's stop signal: everything under the task winds down as
    on any cancel (batches roll back, leases go, connections close). The caller catches
    the ``CancelledError`` when ``received`` is set and calls ``uncancel()`` on the task.
    A second signal while stopping is only logged.
    """
    logger = get_logger(log, "pupsourcing_async.worker")
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("stop_on_signals() needs a running task")
    stop = SignalStop()

    def on_signal(number: signal.Signals) -> None:
        if stop.received is not None:
            logger.info("already stopping", signal=number.name)
            return
        stop.received = number.name
        logger.info("stopping", signal=number.name)
        task.cancel()

    installed = []
    for number in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Only the main thread of a Unix process can take signals this way.
            loop.add_signal_handler(number, on_signal, number)
            installed.append(number)
    try:
        yield stop
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


async def run_worker(
    db: Database,
    projections: Sequence[tuple[Projection, ProcessorConfig]],
    *,
    logger: Logger | None = None,
    progress_interval: float = 10.0,
    handle_signals: bool = True,
) -> int:
    """Run ``projections`` until SIGINT or SIGTERM (or until all return, in ``ONE_OFF``
    mode), logging progress; the process's exit code.

    Args:
        db: The database they read from.
        projections: ``(projection, config)`` pairs, run at once in one task group.
        logger: Where the worker logs; the ``pupsourcing_async.worker`` logger by default.
        progress_interval: Seconds between progress reports (position, head, lag,
            events/s per checkpoint) while a projection is behind or moving. They come
            from the store's :class:`ProgressObserver` when it has one
            (:func:`with_progress`), else from reading the checkpoints.
        handle_signals: Stop cleanly on SIGINT and SIGTERM. Turn it off when the caller
            has its own :func:`stop_on_signals` around this call.

    Returns:
        0 when stopped by a signal or when every projection returned; 1 when one
        failed (logged with its error; the others were stopped).
    """
    if not projections:
        raise ValueError("run_worker needs at least one (projection, config) pair")
    if isinstance(progress_interval, bool) or not progress_interval > 0:
        raise ValueError(f"progress_interval must be positive, got {progress_interval!r}")
    log = get_logger(logger, "pupsourcing_async.worker")
    checkpoints = [config.checkpoint_name(projection.name) for projection, config in projections]
    log.info(
        "worker started",
        dialect=db.dialect,
        database=db.location,
        checkpoints=",".join(checkpoints),
    )
    scope = stop_on_signals(log) if handle_signals else contextlib.nullcontext(SignalStop())
    with scope as stop:
        try:
            await _run(db, projections, checkpoints, log, progress_interval)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if stop.received is None or task is None:
                raise
            task.uncancel()
            log.info("worker stopped", signal=stop.received)
            return 0
        except ProjectionError as err:
            log.error(
                "worker stopped on a failure",
                projection=err.projection,
                global_position=err.global_position,
                error=_one_line(err),
            )
            return 1
    log.info("worker stopped", reason="every projection caught up")
    return 0


async def _run(
    db: Database,
    projections: Sequence[tuple[Projection, ProcessorConfig]],
    checkpoints: list[str],
    log: Logger,
    interval: float,
) -> None:
    """Run the projections with a progress reporter beside them, until they return."""
    failure: ProjectionError | None = None
    async with asyncio.TaskGroup() as group:
        reporter = group.create_task(_report(db, checkpoints, log, interval), name="progress")
        try:
            await run_projections(db, projections)
        except ProjectionError as err:
            # Raised out of the group it would come wrapped in an ExceptionGroup.
            failure = err
        finally:
            reporter.cancel()
    if failure is not None:
        raise failure


@dataclass(slots=True)
class _Where:
    """Where one checkpoint stands: position, head, and events counted so far."""

    position: int
    head: int
    events: int


class ProgressObserver(Observer):
    """Keeps where each checkpoint's last committed batch left it, for progress reports.

    Put one in the store's observers (:func:`with_progress`) and :func:`run_worker`
    reports from it, exactly and without asking the database; otherwise it reads the
    checkpoints (on SQLite those reads wait for the write lock that batches hold).
    """

    def __init__(self) -> None:
        self._where: dict[str, _Where] = {}

    def observe_batch(self, observation: BatchObservation) -> AbstractContextManager[None]:
        """Note the batch once it has committed."""
        return _Noting(self, observation)

    def _note(self, observation: BatchObservation) -> None:
        where = self._where.get(observation.checkpoint)
        events = observation.events_read + (where.events if where is not None else 0)
        self._where[observation.checkpoint] = _Where(
            observation.to_position, max(observation.head_position, observation.to_position), events
        )

    def where(self, checkpoint: str) -> tuple[int, int, int] | None:
        """``(position, head, events)`` of ``checkpoint``'s last batch, if it ran one."""
        where = self._where.get(checkpoint)
        return None if where is None else (where.position, where.head, where.events)


class _Noting:
    __slots__ = ("_observation", "_observer")

    def __init__(self, observer: ProgressObserver, observation: BatchObservation) -> None:
        self._observer = observer
        self._observation = observation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None and self._observation.error is None:
            self._observer._note(self._observation)


def with_progress(config: StoreConfig) -> StoreConfig:
    """``config`` with a :class:`ProgressObserver` among its observers (if it has none)."""
    if any(isinstance(observer, ProgressObserver) for observer in config.observers):
        return config
    return dataclasses.replace(config, observers=(*config.observers, ProgressObserver()))


async def _report(db: Database, checkpoints: list[str], log: Logger, interval: float) -> None:
    """Log where each checkpoint is, now and every ``interval`` seconds while it moves or
    is behind; once when it has caught up."""
    loop = asyncio.get_running_loop()
    tracker = next((o for o in db.store.config.observers if isinstance(o, ProgressObserver)), None)
    last: dict[str, tuple[int, int, float]] = {}
    quiet: set[str] = set()
    while True:
        now = loop.time()
        found = (
            {name: tracker.where(name) for name in checkpoints}
            if tracker is not None
            else await _read_checkpoints(db, log, interval)
        )
        for name in checkpoints:
            where = found.get(name)
            if where is None:
                continue
            position, head, events = where
            before = last.get(name)
            last[name] = (position, events, now)
            lag = max(head - position, 0)
            moved = before is not None and position != before[0]
            if lag == 0 and not moved and before is not None:
                if name not in quiet:
                    quiet.add(name)
                    log.info("caught up", checkpoint=name, position=position)
                continue
            quiet.discard(name)
            rate = None
            if before is not None and now > before[2]:
                rate = round((events - before[1]) / (now - before[2]), 1)
            log.info(
                "progress",
                checkpoint=name,
                position=position,
                head=head,
                lag=lag,
                events_per_s=rate,
            )
        # A pace, not a synchronisation: the report runs on its own clock.
        await asyncio.sleep(interval)


async def _read_checkpoints(
    db: Database, log: Logger, interval: float
) -> dict[str, tuple[int, int, int] | None]:
    """Every checkpoint's ``(position, head, position)`` as the database has it; positions
    stand in for the events count."""
    try:
        # A database that does not answer (or a pool with no connection free) costs one
        # report, not the reporter.
        async with asyncio.timeout(interval):
            statuses = await db.projection_status()
    except TimeoutError:
        log.error("progress unavailable", error=f"no answer within {interval:g}s")
        return {}
    except Exception as err:  # a report that fails must not stop the worker
        log.error("progress unavailable", error=_one_line(err))
        return {}
    return {status.name: (status.position, status.head, status.position) for status in statuses}


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message`` and the
    library's structured fields as keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": getattr(record, "pupsourcing_message", None) or record.getMessage(),
        }
        fields = getattr(record, "pupsourcing_fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                data.setdefault(str(key), value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def configure_logging(
    *, json_lines: bool = False, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the process's logs to ``stream`` (standard error by default), as text or,
    with ``json_lines``, as one JSON object per line; the handler, to remove later."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
