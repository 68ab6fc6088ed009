"""A projection that records which worker handled each event, for the scaling examples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa

from pupsourcing_async import Database, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import HashPartitionStrategy
from pupsourcing_async.sqlalchemy import connection

from .bank import ACCOUNT, CONTEXT, run_id

__all__ = ["HandledBy", "check_ownership", "spread_accounts"]


class HandledBy:
    """Writes ``(global_position, account_id, worker)`` for every account event it handles.

    The position is the primary key: an event handled twice would fail the batch.

    Args:
        name: The projection's name; every worker of one projection shares it.
        table: The read model's table.
        worker: Who this instance is, as recorded in the table.
    """

    aggregate_types = (ACCOUNT,)
    bounded_contexts = (CONTEXT,)

    def __init__(self, name: str, table: str, worker: str) -> None:
        self.name = name
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("account_id", sa.String(255), nullable=False),
            sa.Column("worker", sa.String(64), nullable=False),
        )
        self.worker = worker

    async def create_table(self, db: Database[DriverConnection]) -> None:
        """Create the read model's table if it does not exist."""
        async with db.transaction() as tx:
            await connection(tx).run_sync(self.table.metadata.create_all)

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        """Record that this worker handled ``event``."""
        await connection(tx).execute(
            self.table.insert().values(
                global_position=event.global_position,
                account_id=event.aggregate_id,
                worker=self.worker,
            )
        )

    async def handled(
        self, db: Database[DriverConnection], accounts: list[str]
    ) -> dict[str, dict[str, int]]:
        """For each worker, how many events of each of ``accounts`` it handled."""
        table = self.table
        query = (
            sa.select(table.c.worker, table.c.account_id, sa.func.count())
            .where(table.c.account_id.in_(accounts))
            .group_by(table.c.worker, table.c.account_id)
        )
        found: dict[str, dict[str, int]] = defaultdict(dict)
        async with db.transaction() as tx:
            for worker, account, count in await connection(tx).execute(query):
                found[str(worker)][str(account)] = int(count)
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
