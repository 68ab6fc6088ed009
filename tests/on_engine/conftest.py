"""The contract tests again, on databases opened on a SQLAlchemy engine.

``connect(engine)`` runs the store, leases and wake-ups on the engine's pool instead of
the driver's, so everything the contract promises must hold there too. The ``db``
fixture here replaces the one in ``tests/conftest.py`` for the modules in this folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import pupsourcing_async
from pupsourcing_async import Database
from pupsourcing_async.sqlalchemy import create_engine
from pupsourcing_async.testing import unique_store_config

from ..conftest import drop_tables


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    """A fresh, migrated database on an engine of its own, with table names of its own."""
    config = unique_store_config()
    options = {"connect_args": {"timeout": 10.0}} if url.startswith("sqlite") else {}
    engine = create_engine(url, pool_size=12, max_overflow=0, **options)
    try:
        async with pupsourcing_async.connect(engine, store_config=config) as database:
            await database.migrate()
            try:
                yield database
            finally:
                if database.dialect != "sqlite":
                    await drop_tables(database, [config.events_table])
    finally:
        await engine.dispose()
