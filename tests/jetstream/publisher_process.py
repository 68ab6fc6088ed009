"""A publisher worker process for the crash test: ``python -m tests.jetstream.publisher_process``.

Runs the worker runtime with a publisher that pauses after each batch's acknowledgements,
before its checkpoint commits, so that a kill lands in the middle of a batch: published,
not yet checkpointed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import pupsourcing_async
from pupsourcing_async import StoreConfig, es
from pupsourcing_async import nats as pnats
from pupsourcing_async._worker import run_worker
from pupsourcing_async.projection import ProcessorConfig


class SlowPublisher(pnats.Publisher):
    """Lingers between a batch's acknowledgements and its commit."""

    delay = 0.0

    async def handle_batch(self, tx: Any, events: Sequence[es.PersistedEvent]) -> None:
        await super().handle_batch(tx, events)
        await asyncio.sleep(self.delay)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True, help="the table names' prefix")
    parser.add_argument("--nats", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--subject-prefix", required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=10)
    args = parser.parse_args()
    config = StoreConfig(
        events_table=f"{args.prefix}_events",
        aggregate_heads_table=f"{args.prefix}_heads",
        checkpoints_table=f"{args.prefix}_checkpoints",
    )
    async with pupsourcing_async.connect(args.url, store_config=config) as db:
        client = await pnats.connect(args.nats, timeout=20, reconnect_wait=0.05)
        try:
            publisher = SlowPublisher(
                client, args.stream, subject_prefix=args.subject_prefix, ack_timeout=1.0
            )
            publisher.delay = args.delay
            processing = ProcessorConfig(
                batch_size=args.batch_size,
                poll_interval=0.01,
                max_poll_interval=0.05,
                retry_initial_delay=0.01,
                retry_max_delay=0.2,
                lease_poll_interval=0.05,
            )
            async with publisher:
                return await run_worker(db, [(publisher, processing)], progress_interval=1.0)
        finally:
            await client.close()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
