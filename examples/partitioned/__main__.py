"""``python -m examples.partitioned [--url URL] [--partitions N]``: a process per partition.

The parent starts N worker processes, ``python -m examples.partitioned worker
--partition-key K --partitions N --url URL``, one per partition of a projection, appends
events, waits until every partition has caught up, and stops the workers with SIGTERM.
Each worker handles only the accounts its partition owns. In production the workers are
separate deployments (containers, systemd units) started the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pupsourcing_async import es
from pupsourcing_async.projection import ProcessorConfig

from ..common.bank import account_opened, append, money_deposited
from ..common.cli import Setup, parser, setup
from ..common.tracking import HandledBy, check_ownership, spread_accounts

NAME = "partitioned_handled"
OWNERS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
# The directory that holds the examples package, for the workers' ``-m``.
ROOT = Path(__file__).resolve().parents[2]


class Worker(HandledBy):
    """HandledBy that says which accounts it meets."""

    def __init__(self, table: str, key: int) -> None:
        super().__init__(NAME, table, worker=f"p{key}")
        self.seen: set[str] = set()
        self.events = 0

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        await super().handle(tx, event)
        self.events += 1
        if event.aggregate_id not in self.seen:
            self.seen.add(event.aggregate_id)
            print(f"handling {event.aggregate_id}", flush=True)


async def work(where: Setup, key: int, partitions: int) -> None:
    """One partition's worker: run until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with where.connect() as db:
        worker = Worker(where.table("partitioned_handled"), key)
        config = ProcessorConfig(
            partition_key=key, total_partitions=partitions, max_poll_interval=0.5
        )
        async with asyncio.TaskGroup() as group:
            running = group.create_task(db.processor(config).run(worker))
            print(f"started (pid {os.getpid()})", flush=True)
            await stop.wait()
            running.cancel()
        print(
            f"stopped cleanly after {worker.events} events of {len(worker.seen)} accounts",
            flush=True,
        )


async def relay(key: int, process: asyncio.subprocess.Process) -> None:
    """Print a worker's output, each line marked with its partition."""
    assert process.stdout is not None
    async for line in process.stdout:
        print(f"  [p{key}] {line.decode().rstrip()}", flush=True)


async def supervise(where: Setup, partitions: int, deposits: int) -> None:
    """Start the workers, append, wait for every partition, stop them, show who did what."""
    async with where.connect() as db:
        await db.migrate()
        table = HandledBy(NAME, where.table("partitioned_handled"), worker="")
        await table.create_table(db)
        processes = []
        for key in range(partitions):
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "examples.partitioned",
                    "worker",
                    "--partition-key",
                    str(key),
                    "--partitions",
                    str(partitions),
                    *where.argv(),
                    cwd=ROOT,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        pids = ", ".join(str(process.pid) for process in processes)
        print(f"Started {partitions} worker processes: pids {pids}")
        async with asyncio.TaskGroup() as group:
            for key, process in enumerate(processes):
                group.create_task(relay(key, process))
            try:
                accounts = spread_accounts(OWNERS, partitions)
                for account, owner in zip(accounts, OWNERS, strict=True):
                    await append(db, [account_opened(account, owner)])
                for n in range(deposits):
                    for account in accounts:
                        last = await append(db, [money_deposited(account, 100 * (n + 1))])
                head = last.global_positions[-1]
                print(
                    f"Appended {len(accounts) * (deposits + 1)} events; waiting for every partition"
                )
                checkpoints = [f"{NAME}_p{key}" for key in range(partitions)]
                await db.wait_for(head, projections=checkpoints, timeout=60)
                print(f"Every partition caught up with position {head}; stopping the workers")
            finally:
                for process in processes:
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                codes = [await process.wait() for process in processes]
        print(f"Workers exited with codes {codes}")

        handled = await table.handled(db, accounts)
        for key, process in enumerate(processes):
            mine = handled.get(f"p{key}", {})
            names = ", ".join(account.split("-")[1] for account in mine) or "(none)"
            print(f"  p{key} (pid {process.pid}): {sum(mine.values()):>3} events: {names}")
        problems = check_ownership(handled, {f"p{k}": k for k in range(partitions)}, partitions)
        print(
            "Each account was handled by one process only: the one whose partition its hash names"
            if not problems
            else "\n".join(problems)
        )
        if any(codes):
            raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> int:
    """Supervise N worker processes, or (``worker``) be one of them."""
    cli = parser("partitioned", "One OS process per partition of a projection.")
    cli.add_argument(
        "--partitions", type=int, default=3, help="how many partitions (and processes)"
    )
    cli.add_argument("--deposits", type=int, default=5, help="deposits per account")
    commands = cli.add_subparsers(dest="command")
    worker = commands.add_parser("worker", help="run one partition until SIGINT/SIGTERM")
    worker.add_argument("--partition-key", type=int, required=True)
    worker.add_argument("--partitions", type=int, required=True)
    worker.add_argument("--url", required=True)
    worker.add_argument("--table-prefix", default="")
    args = cli.parse_args(argv)
    if args.command == "worker":
        asyncio.run(work(Setup(args.url, args.table_prefix), args.partition_key, args.partitions))
        return 0
    with setup(args, "bank.db") as where:
        asyncio.run(supervise(where, args.partitions, args.deposits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
