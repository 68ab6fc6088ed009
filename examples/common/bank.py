"""The bank-account story: accounts are opened, money is deposited and withdrawn.

Amounts are whole cents. Every example that writes accounts uses these payload shapes
(``{"owner": ...}``, ``{"amount": ...}``), so their projections can share one database.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa

from pupsourcing_async import Database, es
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.sqlalchemy import connection

__all__ = [
    "ACCOUNT",
    "CONTEXT",
    "Balances",
    "account_opened",
    "amount_of",
    "append",
    "money",
    "money_deposited",
    "money_withdrawn",
    "run_id",
]

CONTEXT = "Banking"
ACCOUNT = "Account"


def run_id() -> str:
    """A short suffix for aggregate ids, so a second run on the same database starts afresh."""
    return uuid.uuid4().hex[:6]


def _event(account_id: str, event_type: str, data: dict[str, Any]) -> es.Event:
    return es.Event(CONTEXT, ACCOUNT, account_id, event_type, json.dumps(data).encode())


def account_opened(account_id: str, owner: str) -> es.Event:
    """``AccountOpened``: the first event of every account."""
    return _event(account_id, "AccountOpened", {"owner": owner})


def money_deposited(account_id: str, cents: int) -> es.Event:
    """``MoneyDeposited``."""
    return _event(account_id, "MoneyDeposited", {"amount": cents})


def money_withdrawn(account_id: str, cents: int) -> es.Event:
    """``MoneyWithdrawn``."""
    return _event(account_id, "MoneyWithdrawn", {"amount": cents})


def amount_of(event: es.Event) -> int:
    """What an event changes the balance by, in cents (negative for a withdrawal)."""
    if event.event_type == "MoneyDeposited":
        return int(json.loads(event.payload)["amount"])
    if event.event_type == "MoneyWithdrawn":
        return -int(json.loads(event.payload)["amount"])
    return 0


def money(cents: int) -> str:
    """``$1,234.50``."""
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) / 100:,.2f}"


async def append(
    db: Database, events: list[es.Event], expected: es.ExpectedVersion | None = None
) -> es.AppendResult:
    """Append ``events`` to one account in a transaction of their own."""
    async with db.transaction() as tx:
        return await db.store.append(tx, expected or es.Any(), events)


class Balances:
    """A projection: every account's owner, balance and event count, in one table.

    Written in SQLAlchemy Core, so it runs unchanged on every database; the database must
    be opened on an engine (``Setup.connect``).

    Args:
        name: The projection's name (its checkpoint).
        table: The read model's table.
    """

    aggregate_types = (ACCOUNT,)
    bounded_contexts = (CONTEXT,)

    def __init__(self, name: str, table: str) -> None:
        self.name = name
        self.table = sa.Table(
            table,
            sa.MetaData(),
            sa.Column("account_id", sa.String(255), primary_key=True),
            sa.Column("owner", sa.String(255), nullable=False),
            sa.Column("balance", sa.BigInteger, nullable=False),
            sa.Column("events", sa.Integer, nullable=False),
        )

    async def create_table(self, db: Database[DriverConnection]) -> None:
        """Create the read model's table if it does not exist."""
        async with db.transaction() as tx:
            await connection(tx).run_sync(self.table.metadata.create_all)

    async def handle(self, tx: DriverConnection, event: es.PersistedEvent) -> None:
        """Write the event's effect through the batch's own transaction."""
        conn, table = connection(tx), self.table
        if event.event_type == "AccountOpened":
            owner = json.loads(event.payload)["owner"]
            await conn.execute(
                table.insert().values(
                    account_id=event.aggregate_id, owner=owner, balance=0, events=1
                )
            )
        else:
            await conn.execute(
                table.update()
                .where(table.c.account_id == event.aggregate_id)
                .values(balance=table.c.balance + amount_of(event), events=table.c.events + 1)
            )

    async def balance(self, tx: DriverConnection, account_id: str) -> int | None:
        """An account's balance in cents, or None if the read model does not know it."""
        query = sa.select(self.table.c.balance).where(self.table.c.account_id == account_id)
        value = await connection(tx).scalar(query)
        return None if value is None else int(value)

    async def rows(
        self, db: Database[DriverConnection], account_ids: list[str]
    ) -> list[tuple[str, int, int]]:
        """``(owner, balance, events)`` of the given accounts, in their order."""
        table = self.table
        query = sa.select(table.c.account_id, table.c.owner, table.c.balance, table.c.events)
        async with db.transaction() as tx:
            result = await connection(tx).execute(query.where(table.c.account_id.in_(account_ids)))
            found = {
                row.account_id: (str(row.owner), int(row.balance), int(row.events))
                for row in result
            }
        return [found[account_id] for account_id in account_ids if account_id in found]
