"""``python -m examples.basic [--url URL]``: the shortest tour of pupsourcing_async.

Append an account's events, see optimistic concurrency refuse a stale write, replay the
account from its stream, and fill a read model with a projection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import sqlalchemy as sa

from pupsourcing_async import OptimisticConcurrencyError, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import ProcessorConfig, RunMode
from pupsourcing_async.sqlalchemy import connection

from ..common.bank import (
    account_opened,
    amount_of,
    money,
    money_deposited,
    money_withdrawn,
    run_id,
)
from ..common.cli import Setup, parser, setup


class Balances:
    """A projection: one row per account with its balance, in SQLAlchemy Core."""

    name = "basic_balances"
    aggregate_types = ("Account",)

    def __init__(self, table: sa.Table) -> None:
        self.table = table

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        # Same transaction as the checkpoint: the read model never runs ahead or behind it.
        conn, table = connection(tx), self.table
        if event.event_type == "AccountOpened":
            owner = json.loads(event.payload)["owner"]
            await conn.execute(
                table.insert().values(account_id=event.aggregate_id, owner=owner, balance=0)
            )
        else:
            await conn.execute(
                table.update()
                .where(table.c.account_id == event.aggregate_id)
                .values(balance=table.c.balance + amount_of(event))
            )


async def tour(where: Setup) -> None:
    """Walk through the basics on the database ``where`` names."""
    # On an SQLAlchemy engine, so the read model below is Core, the same on every database.
    async with where.connect() as db:
        await db.migrate()
        print(f"Connected to {db.dialect} at {db.location}; event store tables are ready")
        alice = f"acc-alice-{run_id()}"

        # NoStream: the account must not exist yet.
        async with db.transaction() as tx:
            opened = await db.store.append(
                tx, es.NoStream(), [account_opened(alice, "Alice"), money_deposited(alice, 100_000)]
            )
        print(f"Opened {alice} with a deposit: versions 1-{opened.to_version}")

        # Exact(n): append only if nobody wrote since we read version n.
        async with db.transaction() as tx:
            more = await db.store.append(
                tx,
                es.Exact(opened.to_version),
                [money_withdrawn(alice, 20_000), money_deposited(alice, 50_000)],
            )
        print(f"Withdrew $200.00 and deposited $500.00 at Exact(2): versions 3-{more.to_version}")
        try:
            async with db.transaction() as tx:
                await db.store.append(tx, es.Exact(2), [money_withdrawn(alice, 1)])
        except OptimisticConcurrencyError as err:
            print(f"An append expecting {err.expected} is refused: the account is at {err.actual}")

        async with db.transaction() as tx:
            stream = await db.store.read_aggregate_stream(tx, "Banking", "Account", alice)
        for event in stream:
            print(f"  v{event.aggregate_version} {event.event_type:<15} {event.payload.decode()}")
        replayed = sum(amount_of(event) for event in stream)
        print(f"Replaying {len(stream)} events gives the balance: {money(replayed)}")

        table = sa.Table(
            where.table("basic_balances"),
            sa.MetaData(),
            sa.Column("account_id", sa.String(255), primary_key=True),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("balance", sa.BigInteger, nullable=False),
        )
        async with db.transaction() as tx:
            await connection(tx).run_sync(table.metadata.create_all)
        # ONE_OFF: return once caught up, instead of running until cancelled.
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Balances(table))
        async with db.transaction() as tx:
            query = sa.select(table.c.owner, table.c.balance).where(table.c.account_id == alice)
            row = (await connection(tx).execute(query)).all()
        owner, balance = row[0]
        print(f"The projection's read model says: {owner} has {money(int(balance))}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tour; SQLite in a temporary directory unless ``--url`` names a database."""
    args = parser("basic", "The shortest tour: append, read back, project.").parse_args(argv)
    with setup(args, "basic.db") as where:
        asyncio.run(tour(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
