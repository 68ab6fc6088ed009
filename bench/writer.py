"""W6's writer in a process of its own: appends on command, reports commit times.

Started by :mod:`bench.latency` as ``python -m bench.writer URL PREFIX SIDES`` (``SIDES``
comma-separated); it opens an appender per side: a side that runs on the library's
``Database`` (``on_library`` in :mod:`bench.sides`) appends with its own
``append_singles`` on the library's tables, the same-SQL side through the library on its
tables, the minimal side with its own code on its table. It prints ``ready``, then reads
commands from standard input, one per line:

- ``append SIDE TAG COUNT RATE``: append ``COUNT`` single events, one per transaction, at
  ``RATE`` per second (aggregate ids ``w6-TAG-0``, ``w6-TAG-1``, ...) on ``SIDE``'s
  tables; then print ``AGGREGATE_ID STARTED RETURNED`` per event and ``done``;
- ``quit``: close and exit.

``STARTED`` and ``RETURNED`` are ``time.perf_counter()`` readings before the append's
transaction began and after its block returned (committed). On Linux ``perf_counter``
reads ``CLOCK_MONOTONIC``, one clock for every process of the machine, so the consumer in
the parent process can subtract them from its own readings.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeAlias

import pupsourcing_async
from pupsourcing_async import Database, es

from . import minimal_mysql, minimal_postgres, minimal_sqlite
from .common import MinimalTables, Side, make_events, side_configs
from .postgres import raw_dsn
from .sides import SIDE_SPECS

__all__ = ["append_at_rate", "main"]

#: Appends one event, durably, before it returns.
Appender: TypeAlias = Callable[[Sequence[es.Event]], Awaitable[None]]


def library_appender(db: Database) -> Appender:
    """Appends through the library: ``db.transaction()`` and ``db.store.append``."""

    async def append(events: Sequence[es.Event]) -> None:
        async with db.transaction() as tx:
            await db.store.append(tx, es.Any(), events)

    return append


class _NoReadModel:
    """The read model of a writer's side: the writer only appends."""

    async def upsert(self, tx: Any, aggregate_id: str, position: int) -> None:
        """Never called: the writer runs no projection."""
        raise RuntimeError("the writer process runs no projection")


@asynccontextmanager
async def _minimal(url: str, prefix: str) -> AsyncIterator[Appender]:
    """The minimal side's own appends, on its table, with one connection."""
    tables = MinimalTables(prefix)
    if url.startswith("sqlite"):
        async with minimal_sqlite.connect(url.removeprefix("sqlite:///"), tables, 1) as side:
            yield lambda events: side.append_singles(events, exact=False)
    elif url.startswith(("mysql", "mariadb")):
        async with minimal_mysql.connect(url, tables, 1) as my_side:
            yield lambda events: my_side.append_singles(events, exact=False)
    else:
        async with minimal_postgres.connect(raw_dsn(url), tables, 1) as pg_side:
            yield lambda events: pg_side.append_singles(events, exact=False)


async def append_at_rate(
    append: Appender, tag: str, count: int, rate: float
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
        await append(events)
        committed[aggregate_id] = (started, time.perf_counter())
    return committed


async def serve(url: str, prefix: str, sides: Sequence[Side]) -> None:
    """Open an appender per side and run commands from standard input until ``quit``."""
    configs = side_configs(prefix)
    options: dict[str, Any] = {"busy_timeout": 10.0} if url.startswith("sqlite") else {}
    loop = asyncio.get_running_loop()
    appenders: dict[str, Appender] = {}
    async with AsyncExitStack() as stack:
        for side in sides:
            make = SIDE_SPECS[side].on_library
            if make is not None or side == "raw":
                config = configs["raw" if make is None else "library"]
                db = await stack.enter_async_context(
                    pupsourcing_async.connect(
                        url, store_config=config, max_size=2, pool_options=options
                    )
                )
                if make is None:
                    appenders[side] = library_appender(db)
                else:
                    library_side = make(db, _NoReadModel())
                    appenders[side] = functools.partial(library_side.append_singles, exact=False)
            elif side == "minimal":
                appenders[side] = await stack.enter_async_context(_minimal(url, prefix))
            else:
                raise ValueError(f"the writer cannot append for the {side} side")
        print("ready", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split()
            if not words or words[0] == "quit":
                return
            if words[0] != "append" or len(words) != 5:
                raise ValueError(f"unknown command: {line.strip()!r}")
            _, side, tag, count, rate = words
            committed = await append_at_rate(appenders[side], tag, int(count), float(rate))
            lines = [f"{key} {began!r} {ended!r}" for key, (began, ended) in committed.items()]
            print("\n".join([*lines, "done"]), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the writer; see the module docstring."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m bench.writer URL PREFIX SIDE[,SIDE...]", file=sys.stderr)
        return 2
    asyncio.run(serve(args[0], args[1], args[2].split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
