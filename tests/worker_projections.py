"""Projections for the ``pupsourcing-async worker`` and ``projections retry`` tests, named
as ``tests.worker_projections:ATTR``. The read model's table and dialect come from
``WORKER_TEST_TABLE`` and ``WORKER_TEST_DIALECT``; ``WORKER_TEST_DELAY`` slows each event."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pupsourcing_async import es

from .conftest import RawSQL


class Copier:
    """Copies each event into the read model, whose primary key refuses a second copy;
    with ``poison`` it fails on the events of type ``Poison``."""

    def __init__(self, name: str = "copier", *, poison: bool = False) -> None:
        self.name = name
        self.poison = poison
        self.raw = RawSQL(os.environ["WORKER_TEST_DIALECT"])
        self.table = os.environ["WORKER_TEST_TABLE"]
        self.delay = float(os.environ.get("WORKER_TEST_DELAY", "0"))

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if self.poison and event.event_type == "Poison":
            raise ValueError(f"cannot handle event {event.global_position}")
        await self.raw.execute(
            tx,
            f"INSERT INTO {self.table} (event_id, aggregate_id, global_position) VALUES (?, ?, ?)",
            str(event.event_id),
            event.aggregate_id,
            event.global_position,
        )
        if self.delay:
            await asyncio.sleep(self.delay)


def copier() -> Copier:
    """The callable form: one projection."""
    return Copier()


def poisoned() -> list[Copier]:
    """A list, made by a callable: a projection that fails on ``Poison`` events."""
    return [Copier(poison=True)]


async def fixed() -> Copier:
    """An async callable: the same projection, its handler fixed."""
    return Copier()


NOT_A_PROJECTION = 42
TWINS = [Copier(), Copier()] if "WORKER_TEST_TABLE" in os.environ else []
