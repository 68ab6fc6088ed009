"""The pytest plugin, used the way a user's test suite uses it."""

from __future__ import annotations

import textwrap

import pytest

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
    result.assert_outcomes(passed=2)
