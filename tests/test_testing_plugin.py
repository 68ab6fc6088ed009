"""The pytest plugin, used the way a user's test suite uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .test_docs import ROOT, python_blocks

pytest_plugins = ["pytester"]

USER_TESTS = """
import json
from typing import Any

from pupsourcing_async import es
from pupsourcing_async.testing import (
    capture_events,
    read_all_events,
    run_projections_until_caught_up,
)


async def open_account(db, account_id: str, owner: str) -> None:
    event = es.Event("Banking", "Account", account_id, "AccountOpened",
                     json.dumps({"owner": owner}).encode())
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [event])


class Owners:
    name = "owners"

    def __init__(self) -> None:
        self.owners: list[str] = []

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        self.owners.append(json.loads(event.payload)["owner"])


async def test_capture_and_project(event_db):
    async with capture_events(event_db) as captured:
        await open_account(event_db, "acc-1", "Alice")
        await open_account(event_db, "acc-2", "Bob")
    assert captured.types == ["AccountOpened", "AccountOpened"]
    assert captured.payloads() == [{"owner": "Alice"}, {"owner": "Bob"}]
    owners = Owners()
    await run_projections_until_caught_up(event_db, owners)
    assert owners.owners == ["Alice", "Bob"]
    assert len(await read_all_events(event_db)) == 2


async def test_each_test_gets_an_empty_store(event_db):
    assert await read_all_events(event_db) == []
    await open_account(event_db, "acc-1", "Carol")


class OwnersTable:
    # A read model written with SQLAlchemy Core, as an application would.

    name = "owners_table"

    def __init__(self, table) -> None:
        self.table = table

    async def handle(self, tx, event: es.PersistedEvent) -> None:
        from pupsourcing_async.sqlalchemy import connection

        owner = json.loads(event.payload)["owner"]
        await connection(tx).execute(self.table.insert().values(account_id=event.aggregate_id,
                                                                owner=owner))


async def test_a_core_read_model(event_db):
    import sqlalchemy as sa
    from pupsourcing_async.sqlalchemy import connection

    table = sa.Table(event_db.store.config.events_table + "_owners", sa.MetaData(),
                     sa.Column("account_id", sa.String(255), primary_key=True),
                     sa.Column("owner", sa.String(255)))
    async with event_db.transaction() as tx:
        await connection(tx).run_sync(table.metadata.create_all)
    await open_account(event_db, "acc-1", "Dora")
    await run_projections_until_caught_up(event_db, OwnersTable(table))
    async with event_db.transaction() as tx:
        assert (await connection(tx).execute(sa.select(table.c.owner))).scalars().all() == ["Dora"]
"""


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_a_users_tests_get_a_fresh_store_each(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            asyncio_mode = {mode}
            asyncio_default_fixture_loop_scope = function
            """
        )
    )
    if mode == "strict":
        # In strict mode the user marks their async tests themselves.
        pytester.makeconftest("import pytest\npytestmark = pytest.mark.asyncio\n")
        source = pytester.path.joinpath("test_user.py")
        source.write_text("import pytest\npytestmark = pytest.mark.asyncio\n" + source.read_text())
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_testing_pages_pytest_sample_passes(pytester: pytest.Pytester, mode: str) -> None:
    # As a user copies it: pytest-asyncio's default mode is strict.
    (sample,) = [b for b in python_blocks(ROOT / "docs" / "testing.md") if "def test_" in b]
    pytester.makepyfile(test_sample=sample)
    pytester.makeini(
        textwrap.dedent(
            f"""
            [pytest]
            asyncio_mode = {mode}
            asyncio_default_fixture_loop_scope = function
            """
        )
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


WITHOUT_PYTEST = """
import asyncio, json, sys

sys.modules["pytest"] = None  # as if pytest were not installed
sys.modules["pytest_asyncio"] = None

from pupsourcing_async import connect, es
from pupsourcing_async.testing import (
    capture_events, read_all_events, run_projections_until_caught_up, unique_store_config,
)


class Count:
    name = "count"
    seen = 0

    async def handle(self, tx, event):
        Count.seen += 1


async def main():
    url = "sqlite:///" + sys.argv[1]
    async with connect(url, store_config=unique_store_config()) as db:
        await db.migrate()
        async with capture_events(db) as captured:
            async with db.transaction() as tx:
                opened = es.Event("B", "A", "a-1", "Opened", b"{}")
                await db.store.append(tx, es.NoStream(), [opened])
        assert captured.types == ["Opened"], captured.types
        await run_projections_until_caught_up(db, Count())
        assert Count.seen == 1 and len(await read_all_events(db)) == 1
    assert "pytest" not in {name for name, module in sys.modules.items() if module is not None}
    print("ok")


asyncio.run(main())
"""


def test_the_helpers_import_and_run_without_pytest(tmp_path: Path) -> None:
    script = tmp_path / "without_pytest.py"
    script.write_text(WITHOUT_PYTEST)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "events.db")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
