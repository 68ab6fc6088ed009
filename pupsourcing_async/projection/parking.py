"""Parked events: events a projection stepped over on purpose, kept for the operator.

An append-only log keeps a bad event for good, so a projection whose handler cannot take
one must be able to go past it and say so. With ``ProcessorConfig(on_failure=
OnFailure.PARK)``, once the handler has failed ``handler_attempts`` times on an event (the
batch rolled back and replayed each time), the next replay records the event in
``<events_table>_parked`` instead of handling it, in the same transaction as the rest of
the batch and the checkpoint past it. So every other event is handled exactly once, and
the parked one is recorded exactly once.

A projection with ``handle_batch`` fails as a whole; its failed batch is then replayed
event by event through ``handle``, which names the culprit.

``Processor.retry_parked(projection)`` runs a projection's parked events through it again
once its handler is fixed, each in a transaction that also deletes its parked row, so an
event retried by two processes at once is still handled once.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from .. import es
from ..adapters._shared import checkpoint_names
from ..errors import ProjectionError
from ..log import Logger
from ..observe import notify
from .config import OnFailure, ProcessorConfig

if TYPE_CHECKING:
    from ..adapters.base import Backend
    from ..store import StoreConfig
    from .base import Projection

__all__ = [
    "MAX_ERROR_LENGTH",
    "ParkedEvent",
    "ParkedStore",
    "Parking",
    "error_text",
    "parked_table",
    "parking_for",
    "retry_parked",
]

#: Stored error texts are cut to this many characters.
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event a projection stepped over, as recorded.

    Attributes:
        checkpoint: The checkpoint it was parked for: the projection's name, or
            ``<name>_p<key>`` for a partition.
        global_position: The event's position in the log.
        event_id: The event's id.
        event_type: The event's type.
        error: The handler's last error on it, as ``Type: message``.
        attempts: How many times the handler failed on it, retries included.
        parked_at: When it was parked.
    """

    checkpoint: str
    global_position: int
    event_id: uuid.UUID
    event_type: str
    error: str
    attempts: int
    parked_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready data."""
        return {
            "checkpoint": self.checkpoint,
            "global_position": self.global_position,
            "event_id": str(self.event_id),
            "event_type": self.event_type,
            "error": self.error,
            "attempts": self.attempts,
            "parked_at": self.parked_at.isoformat(),
        }


def parked_table(config: StoreConfig) -> str:
    """The table that holds the parked events of the store ``config`` names."""
    return f"{config.events_table}_parked"


def error_text(err: BaseException) -> str:
    """``err`` as one line every database can store: ``Type: message``, control
    characters and what UTF-8 cannot carry escaped, cut to ``MAX_ERROR_LENGTH``."""
    text = " ".join(f"{type(err).__name__}: {err}".split())
    text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text


class ParkedStore(Protocol):
    """The parked events table of one store; every adapter's store has one as
    ``store.parked``. ``tx`` is a connection in a transaction, as for the store."""

    async def park(
        self, tx: Any, checkpoint: str, event: es.PersistedEvent, error: str, attempts: int
    ) -> None:
        """Record ``event`` as parked for ``checkpoint`` (again, if it was: the record is
        replaced)."""
        ...

    async def events(self, tx: Any, checkpoint: str | None = None) -> list[ParkedEvent]:
        """The parked events of ``checkpoint``, or of every checkpoint, in log order."""
        ...

    async def summary(self, tx: Any) -> dict[str, tuple[int, str]]:
        """Per checkpoint that has parked events: how many, and the newest one's error."""
        ...

    async def claim(self, tx: Any, checkpoint: str, global_position: int) -> bool:
        """Delete one record; whether it was there (a concurrent claim waits for this
        transaction, then finds nothing)."""
        ...

    async def attempted(self, tx: Any, checkpoint: str, global_position: int, error: str) -> None:
        """Count one more failed attempt on a record, with its error."""
        ...

    async def delete(self, tx: Any, checkpoints: Sequence[str]) -> int:
        """Delete every record of the given checkpoints; how many there were."""
        ...


