"""``python -m examples.multiple_projections [--url URL]``: three read models at once.

Balances, a ledger of every money movement and the status of every order are each a
projection with a checkpoint of its own; ``run_projections`` runs them in one task group.
A handler that fails stops them all (fail-fast) with a ``ProjectionError`` naming it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import sqlalchemy as sa

from pupsourcing_async import Database, ProjectionError, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import ProcessorConfig, Projection, RunMode, run_projections
from pupsourcing_async.sqlalchemy import connection

from ..common import orders
from ..common.bank import (
    Balances,
    account_opened,
    amount_of,
    append,
    money,
    money_deposited,
    money_withdrawn,
    run_id,
)
from ..common.cli import Setup, parser, setup


class Ledger:
    """Every deposit and withdrawal, one row each, in log order."""

    name = "multi_ledger"
    aggregate_types = ("Account",)
    bounded_contexts = ("Banking",)

    def __init__(self, table: str) -> None:
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
            sa.Column("account_id", sa.String(255), nullable=False),
            sa.Column("amount", sa.BigInteger, nullable=False),
        )

    async def create_table(self, db: Database[DriverConnection]) -> None:
        async with db.transaction() as tx:
            await connection(tx).run_sync(self.table.metadata.create_all)

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        if event.event_type in ("MoneyDeposited", "MoneyWithdrawn"):
            await connection(tx).execute(
                self.table.insert().values(
                    global_position=event.global_position,
                    account_id=event.aggregate_id,
                    amount=amount_of(event),
                )
            )


STATUS = {"OrderPaid": "paid", "OrderShipped": "shipped", "OrderDelivered": "delivered"}


class OrderStatus:
    """Each order's customer, total and where it is: created, paid, shipped, delivered."""

    name = "multi_order_status"
    aggregate_types = (orders.ORDER,)
    bounded_contexts = (orders.CONTEXT,)

    def __init__(self, table: str) -> None:
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("order_id", sa.String(255), primary_key=True),
            sa.Column("customer", sa.String(255), nullable=False),
            sa.Column("total", sa.BigInteger, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("tracking", sa.String(64)),
        )

    async def create_table(self, db: Database[DriverConnection]) -> None:
        async with db.transaction() as tx:
            await connection(tx).run_sync(self.table.metadata.create_all)

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        conn, table = connection(tx), self.table
        data = json.loads(event.payload)
        if event.event_type == "OrderCreated":
            await conn.execute(
                table.insert().values(
                    order_id=event.aggregate_id,
                    customer=data["customer"],
                    total=data["total"],
                    status="created",
                )
            )
        elif event.event_type in STATUS:
            await conn.execute(
                table.update()
                .where(table.c.order_id == event.aggregate_id)
                .values(
                    status=STATUS[event.event_type],
                    tracking=sa.func.coalesce(data.get("tracking"), table.c.tracking),
                )
            )


class Auditor:
    """A projection with a bug: it cannot handle withdrawals."""

    name = "multi_auditor"

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        if event.event_type == "MoneyWithdrawn":
            raise KeyError("withdrawal_reason")


async def story(where: Setup) -> None:
    """Write accounts and orders, project them three ways, then meet a failing projection."""
    async with where.connect() as db:
        await db.migrate()
        balances = Balances("multi_balances", where.table("multi_balances"))
        ledger = Ledger(where.table("multi_ledger"))
        statuses = OrderStatus(where.table("multi_order_status"))
        for read_model in (balances, ledger, statuses):
            await read_model.create_table(db)

        suffix = run_id()
        alice, bob = f"acc-alice-{suffix}", f"acc-bob-{suffix}"
        await append(db, [account_opened(alice, "Alice"), money_deposited(alice, 100_000)])
        await append(db, [account_opened(bob, "Bob"), money_deposited(bob, 25_000)])
        await append(db, [money_withdrawn(alice, 20_000)])
        first, second = f"order-1-{suffix}", f"order-2-{suffix}"
        await append(
            db,
            [
                orders.order_created(first, "Alice", 9_999),
                orders.order_paid(first, 9_999),
                orders.order_shipped(first, "FedEx", "123456789"),
                orders.order_delivered(first),
            ],
        )
        await append(
            db, [orders.order_created(second, "Bob", 4_999), orders.order_paid(second, 4_999)]
        )
        async with db.transaction() as tx:
            head = await db.store.latest_global_position(tx)
        print(f"Appended accounts and orders; the log's head is at position {head}")

        config = ProcessorConfig(max_poll_interval=0.5)
        projections: list[Projection] = [balances, ledger, statuses]
        async with asyncio.TaskGroup() as group:
            runner = group.create_task(run_projections(db, [(p, config) for p in projections]))
            await db.wait_for(head, projections=[p.name for p in projections], timeout=30)
            runner.cancel()
        print("Three projections ran side by side and caught up; each has its own checkpoint:")
        for status in await db.projection_status():
            if status.name in {p.name for p in projections}:
                print(f"  {status.name:<20} position {status.position:>4}, lag {status.lag}")

        print("Balances:")
        for owner, balance, _ in await balances.rows(db, [alice, bob]):
            print(f"  {owner:<6} {money(balance):>10}")
        moved, orders_seen = ledger.table, statuses.table
        async with db.transaction() as tx:
            conn = connection(tx)
            moves = await conn.execute(
                sa.select(moved.c.account_id, moved.c.amount)
                .where(moved.c.account_id.in_([alice, bob]))
                .order_by(moved.c.global_position)
            )
            moves_seen = moves.all()
            rows = (
                await conn.execute(
                    sa.select(
                        orders_seen.c.order_id,
                        orders_seen.c.customer,
                        orders_seen.c.total,
                        orders_seen.c.status,
                        orders_seen.c.tracking,
                    )
                    .where(orders_seen.c.order_id.in_([first, second]))
                    .order_by(orders_seen.c.order_id)
                )
            ).all()
        print(f"Ledger: {len(moves_seen)} money movements")
        for account, amount in moves_seen:
            print(f"  {account:<18} {money(int(amount)):>10}")
        print("Orders:")
        for order_id, customer, total, where_it_is, tracking in rows:
            print(
                f"  {order_id:<16} {customer:<6} {money(int(total)):>8}  "
                f"{where_it_is:<9} {tracking or '-'}"
            )

        one_off = ProcessorConfig(run_mode=RunMode.ONE_OFF)
        try:
            await run_projections(db, [(balances, one_off), (Auditor(), one_off)])
        except ProjectionError as err:
            print(
                f"A failing projection stops the group: {err.projection} "
                f"at position {err.global_position}"
            )
            print(f"  cause: {type(err.__cause__).__name__}: {err.__cause__}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("multiple_projections", "Several projections running together.")
    with setup(cli.parse_args(argv), "shop.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
