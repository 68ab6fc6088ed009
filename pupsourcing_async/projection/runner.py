"""Running many projections at once, fail-fast."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ..errors import ProjectionError, ProjectionStoppedError
from .base import Projection
from .config import ProcessorConfig
from .parking import error_text
from .runs import runs_of

if TYPE_CHECKING:
    from ..database import Database

__all__ = ["run_projections"]

TxT = TypeVar("TxT")


async def run_projections(
    db: Database[TxT], projections: Sequence[tuple[Projection[TxT], ProcessorConfig]]
) -> None:
    """Run every ``(projection, config)`` pair concurrently in one task group.

    Returns when all of them have returned (``RunMode.ONE_OFF`` ones return once caught
    up). The first failure cancels the others — each rolls back its batch in flight and
    releases its lease — and is raised as a ``ProjectionError`` naming its projection.
    Cancelling the call stops them all the same way. The ones stopped so are reported
    stopped by ``Database.health()``, with the failure that stopped them.

    Raises:
        ProjectionError: a handler failed (``__cause__`` is its exception), or a
            processor stopped (``ProjectionStoppedError``).
    """
    if not projections:
        return

    async def run_one(projection: Projection[TxT], config: ProcessorConfig) -> None:
        name = getattr(projection, "name", repr(projection))
        try:
            await db.processor(config).run(projection)
        except ProjectionError:
            raise
        except Exception as err:
            raise ProjectionStoppedError(
                f"projection {name} stopped: {type(err).__name__}: {err}", projection=str(name)
            ) from err

    try:
        async with asyncio.TaskGroup() as group:
            for projection, config in projections:
                name = getattr(projection, "name", "projection")
                group.create_task(run_one(projection, config), name=f"projection {name}")
    except ExceptionGroup as failures:
        # Only ProjectionErrors reach here (run_one wraps the rest); the first one won.
        first = failures.exceptions[0]
        runs = runs_of(db.store)
        for projection, config in projections:
            name = str(getattr(projection, "name", "projection"))
            reason = error_text(first)
            if isinstance(first, ProjectionError) and first.projection != name:
                reason = f"stopped as projection {first.projection} failed: {reason}"
            runs.stopped(name, config.checkpoint_name(name), reason)
        raise first from first.__cause__