class Parking:
    """What one run of a projection remembers of its handler's failures.

    The processor asks it, for each failed batch, whether to replay the batch
    (:meth:`replay`); while replaying, whether an event is due to be parked
    (:meth:`due`) instead of handled; and whether a failed ``handle_batch`` is now run
    event by event (:attr:`one_by_one`). What was parked is told (logged, and to the
    observers) only once its batch has committed.

    Args:
        config: The processor's configuration.
        backend: The database's backend.
        log: Where to log.
        name: The projection's name.
        checkpoint: The checkpoint the run writes.
    """

    def __init__(
        self, config: ProcessorConfig, backend: Backend, log: Logger, name: str, checkpoint: str
    ) -> None:
        self._park = config.on_failure is OnFailure.PARK
        self._attempts = config.handler_attempts
        self._backend = backend
        self._log = log
        self._name = name
        self._checkpoint = checkpoint
        #: A ``handle_batch`` failed: the batch is replayed event by event through ``handle``.
        self.one_by_one = False
        self._batch_failed = False
        self._failures: dict[int, tuple[int, str]] = {}
        self._pending: list[ParkedEvent] = []

    def begin(self) -> None:
        """A batch starts: what the last attempt parked went with its rollback."""
        self._pending.clear()
        self._batch_failed = False

    def batch_failed(self) -> None:
        """The projection's ``handle_batch`` raised."""
        self._batch_failed = True

    def due(self, event: es.PersistedEvent) -> bool:
        """Whether ``event`` is to be parked rather than handled."""
        if not self._park:
            return False
        failed = self._failures.get(event.global_position)
        return failed is not None and failed[0] >= self._attempts

    async def park(self, tx: Any, event: es.PersistedEvent) -> None:
        """Record ``event`` as parked in the batch's transaction."""
        attempts, error = self._failures[event.global_position]
        await self._backend.store.parked.park(tx, self._checkpoint, event, error, attempts)
        self._pending.append(
            ParkedEvent(
                self._checkpoint,
                event.global_position,
                event.event_id,
                event.event_type,
                error,
                attempts,
                datetime.now(UTC),
            )
        )

    def replay(self, err: ProjectionError) -> bool:
        """Count the failure ``err`` reports; whether to replay its batch (else raise it)."""
        batch, self._batch_failed = self._batch_failed, False
        position = err.global_position
        if type(err) is not ProjectionError or position is None:
            return False
        if batch and self._park and not self.one_by_one:
            self._log.info(
                "batch handler failed; handling the batch event by event",
                projection=self._name,
                checkpoint=self._checkpoint,
                global_position=position,
            )
            self.one_by_one = True
            return True
        count = self._failures.get(position, (0, ""))[0] + 1
        self._failures[position] = (count, error_text(err.__cause__ or err))
        if count < self._attempts:
            self._log.info(
                "handler failed; replaying the batch",
                projection=self._name,
                checkpoint=self._checkpoint,
                global_position=position,
                attempt=count,
                attempts=self._attempts,
            )
            return True
        return self._park

    def committed(self) -> None:
        """The batch committed: tell what it parked, and forget its failures."""
        observers = self._backend.store.config.observers
        for parked in self._pending:
            self._log.error(
                "event parked",
                projection=self._name,
                checkpoint=parked.checkpoint,
                global_position=parked.global_position,
                event_id=str(parked.event_id),
                event_type=parked.event_type,
                attempts=parked.attempts,
                error=parked.error,
            )
            notify(observers, "parked", self._name, parked.checkpoint, parked)
        self._pending.clear()
        self._failures.clear()
        self.one_by_one = False


def parking_for(
    config: ProcessorConfig, backend: Backend, log: Logger, name: str, checkpoint: str
) -> Parking | None:
    """The failure memory a run of ``config`` needs; ``None`` when a handler error simply
    stops the run (``OnFailure.STOP`` after one attempt)."""
    if config.on_failure is OnFailure.STOP and config.handler_attempts == 1:
        return None
    return Parking(config, backend, log, name, checkpoint)


async def retry_parked(backend: Backend, log: Logger, projection: Projection, name: str) -> int:
    """Run the parked events of projection ``name`` through ``projection`` again, oldest
    first; how many it handled (and deleted). See ``Processor.retry_parked``."""
    store = backend.store
    async with backend.transaction() as tx:
        summary = await store.parked.summary(tx)
        parked: list[ParkedEvent] = []
        for checkpoint in checkpoint_names(sorted(summary), name):
            parked += await store.parked.events(tx, checkpoint)
    parked.sort(key=lambda row: (row.global_position, row.checkpoint))
    outcomes = [await _retry_one(backend, log, projection, name, row) for row in parked]
    handled = outcomes.count(True)
    if parked:
        log.info(
            "parked events retried",
            projection=name,
            handled=handled,
            still_parked=outcomes.count(False),
        )
    return handled


async def _retry_one(
    backend: Backend, log: Logger, projection: Projection, name: str, row: ParkedEvent
) -> bool | None:
    """Whether the handler took the parked event (``None``: another retry took it)."""
    store = backend.store
    try:
        async with backend.transaction() as tx:
            if not await store.parked.claim(tx, row.checkpoint, row.global_position):
                return None
            events = await store.read_events(tx, row.global_position - 1, 1)
            if not events or events[0].event_id != row.event_id:
                # The log was changed by hand: the record names what is not there.
                raise LookupError(f"event {row.event_id} is not at position {row.global_position}")
            await projection.handle(tx, events[0])
    except Exception as err:
        if backend.is_transient(err):
            raise
        error = error_text(err)
        async with backend.transaction() as tx:
            await store.parked.attempted(tx, row.checkpoint, row.global_position, error)
        log.error(
            "parked event failed again",
            projection=name,
            checkpoint=row.checkpoint,
            global_position=row.global_position,
            event_type=row.event_type,
            attempts=row.attempts + 1,
            error=error,
        )
        return False
    backend.progress.fire()
    log.info(
        "parked event handled",
        projection=name,
        checkpoint=row.checkpoint,
        global_position=row.global_position,
        event_type=row.event_type,
    )
    return True
