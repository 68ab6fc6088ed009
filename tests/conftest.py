"""Fixtures that give each contract test a fresh, migrated store on every backend.

Backends come from ``PUPSOURCING_TEST_POSTGRES_URL`` / ``PUPSOURCING_TEST_MYSQL_URL``;
without them a testcontainers container is started when a Docker engine answers, else the
backend's tests are skipped with the reason. With ``PUPSOURCING_TEST_REQUIRE_ALL=1`` a
missing backend fails instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.testing import unique_store_config

BACKENDS = ("sqlite", "postgres", "mysql")
_ENV = {"postgres": "PUPSOURCING_TEST_POSTGRES_URL", "mysql": "PUPSOURCING_TEST_MYSQL_URL"}


def require_all() -> bool:
    """Whether a missing backend must fail the run instead of skipping."""
    return os.environ.get("PUPSOURCING_TEST_REQUIRE_ALL", "") not in ("", "0", "false")


def _unavailable(reason: str) -> None:
    if require_all():
        pytest.fail(f"{reason} (PUPSOURCING_TEST_REQUIRE_ALL is set)")
    pytest.skip(reason)


class _Containers:
    """Database containers started on demand, once per test session."""

    def __init__(self) -> None:
        self._urls: dict[str, str | None] = {}
        self._running: list[Any] = []

    def url(self, backend: str) -> str | None:
        if backend not in self._urls:
            self._urls[backend] = self._start(backend)
        return self._urls[backend]

    def _start(self, backend: str) -> str | None:
        try:
            import docker  # type: ignore[import-untyped]

            docker.from_env().ping()
        except Exception:
            return None
        if backend == "postgres":
            from testcontainers.postgres import PostgresContainer

            pg = PostgresContainer("postgres:15", driver=None)
            pg.start()
            self._running.append(pg)
            return str(pg.get_connection_url())
        from testcontainers.mysql import MySqlContainer

        my = MySqlContainer("mariadb:10.11")
        my.start()
        self._running.append(my)
        host, port = my.get_container_host_ip(), my.get_exposed_port(3306)
        return f"mysql://{my.username}:{my.password}@{host}:{port}/{my.dbname}"

    def stop(self) -> None:
        for container in self._running:
            container.stop()


@pytest.fixture(scope="session")
def containers() -> Iterator[_Containers]:
    found = _Containers()
    yield found
    found.stop()


def backend_url(backend: str, containers: _Containers, tmp_path: Path) -> str:
    """A URL for ``backend``, or skip (fail under REQUIRE_ALL) when none is available."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    url = os.environ.get(_ENV[backend]) or containers.url(backend)
    if not url:
        _unavailable(f"{backend}: set {_ENV[backend]} or run a Docker engine")
    assert url is not None
    return url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend a contract test runs on."""
    return str(request.param)


@pytest.fixture
def url(backend: str, containers: _Containers, tmp_path: Path) -> str:
    """A database URL for the current backend."""
    return backend_url(backend, containers, tmp_path)


async def drop_tables(db: Database, tables: Sequence[str]) -> None:
    """Drop the given tables and any helper tables named after them."""
    async with db.transaction() as tx:
        raw = RawSQL(db.dialect)
        pattern = tables[0].removesuffix("_events")
        for name in await raw.tables_like(tx, pattern):
            await raw.execute(tx, f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    """A fresh, migrated database with table names of its own."""
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, max_size=12) as database:
        await database.migrate()
        try:
            yield database
        finally:
            if database.dialect != "sqlite":
                await drop_tables(database, [config.events_table])


@dataclass
class RawSQL:
    """Plain SQL on whichever driver connection a backend hands out, for assertions.

    Write ``?`` placeholders; they become ``$n`` on PostgreSQL and ``%s`` on MySQL.
    """

    dialect: str

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgres":
            counter = iter(range(1, 1000))
            return re.sub(r"\?", lambda _: f"${next(counter)}", sql)
        if self.dialect == "mysql":
            return sql.replace("%", "%%").replace("?", "%s")
        return sql

    async def fetch(self, tx: Any, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        text = self._sql(sql)
        if self.dialect == "postgres":
            return [tuple(row) for row in await tx.fetch(text, *args)]
        if self.dialect == "sqlite":
            return [tuple(row) for row in await tx.execute_fetchall(text, args)]
        async with tx.cursor() as cursor:
            await cursor.execute(text, args)
            return [tuple(row) for row in await cursor.fetchall()]

    async def execute(self, tx: Any, sql: str, *args: Any) -> None:
        text = self._sql(sql)
        if self.dialect == "postgres":
            await tx.execute(text, *args)
        elif self.dialect == "sqlite":
            await tx.execute(text, args)
        else:
            async with tx.cursor() as cursor:
                await cursor.execute(text, args)

    async def tables_like(self, tx: Any, prefix: str) -> list[str]:
        if self.dialect == "postgres":
            sql = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        elif self.dialect == "mysql":
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
        else:
            sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
        return [name for (name,) in await self.fetch(tx, sql) if name.startswith(prefix + "_")]


@pytest.fixture
def raw(db: Database) -> RawSQL:
    """Plain SQL access for the current backend."""
    return RawSQL(db.dialect)


async def read_whole_log(db: Database, *, within: float = 20.0) -> list[es.PersistedEvent]:
    """Page through the log until caught up: nothing more to read and no hole pending.

    A short or empty page is not the end while a hole waits for its proof.
    """
    seen: list[es.PersistedEvent] = []
    checkpoint = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        async with db.transaction() as tx:
            batch = await db.store.read_events(tx, checkpoint, 1000)
        if batch:
            seen += batch
            checkpoint = batch[-1].global_position
        elif not db.store.pending_holes():
            return seen
        else:
            await asyncio.sleep(0.01)
    raise AssertionError(f"not caught up after {within}s: {db.store.pending_holes()}")


EventFactory = Callable[..., es.Event]


def make_event(
    aggregate_id: str = "acc-1",
    event_type: str = "MoneyDeposited",
    payload: bytes = b'{"amount": 10}',
    *,
    bounded_context: str = "Banking",
    aggregate_type: str = "Account",
    **options: Any,
) -> es.Event:
    """An event with sensible defaults for tests."""
    return es.Event(bounded_context, aggregate_type, aggregate_id, event_type, payload, **options)


# --- projections -----------------------------------------------------------------------


@dataclass
class ReadModel:
    """A read model table written through the batch's own connection."""

    db: Database
    table: str

    @property
    def raw(self) -> RawSQL:
        return RawSQL(self.db.dialect)

    async def rows(self) -> list[tuple[str, int]]:
        async with self.db.transaction() as tx:
            rows = await self.raw.fetch(
                tx, f"SELECT event_id, global_position FROM {self.table} ORDER BY global_position"
            )
        return [(str(event_id), int(position)) for event_id, position in rows]


