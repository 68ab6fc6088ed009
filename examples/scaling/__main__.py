"""``python -m examples.scaling [--url URL] [--partitions N]``: adding workers while running.

A projection is split into N partitions from the start, but runs with one worker: only
partition 0's accounts are kept up to date. Workers for the other partitions are then
added one by one while deposits keep arriving; each catches up from its own checkpoint.
Last, a second worker for partition 0 joins as a standby: on PostgreSQL and MySQL it
waits for the lease the first one holds and takes over when that one stops; on SQLite,
which has no leases, the two take turns under the write lock. No event is handled twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from pupsourcing_async import Database
from pupsourcing_async.projection import HashPartitionStrategy, ProcessorConfig

from ..common.bank import account_opened, append, money_deposited
from ..common.cli import Setup, parser, setup
from ..common.tracking import HandledBy, spread_accounts

NAME = "scaling_handled"
OWNERS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")


class LeaseWatcher:
    """A logger for the processor (``ProcessorConfig(logger=...)``) that notices when a
    worker starts waiting for another's lease, and passes everything on to ``logging``."""

    def __init__(self) -> None:
        self.waiting = asyncio.Event()
        self._log = logging.getLogger("examples.scaling")

    def debug(self, msg: str, **fields: object) -> None:
        self._log.debug("%s %s", msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        if msg.startswith("waiting for the lease"):
            self.waiting.set()
        self._log.info("%s %s", msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._log.error("%s %s", msg, fields)


async def deposit_rounds(db: Database, accounts: list[str], rounds: int) -> int:
    """A deposit into every account, ``rounds`` times; the last position."""
    position = 0
    for n in range(rounds):
        for account in accounts:
            result = await append(db, [money_deposited(account, 100 * (n + 1))])
            position = result.global_positions[-1]
    return position


async def story(where: Setup, partitions: int) -> None:
    """Scale from one worker to N, then fail partition 0 over to a standby."""
    async with where.connect() as db:
        await db.migrate()
        table = where.table("scaling_handled")
        tracker = HandledBy(NAME, table, worker="")
        await tracker.create_table(db)
        accounts = spread_accounts(OWNERS, partitions)
        strategy = HashPartitionStrategy()
        owned = {
            key: [a for a in accounts if strategy.should_process(a, key, partitions)]
            for key in range(partitions)
        }
        watcher = LeaseWatcher()

        def config(key: int) -> ProcessorConfig:
            return ProcessorConfig(
                partition_key=key,
                total_partitions=partitions,
                max_poll_interval=0.5,
                lease_poll_interval=0.1,
                logger=watcher,
            )

        def checkpoint(key: int) -> str:
            return f"{NAME}_p{key}"

        async with asyncio.TaskGroup() as group:
            workers = {
                "p0": group.create_task(db.processor(config(0)).run(HandledBy(NAME, table, "p0")))
            }
            print(f"Phase 1: one worker, for partition 0 of {partitions}")
            for account, owner in zip(accounts, OWNERS, strict=True):
                await append(db, [account_opened(account, owner)])
            head = await deposit_rounds(db, accounts, 2)
            await db.wait_for(head, projections=[checkpoint(0)], timeout=60)
            status = {s.name: s.position for s in await db.projection_status()}
            print(f"  p0 caught up with position {head}; its accounts: {_names(owned[0])}")
            behind = [key for key in range(1, partitions) if checkpoint(key) not in status]
            print(f"  partitions {_keys(behind)} have no worker yet: their accounts wait")

            print(f"Phase 2: adding workers while deposits arrive, up to {partitions}")
            producer = group.create_task(deposit_rounds(db, accounts, 3))
            for key in range(1, partitions):
                name = f"p{key}"
                workers[name] = group.create_task(
                    db.processor(config(key)).run(HandledBy(NAME, table, name))
                )
                await db.wait_for(1, projections=[checkpoint(key)], timeout=60)
                print(f"  {name} started and is catching up on {_names(owned[key])}")
            head = await producer
            await db.wait_for(
                head, projections=[checkpoint(k) for k in range(partitions)], timeout=60
            )
            print(f"  all {partitions} partitions caught up with position {head}")

            print("Phase 3: a second worker for partition 0")
            workers["p0-standby"] = group.create_task(
                db.processor(config(0)).run(HandledBy(NAME, table, "p0-standby"))
            )
            if db.dialect == "sqlite":
                print("  SQLite has no leases: the two take turns under its write lock")
            else:
                async with asyncio.timeout(30):
                    await watcher.waiting.wait()
                print("  p0-standby waits for the lease p0 holds")
            workers["p0"].cancel()
            print("  p0 stopped")
            head = await deposit_rounds(db, owned[0], 2)
            await db.wait_for(head, projections=[checkpoint(0)], timeout=60)
            for task in workers.values():
                task.cancel()

        handled = await tracker.handled(db, accounts)
        standby = sum(handled.get("p0-standby", {}).values())
        print(f"  p0-standby took over partition 0 and handled the {standby} deposits since")
        appended = len(accounts) * 6 + len(owned[0]) * 2
        total = sum(sum(counts.values()) for counts in handled.values())
        if total == appended:
            print(f"All {appended} events handled exactly once (the table's key forbids twice)")
        else:
            print(f"MISSED: {appended} events appended, {total} handled")
        for worker in sorted(handled):
            print(f"  {worker:<11} {sum(handled[worker].values()):>3} events")


def _names(accounts: list[str]) -> str:
    return ", ".join(account.split("-")[1] for account in accounts) or "(none)"


def _keys(keys: list[int]) -> str:
    return ", ".join(map(str, keys)) or "(none)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("scaling", "Adding workers to a running projection.")
    cli.add_argument("--partitions", type=int, default=4, help="how many partitions")
    args = cli.parse_args(argv)
    with setup(args, "bank.db") as where:
        asyncio.run(story(where, args.partitions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
