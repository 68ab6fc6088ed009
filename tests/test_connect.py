"""connect(url), Database and its transactions."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import aiosqlite
import pytest

import pupsourcing_async
from pupsourcing_async import (
    OptimisticConcurrencyError,
    SchemaError,
    StoreConfig,
    StoreUnavailableError,
    TransactionRolledBackError,
    UnsupportedURLError,
    es,
)
from pupsourcing_async._url import parse_url, redact_url
from pupsourcing_async.adapters import sqlite
from pupsourcing_async.testing import unique_store_config

from .conftest import _Containers, backend_url, drop_tables, make_event


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url", ["redis://localhost/0", "http://example.com", "events.db", "oracle://u:p@h/db"]
)
async def test_unknown_scheme_raises(url: str) -> None:
    with pytest.raises(UnsupportedURLError) as caught:
        await pupsourcing_async.connect(url)
    assert isinstance(caught.value, ValueError)
    assert caught.value.scheme == (url.partition(":")[0].lower() if ":" in url else "")
    assert "p@" not in str(caught.value)


def test_url_parsing() -> None:
    assert parse_url("sqlite:///relative.db").sqlite_path == "relative.db"
    assert parse_url("sqlite:////abs/path.db").sqlite_path == "/abs/path.db"
    assert parse_url("sqlite://").sqlite_path == ":memory:"
    assert parse_url("sqlite:///:memory:").sqlite_path == ":memory:"
    assert parse_url("sqlite+aiosqlite:///x.db").dialect == "sqlite"
    pg = parse_url("postgresql+asyncpg://app:s3cret@db.internal:5433/events")
    assert pg.dialect == "postgres"
    assert pg.url == "postgresql://app:s3cret@db.internal:5433/events"
    assert pg.location == "db.internal:5433/events"
    assert "s3cret" not in str(pg)
    assert parse_url("postgres://h/db").dialect == "postgres"
    assert parse_url("mysql://root@127.0.0.1:3306/test").dialect == "mysql"
    assert parse_url("mariadb://root@127.0.0.1/test").location == "127.0.0.1/test"
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(UnsupportedURLError, match="file"):
        parse_url("sqlite://host/x.db")


async def test_unreachable_postgres_fails_fast_naming_the_host_not_the_password() -> None:
    pytest.importorskip("asyncpg")
    port = closed_port()
    url = f"postgresql://app:hunter2secret@127.0.0.1:{port}/events"
    with pytest.raises(StoreUnavailableError) as caught:
        await asyncio.wait_for(pupsourcing_async.connect(url, connect_timeout=3), 10)
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert caught.value.location == f"127.0.0.1:{port}/events"
    assert "hunter2secret" not in message
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.__cause__ is not None


async def test_await_form_and_close_twice(tmp_path: Path) -> None:
    db = await pupsourcing_async.connect(f"sqlite:///{tmp_path / 'a.db'}")
    assert db.dialect == "sqlite"
    assert "a.db" in repr(db)
    await db.migrate()
    await db.close()
    await db.close()


async def test_relative_sqlite_path_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with pupsourcing_async.connect("sqlite:///relative.db") as db:
        await db.migrate()
    assert (tmp_path / "relative.db").exists()


async def test_in_memory_sqlite_keeps_its_data_across_transactions() -> None:
    async with pupsourcing_async.connect("sqlite://") as db:
        await db.migrate()
        async with db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event()])
        async with db.transaction() as tx:
            assert len(await db.store.read_events(tx)) == 1


async def test_sqlite_in_a_missing_directory_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "dir" / "x.db"
    with pytest.raises(StoreUnavailableError) as caught:
        await pupsourcing_async.connect(f"sqlite:///{path}")
    assert str(path) in str(caught.value)


async def test_sqlite_uses_wal_and_waits_for_concurrent_writers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    async with pupsourcing_async.connect(url, max_size=8) as db:
        await db.migrate()
        async with db.transaction() as tx:
            mode = await tx.execute_fetchall("PRAGMA journal_mode")
        assert next(iter(mode))[0] == "wal"

        async def writer(n: int) -> None:
            for i in range(10):
                async with db.transaction() as tx:
                    await db.store.append(tx, es.Any(), [make_event(f"w{n}")])
                    await asyncio.sleep(0.001 * (i % 3))

        await asyncio.gather(*(writer(n) for n in range(8)))
        async with db.transaction() as tx:
            assert await db.store.latest_global_position(tx) == 80


async def test_sqlite_writers_in_two_databases_on_one_file_wait_for_each_other(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    async with pupsourcing_async.connect(url) as one, pupsourcing_async.connect(url) as two:
        await one.migrate()
        held = asyncio.Event()

        async def slow() -> None:
            async with one.transaction() as tx:
                await one.store.append(tx, es.NoStream(), [make_event("a")])
                held.set()
                await asyncio.sleep(0.3)

        async def fast() -> None:
            await held.wait()
            async with two.transaction() as tx:
                await two.store.append(tx, es.NoStream(), [make_event("b")])

        await asyncio.gather(slow(), fast())
        async with two.transaction() as tx:
            assert len(await two.store.read_events(tx)) == 2


async def test_sqlite_busy_timeout_is_a_lock_timeout(tmp_path: Path) -> None:
    # A lock wait that times out is the same typed error on every database.
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    async with (
        pupsourcing_async.connect(url) as one,
        pupsourcing_async.connect(url, pool_options={"busy_timeout": 0.1}) as two,
    ):
        await one.migrate()
        async with one.transaction():
            with pytest.raises(TransactionRolledBackError, match="locked") as caught:
                async with two.transaction():
                    pass
            assert caught.value.reason == "lock timeout"


@pytest.mark.parametrize("isolation_level", [None, "DEFERRED"])
async def test_a_users_own_sqlite_connection_outside_a_transaction(
    tmp_path: Path, isolation_level: str | None
) -> None:
    path = tmp_path / "own.db"
    async with pupsourcing_async.connect(f"sqlite:///{path}") as db:
        await db.migrate()
    store = sqlite.Store()
    async with aiosqlite.connect(path, isolation_level=isolation_level) as conn:
        result = await store.append(conn, es.NoStream(), [make_event(), make_event()])
        assert not conn.in_transaction
        assert result.to_version == 2
        with pytest.raises(OptimisticConcurrencyError):
            await store.append(conn, es.NoStream(), [make_event()])
        assert not conn.in_transaction
    async with aiosqlite.connect(path) as conn:
        assert len(await store.read_events(conn)) == 2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_missing_tables_raise_a_schema_error(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config) as db:
        with pytest.raises(SchemaError) as caught:
            async with db.transaction() as tx:
                await db.store.append(tx, es.NoStream(), [make_event()])
        assert "migrate" in str(caught.value)
        assert caught.value.table == config.aggregate_heads_table
        with pytest.raises(SchemaError):
            async with db.transaction() as tx:
                await db.store.read_events(tx)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrate_is_idempotent_and_safe_to_run_concurrently(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config) as db:
        try:
            await asyncio.gather(*(db.migrate() for _ in range(4)))
            await db.migrate()
            async with db.transaction() as tx:
                await db.store.append(tx, es.NoStream(), [make_event()])
            await db.migrate()
            async with db.transaction() as tx:
                assert len(await db.store.read_events(tx)) == 1
        finally:
            if backend != "sqlite":
                await drop_tables(db, [config.events_table])


async def test_pool_options_are_checked() -> None:
    with pytest.raises(ValueError, match="min_size"):
        pupsourcing_async.connect("sqlite://", min_size=5, max_size=2)
    with pytest.raises(ValueError, match="connect_timeout"):
        pupsourcing_async.connect("sqlite://", connect_timeout=0)


def test_store_config_validates_table_names() -> None:
    assert StoreConfig().events_table == "events"
    assert pupsourcing_async.default_store_config() == StoreConfig()
    for bad in ("", "1events", "events;drop", "my-events", "ev ents", "a.b", "x" * 41, 'e"'):
        with pytest.raises(ValueError, match="events_table"):
            StoreConfig(events_table=bad)
    with pytest.raises(ValueError, match="checkpoints_table"):
        StoreConfig(checkpoints_table="drop table x")
    with pytest.raises(ValueError, match="sqlite_"):
        StoreConfig(events_table="sqlite_events")
    with pytest.raises(ValueError, match="distinct"):
        StoreConfig(events_table="same", aggregate_heads_table="same")
    assert StoreConfig(events_table="_Events_2").events_table == "_Events_2"


def test_the_package_imports_no_driver() -> None:
    code = (
        "import sys, pupsourcing_async, pupsourcing_async.es, pupsourcing_async.store\n"
        "loaded = {'asyncpg', 'aiomysql', 'pymysql'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
