"""A projection worker process for the crash tests: ``python -m tests.projection_worker``.

Runs a continuous processor that copies every event into a read model table, slowly
enough that a kill lands in the middle of a batch.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async.projection import ProcessorConfig

from .conftest import RawSQL


class Copier:
    """Copies each event into the read model; the primary key refuses a second copy."""

    name = "copier"

    def __init__(self, dialect: str, table: str, delay: float) -> None:
        self.raw = RawSQL(dialect)
        self.table = table
        self.delay = delay

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        await self.raw.execute(
            tx,
            f"INSERT INTO {self.table} (event_id, aggregate_id, global_position) VALUES (?, ?, ?)",
            str(event.event_id),
            event.aggregate_id,
            event.global_position,
        )
        await asyncio.sleep(self.delay)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--delay", type=float, default=0.002)
    args = parser.parse_args()
    config = StoreConfig(
        events_table=f"{args.prefix}_events",
        aggregate_heads_table=f"{args.prefix}_heads",
        checkpoints_table=f"{args.prefix}_checkpoints",
    )
    async with pupsourcing_async.connect(args.url, store_config=config) as db:
        projection = Copier(db.dialect, args.table, args.delay)
        processor = db.processor(
            ProcessorConfig(batch_size=20, poll_interval=0.01, max_poll_interval=0.2)
        )
        print("ready", flush=True)
        await processor.run(projection)


if __name__ == "__main__":
    asyncio.run(main())
