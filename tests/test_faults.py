"""Faults a production database throws: connections killed from the server side, and a
server that is down when the application starts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import Database, PupsourcingError, StoreUnavailableError, es
from pupsourcing_async.testing import unique_store_config

from .conftest import (
    RawSQL,
    _Containers,
    backend_url,
    drop_tables,
    make_event,
    read_whole_log,
)

SERVERS = ["postgres", "mysql"]


async def _session_id(db: Database, tx: Any) -> int:
    sql = "SELECT pg_backend_pid()" if db.dialect == "postgres" else "SELECT CONNECTION_ID()"
    rows = await RawSQL(db.dialect).fetch(tx, sql)
    return int(rows[0][0])


async def _kill(url: str, dialect: str, session: int) -> None:
    """Kill a session from another connection, as an operator or a failover would."""
    config = unique_store_config()
    async with (
        pupsourcing_async.connect(url, max_size=1, store_config=config) as admin,
        admin.transaction() as tx,
    ):
        raw = RawSQL(dialect)
        if dialect == "postgres":
            await raw.execute(tx, "SELECT pg_terminate_backend(?)", session)
        else:
            await raw.execute(tx, f"KILL {int(session)}")


@pytest.mark.parametrize("backend", SERVERS)
async def test_a_connection_killed_mid_transaction_loses_nothing_and_the_pool_recovers(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, max_size=1) as db:
        await db.migrate()
        try:
            committed: list[es.PersistedEvent] = []
            failures: list[StoreUnavailableError] = []
            for round_ in range(12):
                try:
                    async with db.transaction() as tx:
                        first = await db.store.append(tx, es.Any(), [make_event(f"a{round_}")])
                        if round_ == 5:
                            await _kill(url, db.dialect, await _session_id(db, tx))
                            await asyncio.sleep(0.1)
                        second = await db.store.append(tx, es.Any(), [make_event(f"b{round_}")])
                    committed += first.events + second.events
                except StoreUnavailableError as err:
                    failures.append(err)
            assert len(failures) == 1, failures
            assert db.location in str(failures[0])
            assert failures[0].location == db.location
            log = await read_whole_log(db)
            # The killed transaction's first append is gone with it; all others are whole.
            assert [e.event_id for e in log] == [e.event_id for e in committed]
            assert len(log) == 2 * 11
            assert {e.aggregate_id for e in log}.isdisjoint({"a5", "b5"})
        finally:
            await drop_tables(db, [config.events_table])


@pytest.mark.parametrize("backend", SERVERS)
async def test_an_idle_pooled_connection_killed_fails_one_call_then_works(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, max_size=1) as db:
        await db.migrate()
        try:
            async with db.transaction() as tx:
                session = await _session_id(db, tx)
            await _kill(url, db.dialect, session)
            await asyncio.sleep(0.1)
            outcomes: list[str] = []
            for _ in range(3):
                try:
                    async with db.transaction() as tx:
                        await db.store.append(tx, es.Any(), [make_event()])
                    outcomes.append("ok")
                except StoreUnavailableError:
                    outcomes.append("unavailable")
            # The pool may notice the dead connection itself; at most one call fails.
            assert outcomes.count("unavailable") <= 1
            assert outcomes[-2:] == ["ok", "ok"]
            assert len(await read_whole_log(db)) == outcomes.count("ok")
        finally:
            await drop_tables(db, [config.events_table])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
async def test_a_server_that_is_down_fails_fast_naming_its_host(scheme: str) -> None:
    port = _closed_port()
    url = f"{scheme}://app:not-to-be-printed@127.0.0.1:{port}/events"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailableError) as caught:
        await pupsourcing_async.connect(url, connect_timeout=5)
    assert loop.time() - started < 5
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "not-to-be-printed" not in str(caught.value)
    assert "not-to-be-printed" not in repr(caught.value.__cause__)


@pytest.mark.parametrize("backend", SERVERS)
async def test_writers_whose_sessions_are_killed_see_only_library_errors(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config, max_size=8) as db:
        await db.migrate()
        errors: list[BaseException] = []
        sessions: set[int] = set()
        batches = [[make_event(f"w{w}-{n}") for _ in range(2)] for w in range(8) for n in range(30)]
        outcomes: dict[int, bool] = {}

        async def writer(worker: int) -> None:
            for index in range(worker * 30, worker * 30 + 30):
                try:
                    async with db.transaction() as tx:
                        # The test's own raw query: on a killed session it fails with the
                        # driver's error, and the append after it reports the loss.
                        with contextlib.suppress(Exception):
                            sessions.add(await _session_id(db, tx))
                        await db.store.append(tx, es.Any(), batches[index])
                    outcomes[index] = True
                except Exception as err:
                    errors.append(err)
                    outcomes[index] = False
                await asyncio.sleep(0)

        killed = 0

        async def killer() -> None:
            nonlocal killed
            for _ in range(4):
                await asyncio.sleep(0.05)
                for session in list(sessions):
                    with contextlib.suppress(Exception):  # the session ended meanwhile
                        await _kill(url, db.dialect, session)
                        killed += 1
                sessions.clear()

        try:
            await asyncio.gather(*(writer(w) for w in range(8)), killer())
            raw_errors = [e for e in errors if not isinstance(e, PupsourcingError)]
            assert not raw_errors, raw_errors
            assert killed > 0
            assert errors, "no writer noticed a killed session"
            # The unknown outcomes are retried with the same events: one copy of each.
            for index, ok in outcomes.items():
                if not ok:
                    for _ in range(20):
                        try:
                            async with db.transaction() as tx:
                                await db.store.append(tx, es.Any(), batches[index])
                            break
                        except StoreUnavailableError:
                            await asyncio.sleep(0.1)
            log = await read_whole_log(db)
            assert sorted(e.event_id for e in log) == sorted(
                e.event_id for batch in batches for e in batch
            )
        finally:
            await drop_tables(db, [config.events_table])