@pytest.fixture
async def read_model(db: Database) -> ReadModel:
    table = db.store.config.events_table.replace("_events", "_read_model")
    async with db.transaction() as tx:
        # The primary key makes a second handling of an event fail loudly.
        await RawSQL(db.dialect).execute(
            tx,
            f"CREATE TABLE {table} (event_id VARCHAR(64) PRIMARY KEY, "
            "aggregate_id VARCHAR(255) NOT NULL, global_position BIGINT NOT NULL)",
        )
    return ReadModel(db, table)


@dataclass
class Recorder:
    """A projection that writes each event into the read model and remembers it."""

    read_model: ReadModel
    name: str = "recorder"
    seen: list[es.PersistedEvent] = field(default_factory=list)
    fail_on: str | None = None

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        if event.event_type == self.fail_on:
            raise RuntimeError(f"cannot handle {event.event_type}")
        await self.read_model.raw.execute(
            tx,
            f"INSERT INTO {self.read_model.table} (event_id, aggregate_id, global_position) "
            "VALUES (?, ?, ?)",
            str(event.event_id),
            event.aggregate_id,
            event.global_position,
        )
        self.seen.append(event)


@dataclass
class ScopedRecorder(Recorder):
    aggregate_types: Sequence[str] = ()
    bounded_contexts: Sequence[str] = ()


async def append_many(
    db: Database, count: int, *, aggregates: int = 5, **options: Any
) -> list[es.PersistedEvent]:
    stored: list[es.PersistedEvent] = []
    for index in range(count):
        async with db.transaction() as tx:
            result = await db.store.append(
                tx, es.Any(), [make_event(f"acc-{index % aggregates}", **options)]
            )
        stored += result.events
    return stored
