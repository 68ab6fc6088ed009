"""``python -m examples.worker_pool [--url URL] [--workers N]``: a pool in one process.

One projection split into N partitions, each run by its own worker task: a worker
handles only the accounts whose FNV-1a hash names its partition, with a checkpoint of
its own (``<name>_p<key>``). ``run_projections`` runs the pool in one task group; the
workers start first and the events arrive while they run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pupsourcing_async.projection import ProcessorConfig, run_projections

from ..common.bank import account_opened, append, money_deposited
from ..common.cli import Setup, parser, setup
from ..common.tracking import HandledBy, check_ownership, spread_accounts

NAME = "pool_handled"
OWNERS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")


async def story(where: Setup, workers: int, deposits: int) -> None:
    """Start the pool, append, wait for every partition, and show who handled what."""
    async with where.connect() as db:
        await db.migrate()
        table = where.table("pool_handled")
        pool = [
            (
                HandledBy(NAME, table, worker=f"p{key}"),
                ProcessorConfig(partition_key=key, total_partitions=workers, max_poll_interval=0.5),
            )
            for key in range(workers)
        ]
        await pool[0][0].create_table(db)
        accounts = spread_accounts(OWNERS, workers)

        async with asyncio.TaskGroup() as group:
            runner = group.create_task(run_projections(db, pool))
            print(f"{workers} workers running in one process, one per partition of {NAME}")
            for account, owner in zip(accounts, OWNERS, strict=True):
                await append(db, [account_opened(account, owner)])
            for n in range(deposits):
                for account in accounts:
                    last = await append(db, [money_deposited(account, 100 * (n + 1))])
            head = last.global_positions[-1]
            print(f"Appended {len(accounts) * (deposits + 1)} events to {len(accounts)} accounts")
            # Naming each partition's checkpoint waits for every worker, even one not started yet.
            checkpoints = [f"{NAME}_p{key}" for key in range(workers)]
            await db.wait_for(head, projections=checkpoints, timeout=60)
            runner.cancel()
        print(f"Every partition caught up with position {head}; the pool stopped")

        handled = await pool[0][0].handled(db, accounts)
        for key in range(workers):
            mine = handled.get(f"p{key}", {})
            names = ", ".join(account.split("-")[1] for account in mine) or "(none)"
            print(f"  p{key}: {sum(mine.values()):>3} events of {_accounts(len(mine))}: {names}")
        problems = check_ownership(handled, {f"p{k}": k for k in range(workers)}, workers)
        print(
            "Each account was handled by one partition only: the one its hash names"
            if not problems
            else "\n".join(problems)
        )


def _accounts(count: int) -> str:
    return f"{count} account" if count == 1 else f"{count} accounts"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pool; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("worker_pool", "N partitions of one projection as tasks in one process.")
    cli.add_argument("--workers", type=int, default=4, help="partitions, one worker each")
    cli.add_argument("--deposits", type=int, default=5, help="deposits per account")
    args = cli.parse_args(argv)
    with setup(args, "bank.db") as where:
        asyncio.run(story(where, args.workers, args.deposits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
