"""A projection worker process for the crash tests: ``python -m tests.projection_worker``.

Runs a continuous processor that copies every event into a read model table, slowly
enough that a kill lands in the middle of a batch. With ``--poison`` it fails on events of
type ``Poison`` and parks them (``OnFailure.PARK``); with ``--hang-at POS`` it prints
``hanging`` once it has handled the event at POS and waits there, its batch not yet
committed, for the kill.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.projection import OnFailure, ProcessorConfig

from .conftest import RawSQL


class Copier:
    """Copies each event into the read model; the primary key refuses a second copy."""

    name = "copier"

    def __init__(
        self,
        dialect: str,
        table: str,
        delay: float,
        *,
        poison: bool = False,
        hang_at: int | None = None,
    ) -> None:
        self.raw = RawSQL(dialect)
        self.table = table
        self.delay = delay
        self.poison = poison
        self.hang_at = hang_at

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if self.poison and event.event_type == "Poison":
            raise ValueError(f"cannot copy event {event.global_position}")
        await self.raw.execute(
            tx,
            f"INSERT INTO {self.table} (event_id, aggregate_id, global_position) VALUES (?, ?, ?)",
            str(event.event_id),
            event.aggregate_id,
            event.global_position,
        )
        if event.global_position == self.hang_at:
            print("hanging", flush=True)
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--delay", type=float, default=0.002)
    parser.add_argument("--poison", action="store_true")
    parser.add_argument("--hang-at", type=int)
    args = parser.parse_args()
    config = StoreConfig(
        events_table=f"{args.prefix}_events",
        aggregate_heads_table=f"{args.prefix}_heads",
        checkpoints_table=f"{args.prefix}_checkpoints",
    )
    async with pupsourcing_async.connect(args.url, store_config=config) as db:
        projection = Copier(
            db.dialect, args.table, args.delay, poison=args.poison, hang_at=args.hang_at
        )
        on_failure = OnFailure.PARK if args.poison else OnFailure.STOP
        processor = db.processor(
            ProcessorConfig(
                batch_size=20, poll_interval=0.01, max_poll_interval=0.2, on_failure=on_failure
            )
        )
        print("ready", flush=True)
        await processor.run(projection)


if __name__ == "__main__":
    asyncio.run(main())
