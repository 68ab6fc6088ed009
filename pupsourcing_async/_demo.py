"""The bank-account story behind ``pupsourcing-async demo``.

Accounts are event-sourced aggregates: opening, deposits and withdrawals are events in
an embedded SQLite file. The demo replays an account to its current balance, replays it
only up to an earlier date for the balance as of then, and keeps a small read model of
every balance that a projection fills from the global log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from . import es
from .adapters.sqlite import connect
from .database import Database
from .errors import OptimisticConcurrencyError
from .projection import ProcessorConfig, RunMode

CONTEXT = "Banking"
AGGREGATE = "Account"
READ_MODEL = "demo_account_balances"
PROJECTION = "account_balances"


@dataclass
class Account:
    """An account's state, rebuilt by replaying its events."""

    account_id: str
    owner: str = ""
    balance: int = 0  # in cents
    version: int = 0

    def apply(self, event: es.PersistedEvent) -> None:
        data = json.loads(event.payload)
        if event.event_type == "AccountOpened":
            self.owner = data["owner"]
        elif event.event_type == "MoneyDeposited":
            self.balance += data["amount"]
        elif event.event_type == "MoneyWithdrawn":
            self.balance -= data["amount"]
        self.version = event.aggregate_version


def _event(account_id: str, event_type: str, when: datetime, **data: Any) -> es.Event:
    payload = json.dumps(data, sort_keys=True).encode()
    return es.Event(CONTEXT, AGGREGATE, account_id, event_type, payload, created_at=when)


def _money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


async def _load(db: Database, account_id: str, until: datetime | None = None) -> Account:
    account = Account(account_id)
    async with db.transaction() as tx:
        stream = await db.store.read_aggregate_stream(tx, CONTEXT, AGGREGATE, account_id)
    for event in stream:
        if until is None or event.created_at <= until:
            account.apply(event)
    return account


async def _record(db: Database, account: Account, events: list[es.Event]) -> es.AppendResult:
    """Append decisions made on ``account``: fails if someone else wrote since it was read."""
    async with db.transaction() as tx:
        return await db.store.append(tx, es.Exact(account.version), events)


class AccountBalances:
    """A projection: the balance of every account, in a table of its own."""

    name = PROJECTION
    aggregate_types = (AGGREGATE,)

    def __init__(self) -> None:
        self.handled = 0

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        data = json.loads(event.payload)
        if event.event_type == "AccountOpened":
            await tx.execute(
                f"INSERT INTO {READ_MODEL} (account_id, owner, balance) VALUES (?, ?, 0)",
                (event.aggregate_id, data["owner"]),
            )
        else:
            sign = 1 if event.event_type == "MoneyDeposited" else -1
            await tx.execute(
                f"UPDATE {READ_MODEL} SET balance = balance + ? WHERE account_id = ?",
                (sign * data["amount"], event.aggregate_id),
            )
        self.handled += 1


async def run_demo(path: str, out: TextIO) -> None:
    """Tell the bank-account story on the SQLite file at ``path``, printing to ``out``."""

    def say(text: str = "") -> None:
        print(text, file=out)

    async with connect(f"sqlite:///{path}") as db:
        await db.migrate()
        async with db.transaction() as tx:
            await tx.execute(
                f"CREATE TABLE IF NOT EXISTS {READ_MODEL} "
                "(account_id TEXT PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL)"
            )
            existing = await db.store.latest_global_position(tx)

        alice = await _load(db, "acc-alice")
        if alice.version == 0:
            say(f"Starting a fresh demo event store in {path}")
            say()
            history: list[tuple[str, datetime, dict[str, Any]]] = [
                ("AccountOpened", datetime(2024, 1, 1, 9, tzinfo=UTC), {"owner": "Alice"}),
                ("MoneyDeposited", datetime(2024, 1, 1, 9, 5, tzinfo=UTC), {"amount": 100_000}),
                ("MoneyWithdrawn", datetime(2024, 1, 5, 12, tzinfo=UTC), {"amount": 20_000}),
                ("MoneyDeposited", datetime(2024, 1, 10, 15, tzinfo=UTC), {"amount": 50_000}),
                ("MoneyWithdrawn", datetime(2024, 1, 15, 18, tzinfo=UTC), {"amount": 30_000}),
            ]
            result = await _record(
                db, alice, [_event("acc-alice", kind, when, **data) for kind, when, data in history]
            )
            for (kind, when, data), stored in zip(history, result.events, strict=True):
                detail = data.get("owner") or _money(int(data["amount"]))
                say(
                    f"  {when:%b %d}  {kind:<15} {detail:>12}   "
                    f"(version {stored.aggregate_version}, position {stored.global_position})"
                )
            bob = Account("acc-bob")
            await _record(
                db,
                bob,
                [
                    _event("acc-bob", "AccountOpened", history[0][1], owner="Bob"),
                    _event("acc-bob", "MoneyDeposited", history[1][1], amount=25_000),
                ],
            )
            say("  Jan 01  Bob opens an account and deposits $250.00")
        else:
            say(f"Continuing the demo event store in {path} ({existing} events so far)")
            say()
            now = datetime.now(UTC)
            await _record(db, alice, [_event("acc-alice", "MoneyDeposited", now, amount=5_000)])
            say(f"  {now:%b %d}  MoneyDeposited       $50.00   (a new deposit for this run)")

        say()
        alice = await _load(db, "acc-alice")
        say(f"Replaying Alice's {alice.version} events gives her balance: {_money(alice.balance)}")
        as_of = datetime(2024, 1, 10, 23, 59, tzinfo=UTC)
        earlier = await _load(db, "acc-alice", until=as_of)
        say(f"Replaying only up to {as_of:%b %d, %Y} gives: {_money(earlier.balance)}")

        say()
        stale = Account("acc-alice", balance=alice.balance, version=alice.version - 1)
        try:
            await _record(db, stale, [_event("acc-alice", "MoneyWithdrawn", as_of, amount=1)])
        except OptimisticConcurrencyError as err:
            say(f"A write based on a stale read is refused: {err}")

        balances = AccountBalances()
        await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(balances)
        handled = balances.handled
        say()
        noun = "event" if handled == 1 else "events"
        say(f"The balances projection handled {handled} new {noun}. Read model:")
        async with db.transaction() as tx:
            rows = await tx.execute_fetchall(
                f"SELECT owner, balance FROM {READ_MODEL} ORDER BY owner"
            )
        for owner, balance in rows:
            say(f"  {owner:<8} {_money(balance):>12}")
        say()
        say("Run the demo again to continue the story, or delete the file to start over.")
