"""``python -m examples.mysql_basic [--url URL]``: the event store on MySQL/MariaDB.

Defaults to ``mysql://root@127.0.0.1:3306/test``; ``--url sqlite:///bank.db`` or a
PostgreSQL URL runs the same story elsewhere. It shows concurrent appends to one account
(serialized by its head row, no version lost), two clerks opening the same account (one
wins), a projection whose handler speaks aiomysql (a cursor and ``%s``), and the lease a
running projection holds (``GET_LOCK`` on MySQL).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pupsourcing_async
from pupsourcing_async import Database, OptimisticConcurrencyError, es
from pupsourcing_async.projection import ProcessorConfig

from ..common.bank import account_opened, amount_of, append, money, money_deposited, run_id
from ..common.cli import Setup, parser, setup

DEFAULT_URL = "mysql://root@127.0.0.1:3306/test"


class Balances:
    """A projection whose SQL is written for each driver, MySQL's first."""

    name = "mysql_basic_balances"
    aggregate_types = ("Account",)
    bounded_contexts = ("Banking",)

    def __init__(self, table: str, dialect: str) -> None:
        self.table = table
        self.dialect = dialect

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if event.event_type == "AccountOpened":
            sql = f"INSERT INTO {self.table} (account_id, owner, balance) VALUES (?, ?, 0)"
            args: tuple[object, ...] = (event.aggregate_id, json.loads(event.payload)["owner"])
        else:
            sql = f"UPDATE {self.table} SET balance = balance + ? WHERE account_id = ?"
            args = (amount_of(event), event.aggregate_id)
        if self.dialect == "mysql":
            # aiomysql: statements run on a cursor, with %s placeholders.
            async with tx.cursor() as cursor:
                await cursor.execute(sql.replace("?", "%s"), args)
        elif self.dialect == "sqlite":
            # aiosqlite: ? placeholders and a tuple.
            await tx.execute(sql, args)
        else:
            # asyncpg: $1, $2 ... and positional arguments.
            numbered = sql.replace("?", "$1", 1).replace("?", "$2", 1)
            await tx.execute(numbered, *args)

    async def create_table(self, db: Database) -> None:
        async with db.transaction() as tx:
            sql = (
                f"CREATE TABLE IF NOT EXISTS {self.table} (account_id VARCHAR(255) PRIMARY KEY, "
                "owner VARCHAR(255) NOT NULL, balance BIGINT NOT NULL)"
            )
            if self.dialect == "mysql":
                async with tx.cursor() as cursor:
                    await cursor.execute(sql)
            else:
                await tx.execute(sql)

    async def owner_and_balance(self, db: Database, account_id: str) -> tuple[str, int]:
        sql = f"SELECT owner, balance FROM {self.table} WHERE account_id = ?"
        async with db.transaction() as tx:
            if self.dialect == "mysql":
                async with tx.cursor() as cursor:
                    await cursor.execute(sql.replace("?", "%s"), (account_id,))
                    row = await cursor.fetchone()
            elif self.dialect == "sqlite":
                rows = list(await tx.execute_fetchall(sql, (account_id,)))
                row = rows[0]
            else:
                row = await tx.fetchrow(sql.replace("?", "$1"), account_id)
        return str(row[0]), int(row[1])


async def story(where: Setup) -> None:
    """Concurrent appends, a conflict, and a projection with its lease."""
    async with pupsourcing_async.connect(where.url, store_config=where.store_config()) as db:
        await db.migrate()
        print(f"Connected to {db.dialect} at {db.location}; event store tables are ready")
        suffix = run_id()
        dave = f"acc-dave-{suffix}"
        await append(db, [account_opened(dave, "Dave")], es.NoStream())

        # Ten deposits at once with Any(): each takes the account's head row in turn.
        results = await asyncio.gather(
            *(append(db, [money_deposited(dave, 1_000 * n)]) for n in range(1, 11))
        )
        versions = sorted(result.to_version for result in results)
        print(
            f"10 concurrent deposits to {dave} got versions {versions[0]}..{versions[-1]}, "
            f"{len(set(versions))} distinct"
        )

        erin = f"acc-erin-{suffix}"
        outcomes = await asyncio.gather(
            append(db, [account_opened(erin, "Erin")], es.NoStream()),
            append(db, [account_opened(erin, "Erin B.")], es.NoStream()),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, OptimisticConcurrencyError)]
        print(
            f"Two clerks open {erin} at once with NoStream(): "
            f"{len(outcomes) - len(refused)} succeeded, {len(refused)} refused"
        )

        balances = Balances(where.table("mysql_basic_balances"), db.dialect)
        await balances.create_table(db)
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(
                db.processor(ProcessorConfig(max_poll_interval=0.5)).run(balances)
            )
            async with db.transaction() as tx:
                head = await db.store.latest_global_position(tx)
            await db.wait_for(head, projections=[balances.name], timeout=30)
            report = await db.health()
            worker.cancel()
        for projection in report.projections:
            if projection.name == balances.name:
                leased = {True: "held", False: "free", None: "none (SQLite has no leases)"}
                print(
                    f"While it ran, projection {projection.name} was at position "
                    f"{projection.position}, lag {projection.lag}, "
                    f"lease {leased[projection.leased]}"
                )
        owner, balance = await balances.owner_and_balance(db, dave)
        print(f"Read model: {owner} has {money(balance)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story on MySQL unless ``--url`` names another database."""
    cli = parser("mysql_basic", "The event store on MySQL/MariaDB.", default_url=DEFAULT_URL)
    with setup(cli.parse_args(argv), "bank.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
