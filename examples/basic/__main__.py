"""``python -m examples.basic [--url URL]``: the shortest tour of pupsourcing_async.

Append an account's events, see optimistic concurrency refuse a stale write, replay the
account from its stream, and fill a read model with a projection.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pupsourcing_async
from pupsourcing_async import OptimisticConcurrencyError, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

from ..common.bank import (
    account_opened,
    amount_of,
    money,
    money_deposited,
    money_withdrawn,
    run_id,
)
from ..common.cli import Setup, parser, setup
from ..common.sql import SQL


class Balances:
    """A projection: one row per account with its balance."""

    name = "basic_balances"
    aggregate_types = ("Account",)

    def __init__(self, table: str, sql: SQL) -> None:
        self.table = table
        self.sql = sql

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        # Same transaction as the checkpoint: the read model never runs ahead or behind it.
        if event.event_type == "AccountOpened":
            owner = json.loads(event.payload)["owner"]
            await self.sql.execute(
                tx, f"INSERT INTO {self.table} VALUES (?, ?, 0)", event.aggregate_id, owner
            )
        else:
            await self.sql.execute(
                tx,
                f"UPDATE {self.table} SET balance = balance + ? WHERE account_id = ?",
                amount_of(event),
                event.aggregate_id,
            )


async def tour(where: Setup) -> None:
    """Walk through the basics on the database ``where`` names."""
    async with pupsourcing_async.connect(where.url, store_config=where.store_config()) as db:
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

        sql = SQL(db.dialect)
        table = where.table("basic_balances")
        async with db.transaction() as tx:
            await sql.execute(
                tx,
                f"CREATE TABLE IF NOT EXISTS {table} (account_id VARCHAR(255) PRIMARY KEY, "
                "owner VARCHAR(255) NOT NULL, balance BIGINT NOT NULL)",
            )
        # ONE_OFF: return once caught up, instead of running until cancelled.
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Balances(table, sql))
        async with db.transaction() as tx:
            row = await sql.fetch(
                tx, f"SELECT owner, balance FROM {table} WHERE account_id = ?", alice
            )
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
