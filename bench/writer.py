"""W6's writer in a process of its own: appends on command, reports commit times.

Started by :mod:`bench.latency` as ``python -m bench.writer URL PREFIX``; it opens one
``Database`` per side on the tables ``side_configs(PREFIX)`` names, prints ``ready``, then
reads commands from standard input, one per line:

- ``append SIDE TAG COUNT RATE``: append ``COUNT`` single events, one per transaction, at
  ``RATE`` per second (aggregate ids ``w6-TAG-0``, ``w6-TAG-1``, ...) through the library,
  on ``SIDE``'s tables; then print ``AGGREGATE_ID STARTED RETURNED`` per event and
  ``done``;
- ``quit``: close and exit.

``STARTED`` and ``RETURNED`` are ``time.perf_counter()`` readings before the append's
transaction began and after its block returned (committed). On Linux ``perf_counter``
reads ``CLOCK_MONOTONIC``, one clock for every process of the machine, so the consumer in
the parent process can subtract them from its own readings.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import Any

import pupsourcing_async
from pupsourcing_async import Database, es

from .common import SIDES, make_events, side_configs

__all__ = ["append_at_rate", "main"]


async def append_at_rate(
    db: Database, tag: str, count: int, rate: float
) -> dict[str, tuple[float, float]]:
    """Append ``count`` single-event aggregates at ``rate`` per second.

    Returns:
        Each aggregate id with the ``perf_counter()`` readings before its append began and
        after it returned.
    """
    committed: dict[str, tuple[float, float]] = {}
    first = time.perf_counter()
    for index in range(count):
        delay = first + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        aggregate_id = f"w6-{tag}-{index}"
        events = make_events(aggregate_id, 1)
        started = time.perf_counter()
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), events)
        committed[aggregate_id] = (started, time.perf_counter())
    return committed


async def serve(url: str, prefix: str) -> None:
    """Open both sides' databases and run commands from standard input until ``quit``."""
    configs = side_configs(prefix)
    options: dict[str, Any] = {"busy_timeout": 10.0} if url.startswith("sqlite") else {}
    loop = asyncio.get_running_loop()
    databases: dict[str, Database] = {}
    try:
        for side in SIDES:
            databases[side] = await pupsourcing_async.connect(
                url, store_config=configs[side], max_size=2, pool_options=options
            )
        print("ready", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                return
            if words[0] != "append" or len(words) != 5:
                raise ValueError(f"unknown command: {line.strip()!r}")
            _, side, tag, count, rate = words
            committed = await append_at_rate(databases[side], tag, int(count), float(rate))
            lines = [f"{key} {began!r} {ended!r}" for key, (began, ended) in committed.items()]
            print("\n".join([*lines, "done"]), flush=True)
    finally:
        for db in databases.values():
            await db.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the writer; see the module docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m bench.writer URL PREFIX", file=sys.stderr)
        return 2
    asyncio.run(serve(args[0], args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
