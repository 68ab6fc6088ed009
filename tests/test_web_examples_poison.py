"""The poison-event story, told by the FastAPI and aiohttp examples under their real
servers (uvicorn, aiohttp's runner), over HTTP, on every backend.

A deposit the handler cannot take (99999999999999999999999 cents: past BIGINT) is in the
log, written by a writer that did not check it (an older release, a script): the API
itself refuses it. With ``OnFailure.STOP`` the runner stops, and ``/health`` and every
later write answer 503 with the reason, at once. With ``OnFailure.PARK`` the event is
parked, the next deposit is answered 200 from the read model, and ``/parked`` lists it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

import pupsourcing_async
from examples.common.bank import money_deposited
from examples.common.cli import Setup
from pupsourcing_async import Database, es

from .examples_support import drop_prefixed_tables, unique_prefix
from .test_web_examples_input import APPS, aiohttp_server, fastapi_server

POISON = 99999999999999999999999
NAMES = {"fastapi": "api_balances", "aiohttp": "aiohttp_balances"}


@pytest.fixture(params=APPS)
def app(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def prefix(url: str) -> AsyncIterator[str]:
    name = unique_prefix()
    yield name
    if not url.startswith("sqlite"):
        await asyncio.to_thread(drop_prefixed_tables, url, name)


@pytest.fixture
async def unchecked(url: str, prefix: str) -> AsyncIterator[Database]:
    """The database as a writer that skips the API's checks sees it (an older release, a
    script). Opened before the app: on SQLite it puts the file in WAL mode, which the
    app's engine leaves as it finds it, and a switch while the app writes would fail."""
    async with pupsourcing_async.connect(url, store_config=Setup(url, prefix).store_config()) as db:
        yield db


async def write_unchecked(db: Database, event: es.Event) -> es.PersistedEvent:
    """Append ``event`` without the API's checks."""
    async with db.transaction() as tx:
        result = await db.store.append(tx, es.StreamExists(), [event])
    return result.events[0]


async def health_once_it_is(http: httpx.AsyncClient, status: int) -> httpx.Response:
    """``/health`` once it answers ``status`` (polled, with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        answer = await http.get("/health")
        if answer.status_code == status:
            return answer
        assert loop.time() < deadline, f"/health still {answer.status_code}: {answer.text}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("policy", ["stop", "park"])
async def test_a_poison_event_stops_the_read_model_visibly_or_is_parked(
    app: str, url: str, prefix: str, unchecked: Database, policy: str
) -> None:
    serve = fastapi_server if app == "fastapi" else aiohttp_server
    projection = NAMES[app]
    async with (
        serve(url, prefix, on_failure=policy) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as http,
    ):
        assert (await http.put("/accounts/acc-1", json={"owner": "Alice"})).status_code == 201
        refused = await http.post("/accounts/acc-1/deposits", json={"amount": POISON})
        assert refused.status_code == 422
        poison = await write_unchecked(unchecked, money_deposited("acc-1", POISON))

        if policy == "stop":
            answer = await health_once_it_is(http, 503)
            report = answer.json()
            assert report["ok"] is False
            [health] = report["projections"]
            assert health["name"] == projection
            assert health["stopped"] is True
            assert health["progressing"] is False
            reason = health["last_error"]
            assert f"failed on event {poison.global_position} (MoneyDeposited)" in reason
            assert report["problems"] == [f"projection {projection} stopped: {reason}"]
            # A write is stored but cannot be read back: said at once, not after 5 s.
            answer = await http.post("/accounts/acc-1/deposits", json={"amount": 100})
            assert answer.status_code == 503, answer.text
            assert "the read model is stopped" in answer.json()["detail"]
            assert f"failed on event {poison.global_position}" in answer.json()["detail"]
            return

        answer = await http.post("/accounts/acc-1/deposits", json={"amount": 100})
        assert answer.status_code == 200, answer.text
        assert answer.json()["balance"] == 100
        assert answer.json()["events"] == 2  # the opening and this deposit
        [parked] = (await http.get("/parked")).json()
        assert parked["checkpoint"] == projection
        assert parked["global_position"] == poison.global_position
        assert parked["event_id"] == str(poison.event_id)
        assert parked["event_type"] == "MoneyDeposited"
        assert parked["attempts"] == 3
        health = await http.get("/health")
        assert health.status_code == 200, health.text
        [report] = health.json()["projections"]
        assert report["parked"] == 1
        assert report["last_error"] == parked["error"]
