"""The bank's commands, as the web examples run them: read the account, decide, append.

Each command is one transaction. A withdrawal appends at ``Exact(version)``, so two
withdrawals racing for the same money cannot both succeed: the loser gets
``OptimisticConcurrencyError`` and may retry from a fresh read.
"""

from __future__ import annotations

from pupsourcing_async import Database, OptimisticConcurrencyError, es

from .bank import ACCOUNT, CONTEXT, account_opened, amount_of, money_deposited, money_withdrawn

__all__ = [
    "AccountExistsError",
    "AccountNotFoundError",
    "InsufficientFundsError",
    "deposit",
    "open_account",
    "withdraw",
]


class AccountNotFoundError(LookupError):
    """No account has this id."""


class AccountExistsError(ValueError):
    """An account with this id is already open."""


class InsufficientFundsError(ValueError):
    """The balance does not cover the withdrawal."""


async def open_account(db: Database, account_id: str, owner: str) -> es.AppendResult:
    """Open an account; ``AccountExistsError`` if it is open already."""
    try:
        async with db.transaction() as tx:
            return await db.store.append(tx, es.NoStream(), [account_opened(account_id, owner)])
    except OptimisticConcurrencyError as err:
        raise AccountExistsError(f"account {account_id} is already open") from err


async def deposit(db: Database, account_id: str, cents: int) -> es.AppendResult:
    """Deposit into an open account."""
    async with db.transaction() as tx:
        stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account_id)
        if stream.is_empty:
            raise AccountNotFoundError(f"no account {account_id}")
        return await db.store.append(
            tx, es.Exact(stream.version), [money_deposited(account_id, cents)]
        )


async def withdraw(db: Database, account_id: str, cents: int) -> es.AppendResult:
    """Withdraw from an open account, if its balance covers it."""
    async with db.transaction() as tx:
        stream = await db.store.read_aggregate_stream(tx, CONTEXT, ACCOUNT, account_id)
        if stream.is_empty:
            raise AccountNotFoundError(f"no account {account_id}")
        balance = sum(amount_of(event) for event in stream)
        if balance < cents:
            raise InsufficientFundsError(f"balance {balance} does not cover {cents}")
        return await db.store.append(
            tx, es.Exact(stream.version), [money_withdrawn(account_id, cents)]
        )
