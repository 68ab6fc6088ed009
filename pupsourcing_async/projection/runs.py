"""Which projections run in this process, and which stopped on an error.

A checkpoint row says where a projection got to, not whether anything still works on it:
a runner that died on a bad event leaves a row that looks fresh for a while.
``Database.health()`` therefore also asks this process's registry, which
``Processor.run`` and ``run_projections`` keep: a projection whose runner here stopped on
an error is reported stopped, with that error, at once. There is one registry per store
object (so per ``Database``), dropped with it.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from .parking import error_text

__all__ = ["RunState", "Runs", "runs_of"]


@dataclass(slots=True)
class RunState:
    """One checkpoint's runs in this process.

    Attributes:
        projection: The projection's name.
        checkpoint: The checkpoint its runs write.
        running: How many runs of it are in progress (a second one waits for the lease).
        error: Why the last run stopped, if it stopped on an error and none runs now.
        stopped_at: When it stopped so.
    """

    projection: str
    checkpoint: str
    running: int = 0
    error: str | None = None
    stopped_at: datetime | None = None

    @property
    def stopped(self) -> bool:
        """No run is in progress and the last one stopped on an error."""
        return self.running == 0 and self.error is not None


class Runs:
    """The runs of projections over one store, in this process."""

    def __init__(self) -> None:
        self._states: dict[str, RunState] = {}

    def get(self, checkpoint: str) -> RunState | None:
        """What is known of ``checkpoint``'s runs here, if any ran."""
        return self._states.get(checkpoint)

    def checkpoints(self) -> list[str]:
        """Every checkpoint that has run here and is running or stopped on an error."""
        return sorted(c for c, s in self._states.items() if s.running or s.error is not None)

    @asynccontextmanager
    async def running(self, projection: str, checkpoint: str) -> AsyncIterator[None]:
        """Count a run of ``checkpoint`` for the block; an error out of it is recorded
        (a cancellation is a clean stop, and a return a clean end)."""
        state = self._states.setdefault(checkpoint, RunState(projection, checkpoint))
        state.running += 1
        state.error = state.stopped_at = None
        try:
            yield
        except Exception as err:
            state.running -= 1
            self._stop(state, error_text(err))
            raise
        except BaseException:
            state.running -= 1
            raise
        state.running -= 1

    def stopped(self, projection: str, checkpoint: str, reason: str) -> None:
        """Record that ``checkpoint`` stopped for ``reason`` (a runner stopped it because
        another projection failed, or it failed before it could start), unless a run of
        it is still in progress or its own error is recorded."""
        state = self._states.setdefault(checkpoint, RunState(projection, checkpoint))
        if state.running == 0 and state.error is None:
            self._stop(state, reason)

    @staticmethod
    def _stop(state: RunState, reason: str) -> None:
        if state.running == 0:
            state.error = reason
            state.stopped_at = datetime.now(UTC)


_REGISTRIES: weakref.WeakKeyDictionary[object, Runs] = weakref.WeakKeyDictionary()


def runs_of(store: object) -> Runs:
    """The registry of the projections that run over ``store`` in this process."""
    runs = _REGISTRIES.get(store)
    if runs is None:
        runs = _REGISTRIES[store] = Runs()
    return runs
