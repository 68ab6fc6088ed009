"""What ``Database.health()`` reports, and how it judges a projection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._holes import PendingHole
from .adapters._shared import checkpoint_names
from .projection.runs import runs_of

if TYPE_CHECKING:
    from .adapters.base import Backend, CheckpointRow

__all__ = ["HealthReport", "ProjectionHealth", "projection_health"]


@dataclass(frozen=True, slots=True)
class ProjectionHealth:
    """One projection checkpoint's health.

    Attributes:
        name: The checkpoint's name.
        position: Its last processed position.
        lag: Positions behind the head of the log.
        updated_at: When it last moved.
        leased: Whether a worker (in any process) holds its lease; ``None`` on SQLite,
            which has no leases.
        progressing: Caught up, or moved within ``stale_after`` seconds, and not stopped.
        parked: How many events it has parked.
        last_error: Why its runner stopped, when ``stopped``; else the error of the
            newest event it parked, if any.
        stopped: Its runner in this process stopped on an error (another process may
            still run it).
    """

    name: str
    position: int
    lag: int
    updated_at: datetime | None
    leased: bool | None
    progressing: bool
    parked: int = 0
    last_error: str | None = None
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What ``Database.health()`` found.

    Attributes:
        reachable: Whether the database answered.
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
        location: Where it is (no password).
        latency: Seconds the check took.
        head_position: The highest committed position, when reachable.
        projections: Every checkpoint, by name.
        pending_holes: Holes in the log this process's readers wait on, with their age.
        error: Why it was not reachable.
        schema_notes: What the tables lack for the library's guarantees (a missing
            registration trigger, a case-insensitive collation of a Go-made table).
    """

    reachable: bool
    dialect: str
    location: str
    latency: float
    head_position: int | None
    projections: list[ProjectionHealth]
    pending_holes: list[PendingHole]
    error: str | None
    schema_notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Reachable, and every projection progressing."""
        return self.reachable and all(p.progressing for p in self.projections)

    @property
    def problems(self) -> list[str]:
        """Why the report is not ok, one sentence each; empty when it is."""
        if not self.reachable:
            return [f"the database at {self.location} does not answer: {self.error}"]
        found = []
        for p in self.projections:
            if p.stopped:
                found.append(f"projection {p.name} stopped: {p.last_error}")
            elif not p.progressing:
                moved = "never" if p.updated_at is None else f"last at {p.updated_at.isoformat()}"
                found.append(
                    f"projection {p.name} is not progressing: {p.lag} behind, "
                    f"its checkpoint moved {moved}"
                )
        return found

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data (for a ``/health`` endpoint)."""
        return {
            "ok": self.ok,
            "reachable": self.reachable,
            "dialect": self.dialect,
            "location": self.location,
            "latency_ms": round(self.latency * 1000, 3),
            "head_position": self.head_position,
            "error": self.error,
            "problems": self.problems,
            "projections": [
                {
                    "name": p.name,
                    "position": p.position,
                    "lag": p.lag,
                    "updated_at": None if p.updated_at is None else p.updated_at.isoformat(),
                    "leased": p.leased,
                    "progressing": p.progressing,
                    "stopped": p.stopped,
                    "parked": p.parked,
                    "last_error": p.last_error,
                }
                for p in self.projections
            ],
            "pending_holes": [
                {"first": h.first_position, "last": h.last_position, "age_s": round(h.age, 3)}
                for h in self.pending_holes
            ],
            "schema_notes": list(self.schema_notes),
        }


async def projection_health(
    backend: Backend,
    head: int,
    rows: list[CheckpointRow],
    parked: dict[str, tuple[int, str]],
    wanted: Sequence[str] | None,
    stale_after: float,
) -> list[ProjectionHealth]:
    """The health of the checkpoints ``wanted`` names (each projection with its
    partitions), or of every checkpoint, from the rows read and this process's runs."""
    runs = runs_of(backend.store)
    by_name = {row.name: row for row in rows}
    known = sorted(set(by_name) | set(runs.checkpoints()))
    if wanted is None:
        checkpoints = known
    else:
        checkpoints = []
        for projection in wanted:
            for name in checkpoint_names(known, projection) or [projection]:
                if name not in checkpoints:
                    checkpoints.append(name)
    now = datetime.now(UTC)
    found = []
    for name in checkpoints:
        row = by_name.get(name)
        position = row.position if row is not None else 0
        updated_at = row.updated_at if row is not None else None
        lag = max(head - position, 0)
        fresh = updated_at is not None and (now - updated_at).total_seconds() < stale_after
        run = runs.get(name)
        stopped = run is not None and run.stopped
        count, newest_error = parked.get(name, (0, None))
        found.append(
            ProjectionHealth(
                name=name,
                position=position,
                lag=lag,
                updated_at=updated_at,
                leased=await backend.lease_held(name),
                progressing=not stopped and (lag == 0 or fresh),
                parked=count,
                last_error=run.error if run is not None and stopped else newest_error,
                stopped=stopped,
            )
        )
    return found
