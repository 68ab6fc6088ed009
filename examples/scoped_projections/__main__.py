"""``python -m examples.scoped_projections [--url URL]``: filtering by scope.

A projection with no ``aggregate_types`` or ``bounded_contexts`` sees every event. One
that declares them (a ``ScopedProjection``) is handed only the events whose aggregate
type *and* bounded context match; an empty or absent filter means no restriction. The
events it skips still advance its checkpoint, so it never waits on them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence

import sqlalchemy as sa

from pupsourcing_async import Database, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.projection import ProcessorConfig, RunMode, run_projections
from pupsourcing_async.sqlalchemy import connection

from ..common import orders
from ..common.bank import account_opened, append, money_deposited, run_id
from ..common.cli import Setup, parser, setup


def points_earned(account_id: str, points: int) -> es.Event:
    """A loyalty program's Account: the same aggregate type, another bounded context."""
    payload = json.dumps({"points": points}).encode()
    return es.Event("Loyalty", "Account", account_id, "PointsEarned", payload)


def seen_table(name: str) -> sa.Table:
    """The table every projection here writes what it saw into."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("projection", sa.String(64), primary_key=True),
        sa.Column("global_position", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("aggregate_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
    )


class AuditLog:
    """A global projection, with no scope: every event of the log."""

    def __init__(self, name: str, table: sa.Table) -> None:
        self.name = name
        self.table = table

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        await connection(tx).execute(
            self.table.insert().values(
                projection=self.name,
                global_position=event.global_position,
                aggregate_id=event.aggregate_id,
                kind=f"{event.bounded_context}/{event.aggregate_type}",
            )
        )

    async def seen(self, db: Database[DriverConnection], aggregate_ids: list[str]) -> Counter[str]:
        """How many events of each ``context/type`` it handled, of the given aggregates."""
        table = self.table
        query = sa.select(table.c.kind).where(
            table.c.projection == self.name, table.c.aggregate_id.in_(aggregate_ids)
        )
        async with db.transaction() as tx:
            kinds = (await connection(tx).execute(query)).scalars().all()
        return Counter(str(kind) for kind in kinds)


class ScopedLog(AuditLog):
    """The same projection with a scope: the processor filters before ``handle``."""

    def __init__(
        self,
        name: str,
        table: sa.Table,
        *,
        aggregate_types: Sequence[str] = (),
        bounded_contexts: Sequence[str] = (),
    ) -> None:
        super().__init__(name, table)
        self.aggregate_types = tuple(aggregate_types)
        self.bounded_contexts = tuple(bounded_contexts)


def describe(projection: AuditLog) -> str:
    if not isinstance(projection, ScopedLog):
        return "no scope: everything"
    types = "/".join(projection.aggregate_types) or "any type"
    contexts = "/".join(projection.bounded_contexts) or "any context"
    return f"{types} in {contexts}"


async def story(where: Setup) -> None:
    """Append to three kinds of aggregate and run four differently scoped projections."""
    async with where.connect() as db:
        await db.migrate()
        table = seen_table(where.table("scoped_seen"))
        async with db.transaction() as tx:
            await connection(tx).run_sync(table.metadata.create_all)
        suffix = run_id()
        alice, order = f"acc-alice-{suffix}", f"order-1-{suffix}"
        # The same id in another context is another aggregate: (context, type, id) names one.
        points = alice
        await append(db, [account_opened(alice, "Alice"), money_deposited(alice, 5_000)])
        await append(db, [orders.order_created(order, "Alice", 2_500)])
        await append(db, [points_earned(points, 25), points_earned(points, 10)])
        await append(
            db, [orders.order_paid(order, 2_500), orders.order_shipped(order, "DHL", "JD01")]
        )
        await append(db, [money_deposited(alice, 1_000)])
        async with db.transaction() as tx:
            head = await db.store.latest_global_position(tx)
        print("Appended 3 Banking/Account, 3 Shop/Order and 2 Loyalty/Account events")

        projections: list[AuditLog] = [
            AuditLog("scoped_audit", table),
            ScopedLog(
                "scoped_bank", table, aggregate_types=["Account"], bounded_contexts=["Banking"]
            ),
            ScopedLog("scoped_accounts", table, aggregate_types=["Account"]),
            ScopedLog("scoped_shop", table, bounded_contexts=["Shop"]),
        ]
        one_off = ProcessorConfig(run_mode=RunMode.ONE_OFF)
        await run_projections(db, [(p, one_off) for p in projections])

        checkpoints = {s.name: s.position for s in await db.projection_status()}
        print(f"{'projection':<16} {'scope':<28} {'handled':<52} checkpoint")
        for projection in projections:
            seen = await projection.seen(db, [alice, order])
            handled = ", ".join(f"{n} {kind}" for kind, n in sorted(seen.items()))
            print(
                f"{projection.name:<16} {describe(projection):<28} {handled:<52} "
                f"{checkpoints[projection.name]}"
            )
        at_head = all(checkpoints[p.name] == head for p in projections)
        print(
            f"Every checkpoint is at the head ({head}): skipped events advance it too"
            if at_head
            else f"Some checkpoint is behind the head ({head})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the story; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("scoped_projections", "Projections that see only some aggregates.")
    with setup(cli.parse_args(argv), "scoped.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
