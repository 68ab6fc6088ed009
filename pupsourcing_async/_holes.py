"""Knowledge about holes in the global log, shared by every reader of one store.

A *hole* is a missing position below a visible one. On databases with concurrent writers
a position is drawn when a row is inserted and becomes visible at commit, so a hole is
either an append still in flight (it will fill) or one that rolled back (it never will).
A reader delivers events only up to the first hole it cannot prove dead.

The proof is a *fence*: a marker the adapter takes after the read that first saw the hole,
such that once the database shows every transaction older than the fence has ended, any
position of the hole still missing is dead. What a fence is (a transaction id, a
registration row) and how it is checked belong to the adapter; this module only keeps the
book: which ranges are pending, which have a fence, which are settled.

Whether a hole is dead is always judged from the snapshot of the read at hand: a read
whose snapshot is older than the proof may still miss a position that has since committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["HoleTracker", "PendingHole", "hole_above"]

FenceT = TypeVar("FenceT")


@dataclass(frozen=True, slots=True)
class PendingHole:
    """A run of missing positions that readers wait on.

    Attributes:
        first_position: The lowest missing position of the run.
        last_position: The highest missing position of the run.
        age: Seconds since a reader first saw it.
        fenced: Whether a proof has been started for it.
    """

    first_position: int
    last_position: int
    age: float
    fenced: bool


class _Range(Generic[FenceT]):
    __slots__ = ("end", "fence", "first_seen", "settled", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start  # inclusive
        self.end = end  # exclusive
        self.fence: FenceT | None = None
        self.settled = False
        self.first_seen = time.monotonic()


def hole_above(holes: Iterable[PendingHole], position: int) -> bool:
    """Whether the log past ``position`` may still fill in: a reader that found nothing
    new should look again soon rather than settle down to wait."""
    return any(hole.last_position > position for hole in holes)


class HoleTracker(Generic[FenceT]):
    """The pending and settled hole ranges of one event log.

    Ranges are disjoint and kept sorted. The number of ranges is bounded: the oldest
    settled ones are forgotten first, which costs a slow reader at most one more proof.
    """

    def __init__(self, *, max_ranges: int = 1024) -> None:
        self._ranges: list[_Range[FenceT]] = []
        self._max_ranges = max_ranges

    def deliverable(
        self, from_position: int, positions: Sequence[int], is_settled: Callable[[FenceT], bool]
    ) -> int:
        """How many of ``positions`` (ascending, all above ``from_position``) may be delivered.

        ``is_settled(fence)`` must answer from the same snapshot the positions were read in.
        A newly seen hole is recorded; :meth:`needs_fence` then tells the adapter to fence it.
        """
        if self._ranges:
            self._settle(is_settled)
        expected = from_position + 1
        for index, position in enumerate(positions):
            if position != expected and not self._dead(expected, position, is_settled):
                self._record(expected, position)
                return index
            expected = position + 1
        return len(positions)

    def needs_fence(self) -> bool:
        """Whether a recorded hole still waits for its fence."""
        return any(r.fence is None and not r.settled for r in self._ranges)

    def set_fence(self, fence: FenceT) -> None:
        """Fence every recorded hole that has none yet.

        The fence must have been taken after the read that recorded those holes.
        """
        for r in self._ranges:
            if r.fence is None and not r.settled:
                r.fence = fence

    def pending_fences(self) -> set[FenceT]:
        """The fences of the ranges not yet proven settled."""
        return {r.fence for r in self._ranges if r.fence is not None and not r.settled}

    def pending(self) -> list[PendingHole]:
        """The ranges not yet proven settled, lowest first."""
        now = time.monotonic()
        return [
            PendingHole(r.start, r.end - 1, now - r.first_seen, r.fence is not None)
            for r in self._ranges
            if not r.settled
        ]

    def _settle(self, is_settled: Callable[[FenceT], bool]) -> None:
        # Only for reporting and pruning: delivery re-checks every fence in its own snapshot.
        for r in self._ranges:
            if not r.settled and r.fence is not None and is_settled(r.fence):
                r.settled = True

    def _dead(self, start: int, end: int, is_settled: Callable[[FenceT], bool]) -> bool:
        """Whether ranges settled in this read's snapshot cover all of ``[start, end)``."""
        cursor = start
        for r in self._ranges:
            if r.end <= cursor:
                continue
            if r.start > cursor or r.fence is None or not is_settled(r.fence):
                return False
            cursor = r.end
            if cursor >= end:
                return True
        return False

    def _record(self, start: int, end: int) -> None:
        """Add ranges for the positions of ``[start, end)`` no range covers yet."""
        added: list[_Range[FenceT]] = []
        cursor = start
        for r in self._ranges:
            if r.end <= cursor:
                continue
            if r.start >= end:
                break
            if r.start > cursor:
                added.append(_Range(cursor, r.start))
            cursor = max(cursor, r.end)
        if cursor < end:
            added.append(_Range(cursor, end))
        if added:
            self._ranges.extend(added)
            self._ranges.sort(key=lambda r: r.start)
            self._prune()

    def _prune(self) -> None:
        excess = len(self._ranges) - self._max_ranges
        if excess <= 0:
            return
        # Forget settled ranges first, oldest first; pending ones only if nothing else is left.
        by_age = sorted(self._ranges, key=lambda r: (not r.settled, r.first_seen))
        forgotten = {id(r) for r in by_age[:excess]}
        self._ranges = [r for r in self._ranges if id(r) not in forgotten]
