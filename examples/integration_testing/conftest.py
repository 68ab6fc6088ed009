"""Fixtures of the application under test, built on the plugin's ``event_db``.

The plugin (``pupsourcing_async.testing``) registers itself with pytest when the package
is installed: ``event_db``, ``event_db_url`` and the helpers need no import here. It
needs ``pytest-asyncio``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from pupsourcing_async import Database
from pupsourcing_async.sqlalchemy import connection

from ..common.bank import Balances


@pytest_asyncio.fixture
async def balances(event_db: Database) -> AsyncIterator[Balances]:
    """The balances projection, with a read model table as fresh as ``event_db``'s tables."""
    # event_db's tables have a prefix of their own; the read model borrows it.
    table = event_db.store.config.events_table.replace("_events", "_balances")
    projection = Balances("balances", table)
    await projection.create_table(event_db)
    yield projection
    async with event_db.transaction() as tx:
        await connection(tx).run_sync(projection.table.drop)
