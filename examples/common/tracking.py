"""A projection that records which worker handled each event, for the scaling examples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pupsourcing_async import Database, es
from pupsourcing_async.projection import HashPartitionStrategy

from .bank import ACCOUNT, CONTEXT, run_id
from .sql import SQL

__all__ = ["HandledBy", "check_ownership", "spread_accounts"]


class HandledBy:
    """Writes ``(global_position, account_id, worker)`` for every account event it handles.

    The position is the primary key: an event handled twice would fail the batch.

    Args:
        name: The projection's name; every worker of one projection shares it.
        table: The read model's table.
        dialect: ``Database.dialect``.
        worker: Who this instance is, as recorded in the table.
    """

    aggregate_types = (ACCOUNT,)
    bounded_contexts = (CONTEXT,)

    def __init__(self, name: str, table: str, dialect: str, worker: str) -> None:
        self.name = name
        self.table = table
        self.sql = SQL(dialect)
        self.worker = worker

    async def create_table(self, db: Database) -> None:
        """Create the read model's table if it does not exist."""
        async with db.transaction() as tx:
            await self.sql.execute(
                tx,
                f"CREATE TABLE IF NOT EXISTS {self.table} (global_position BIGINT PRIMARY KEY, "
                "account_id VARCHAR(255) NOT NULL, worker VARCHAR(64) NOT NULL)",
            )

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        """Record that this worker handled ``event``."""
        await self.sql.execute(
            tx,
            f"INSERT INTO {self.table} VALUES (?, ?, ?)",
            event.global_position,
            event.aggregate_id,
            self.worker,
        )

    async def handled(self, db: Database, accounts: list[str]) -> dict[str, dict[str, int]]:
        """For each worker, how many events of each of ``accounts`` it handled."""
        found: dict[str, dict[str, int]] = defaultdict(dict)
        async with db.transaction() as tx:
            for account in accounts:
                rows = await self.sql.fetch(
                    tx,
                    f"SELECT worker, COUNT(*) FROM {self.table} "
                    "WHERE account_id = ? GROUP BY worker",
                    account,
                )
                for worker, count in rows:
                    found[str(worker)][account] = int(count)
        return dict(found)


def check_ownership(
    handled: dict[str, dict[str, int]], partition_of_worker: dict[str, int], total: int
) -> list[str]:
    """What is wrong with ``handled``: an account seen by two partitions, or by the wrong one."""
    strategy = HashPartitionStrategy()
    problems = []
    owners: dict[str, set[int]] = defaultdict(set)
    for worker, accounts in handled.items():
        for account in accounts:
            owners[account].add(partition_of_worker[worker])
    for account, partitions in sorted(owners.items()):
        if len(partitions) > 1:
            problems.append(f"{account} was handled by partitions {sorted(partitions)}")
        elif not strategy.should_process(account, next(iter(partitions)), total):
            problems.append(
                f"{account} was handled by partition {partitions} its hash does not name"
            )
    return problems


def spread_accounts(owners: Sequence[str], partitions: int) -> list[str]:
    """Account ids for ``owners``, unique to this run, with every partition owning at least
    one of them (when there are enough owners), so that no worker sits idle in the demo."""
    strategy = HashPartitionStrategy()
    for _ in range(1000):
        suffix = run_id()
        accounts = [f"acc-{owner.lower()}-{suffix}" for owner in owners]
        if all(
            any(strategy.should_process(a, key, partitions) for a in accounts)
            for key in range(min(partitions, len(owners)))
        ):
            break
    return accounts
