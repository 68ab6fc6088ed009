"""The bank-account story: accounts are opened, money is deposited and withdrawn.

Amounts are whole cents. Every example that writes accounts uses these payload shapes
(``{"owner": ...}``, ``{"amount": ...}``), so their projections can share one database.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pupsourcing_async import Database, es

from .sql import SQL

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

    Args:
        name: The projection's name (its checkpoint).
        table: The read model's table.
        dialect: ``Database.dialect``.
    """

    aggregate_types = (ACCOUNT,)
    bounded_contexts = (CONTEXT,)

    def __init__(self, name: str, table: str, dialect: str) -> None:
        self.name = name
        self.table = table
        self.sql = SQL(dialect)

    async def create_table(self, db: Database) -> None:
        """Create the read model's table if it does not exist."""
        async with db.transaction() as tx:
            await self.sql.execute(
                tx,
                f"CREATE TABLE IF NOT EXISTS {self.table} (account_id VARCHAR(255) PRIMARY KEY,"
                " owner VARCHAR(255) NOT NULL, balance BIGINT NOT NULL, events INTEGER NOT NULL)",
            )

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        """Write the event's effect through the batch's own transaction."""
        if event.event_type == "AccountOpened":
            owner = json.loads(event.payload)["owner"]
            await self.sql.execute(
                tx,
                f"INSERT INTO {self.table} (account_id, owner, balance, events)"
                " VALUES (?, ?, 0, 1)",
                event.aggregate_id,
                owner,
            )
        else:
            await self.sql.execute(
                tx,
                f"UPDATE {self.table} SET balance = balance + ?, events = events + 1"
                " WHERE account_id = ?",
                amount_of(event),
                event.aggregate_id,
            )

    async def balance(self, tx: Any, account_id: str) -> int | None:
        """An account's balance in cents, or None if the read model does not know it."""
        value = await self.sql.scalar(
            tx, f"SELECT balance FROM {self.table} WHERE account_id = ?", account_id
        )
        return None if value is None else int(value)

    async def rows(self, db: Database, account_ids: list[str]) -> list[tuple[str, int, int]]:
        """``(owner, balance, events)`` of the given accounts, in their order."""
        found: list[tuple[str, int, int]] = []
        async with db.transaction() as tx:
            for account_id in account_ids:
                rows = await self.sql.fetch(
                    tx,
                    f"SELECT owner, balance, events FROM {self.table} WHERE account_id = ?",
                    account_id,
                )
                found += [(str(owner), int(balance), int(n)) for owner, balance, n in rows]
        return found
