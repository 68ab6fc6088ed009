"""``python -m examples.stop_resume [--url URL]``: checkpoints, resuming and rebuilding.

A projection is stopped in the middle of a batch: that batch rolls back, and its
checkpoint stays at the last batch that committed. Started again, it resumes from the
checkpoint and handles every later event exactly once. Resetting the checkpoint (and
clearing the read model) rebuilds it from the first event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import sqlalchemy as sa

from pupsourcing_async import Database, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import ProcessorConfig, RunMode
from pupsourcing_async.sqlalchemy import connection

from ..common.bank import account_opened, append, money_deposited, run_id
from ..common.cli import Setup, parser, setup

NAME = "resume_ledger"
BATCH = 5


class Ledger:
    """One row per event, keyed by its position: an event handled twice fails the batch.

    Args:
        stop_at: Pause forever while handling this many-th event, and say so, so that
            the caller can stop the projection in the middle of a batch.
    """

    name = NAME
    aggregate_types = ("Account",)
    bounded_contexts = ("Banking",)

    def __init__(self, table: sa.Table, stop_at: int | None = None) -> None:
        self.table = table
        self.stop_at = stop_at
        self.handled: list[int] = []
        self.paused = asyncio.Event()

    async def create_table(self, db: Database[DriverConnection]) -> None:
        async with db.transaction() as tx:
            await connection(tx).run_sync(self.table.metadata.create_all)

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        await connection(tx).execute(
            self.table.insert().values(
                global_position=event.global_position, account_id=event.aggregate_id
            )
        )
        self.handled.append(event.global_position)
        if len(self.handled) == self.stop_at:
            self.paused.set()
            await asyncio.Event().wait()  # until cancelled

    async def rows(self, db: Database[DriverConnection]) -> int:
        async with db.transaction() as tx:
            count = await connection(tx).scalar(sa.select(sa.func.count()).select_from(self.table))
            return int(count or 0)


async def checkpoint(db: Database) -> int:
    async with db.transaction() as tx:
        return await db.store.get_checkpoint(tx, NAME)


async def story(where: Setup) -> None:
    """Stop mid-batch, resume, rebuild."""
    async with where.connect() as db:
        await db.migrate()
        table = sa.Table(
            where.table("resume_ledger"),
            sa.MetaData(),
            sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("account_id", sa.String(255), nullable=False),
        )
        await Ledger(table).create_table(db)
        suffix = run_id()
        accounts = [f"acc-{owner}-{suffix}" for owner in ("alice", "bob", "carol")]
        for account in accounts:
            await append(db, [account_opened(account, account.split("-")[1].title())])
        for n in range(10):
            for account in accounts:
                await append(db, [money_deposited(account, 100 * (n + 1))])
        async with db.transaction() as tx:
            head = await db.store.latest_global_position(tx)
        print(f"Appended 33 events; the log's head is at position {head}")

        first = Ledger(table, stop_at=2 * BATCH + 3)
        config = ProcessorConfig(batch_size=BATCH, max_poll_interval=0.5)
        async with asyncio.TaskGroup() as group:
            run = group.create_task(db.processor(config).run(first))
            await first.paused.wait()
            run.cancel()
        stopped = await checkpoint(db)
        print(
            f"Run 1 (batches of {BATCH}) was stopped while handling its "
            f"{len(first.handled)}th event, position {first.handled[-1]}"
        )
        print(
            f"  the batch in flight rolled back: checkpoint {stopped}, "
            f"{await first.rows(db)} rows in the read model"
        )

        second = Ledger(table)
        await db.processor(ProcessorConfig(batch_size=BATCH, run_mode=RunMode.ONE_OFF)).run(second)
        print(
            f"Run 2 resumed after position {stopped} and handled {len(second.handled)} events, "
            f"positions {second.handled[0]}..{second.handled[-1]}"
        )
        rows = await second.rows(db)
        committed_by_first = [p for p in first.handled if p <= stopped]
        twice = sorted(set(committed_by_first) & set(second.handled))
        print(
            f"  {rows} rows; checkpoint {await checkpoint(db)}; "
            + (f"handled twice: {twice}" if twice else "no event was handled twice")
        )

        removed = await db.reset_projection(NAME)
        async with db.transaction() as tx:
            await connection(tx).execute(table.delete())
        print(f"Rebuild: deleted {removed} checkpoint row and cleared the read model")
        third = Ledger(table)
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(third)
        print(f"  run 3 handled all {len(third.handled)} events again; {await third.rows(db)} rows")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("stop_resume", "Stop a projection mid-way and resume from its checkpoint.")
    with setup(cli.parse_args(argv), "bank.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
