"""A pytest plugin for testing code built on pupsourcing_async.

Installed with the package and registered through the ``pytest11`` entry point, so its
fixtures are available in any project that has ``pytest-asyncio`` set up::

    async def test_opening_an_account(event_db):
        await open_account(event_db, "acc-1", owner="Alice")      # your code
        async with capture_events(event_db) as captured:
            await deposit(event_db, "acc-1", 100)
        assert captured.types == ["MoneyDeposited"]
        await run_projections_until_caught_up(event_db, Balances())
        ...

``event_db`` is a fresh, migrated :class:`~pupsourcing_async.Database` per test: an embedded
SQLite file by default, or the database at ``PUPSOURCING_TEST_URL``, with table names of
its own so tests never see each other's events (its tables are dropped afterwards). It is
opened on a SQLAlchemy engine where SQLAlchemy is installed. The helpers are plain async
functions that need no pytest.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import es
from ._holes import hole_above
from .database import Database, connect
from .migrations import in_flight_table
from .projection import ProcessorConfig, Projection, RunMode
from .store import StoreConfig

if TYPE_CHECKING:
    import pytest

    fixture = pytest.fixture
else:
    try:
        import pytest
    except ImportError:  # the helpers work without pytest; only the fixtures need it

        def fixture(function):
            return function
    else:
        fixture = pytest.fixture


__all__ = [
    "CapturedEvents",
    "capture_events",
    "event_db",
    "event_db_url",
    "read_all_events",
    "run_projections_until_caught_up",
    "unique_store_config",
]


def unique_store_config() -> StoreConfig:
    """Table names no other test uses, so tests can share one database server."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return StoreConfig(
        events_table=f"{prefix}_events",
        aggregate_heads_table=f"{prefix}_heads",
        checkpoints_table=f"{prefix}_checkpoints",
    )


async def read_all_events(db: Database, *, after: int = 0) -> list[es.PersistedEvent]:
    """Every committed event after position ``after``, reading until caught up.

    Unlike a single ``read_events`` call, this does not stop early at a hole left by an
    append still in flight or just rolled back: it reads until the log holds nothing more
    and no hole is pending.
    """
    events: list[es.PersistedEvent] = []
    position = after
    while True:
        async with db.transaction() as tx:
            batch = await db.store.read_events(tx, position, 1000)
        if batch:
            events += batch
            position = batch[-1].global_position
        elif not hole_above(db.store.pending_holes(), position):
            return events


@dataclass
class CapturedEvents:
    """The events appended while a :func:`capture_events` block ran.

    Attributes:
        events: The events, in log order.
    """

    events: list[es.PersistedEvent] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        """The events' types, in order."""
        return [event.event_type for event in self.events]

    def payloads(self) -> list[Any]:
        """The events' payloads decoded as JSON, in order."""
        return [json.loads(event.payload) for event in self.events]

    def __len__(self) -> int:
        return len(self.events)


@asynccontextmanager
async def capture_events(db: Database) -> AsyncIterator[CapturedEvents]:
    """Collect the events appended to ``db`` during the block.

    The events are there once the block has exited. Everything appended meanwhile is
    captured, by your code or anything else running against the same tables.
    """
    async with db.transaction() as tx:
        start = await db.store.latest_global_position(tx)
    captured = CapturedEvents()
    yield captured
    captured.events = await read_all_events(db, after=start)


async def run_projections_until_caught_up(
    db: Database, *projections: Projection, batch_size: int = 100
) -> None:
    """Run each projection until it has handled every event committed so far.

    Raises:
        ProjectionError: a handler failed; its exception is ``__cause__``.
    """
    config = ProcessorConfig(run_mode=RunMode.ONE_OFF, batch_size=batch_size)
    for projection in projections:
        await db.processor(config).run(projection)


async def _drop_tables(db: Database, config: StoreConfig) -> None:
    tables: Sequence[str] = (
        config.events_table,
        config.aggregate_heads_table,
        config.checkpoints_table,
        in_flight_table(config),
    )
    async with db.transaction() as tx:
        for table in tables:
            if db.dialect == "postgres":
                await tx.execute(f"DROP TABLE IF EXISTS {table}")
            else:
                async with tx.cursor() as cursor:
                    await cursor.execute(f"DROP TABLE IF EXISTS {table}")


@fixture
def event_db_url(tmp_path: Path) -> str:
    """The database ``event_db`` opens: ``PUPSOURCING_TEST_URL`` or a SQLite temp file.

    Override this fixture to point a test module at another database.
    """
    return os.environ.get("PUPSOURCING_TEST_URL") or f"sqlite:///{tmp_path / 'events.db'}"


_FixtureFunction = Callable[[str], AsyncIterator[Database]]


def _async_fixture() -> Callable[[_FixtureFunction], _FixtureFunction]:
    # The plugin loads in every pytest run of an environment that has this package; it must
    # not break one without pytest-asyncio, where pytest then explains the async fixture.
    try:
        import pytest_asyncio
    except ImportError:
        decorator: Any = fixture
    else:
        decorator = pytest_asyncio.fixture
    return cast("Callable[[_FixtureFunction], _FixtureFunction]", decorator)


def _engine_for(url: str) -> Any:
    """An engine on ``url`` where SQLAlchemy is installed, else None."""
    try:
        from .sqlalchemy import create_engine
    except ImportError:
        return None
    # SQLite's busy timeout as connect(url) sets it, for tests with concurrent writers.
    options = {"connect_args": {"timeout": 10.0}} if url.startswith("sqlite") else {}
    return create_engine(url, **options)


@_async_fixture()
async def event_db(event_db_url: str) -> AsyncIterator[Database]:
    """A fresh, migrated event store with table names of its own; dropped afterwards.

    Where SQLAlchemy is installed it is opened on an engine of its own
    (``connect(engine)``), so projections written with
    ``pupsourcing_async.sqlalchemy.connection(tx)`` run in tests as in the application;
    ``tx`` is the driver's connection either way.
    """
    config = unique_store_config()
    engine = _engine_for(event_db_url)
    try:
        async with connect(engine or event_db_url, store_config=config) as db:
            await db.migrate()
            try:
                yield db
            finally:
                if db.dialect != "sqlite":
                    await _drop_tables(db, config)
    finally:
        if engine is not None:
            await engine.dispose()
