"""The FastAPI and aiohttp examples refuse bad input alike, with a 422, over real HTTP.

Each app runs under its own server (uvicorn, aiohttp's runner) on a local port, on every
backend: a value that reached the log could stop the read model for good, so what a
client sends is checked before anything is appended.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from aiohttp import web

from examples.common.validation import MAX_CENTS
from pupsourcing_async import InvalidEventError

from .examples_support import drop_prefixed_tables, unique_prefix

APPS = ["fastapi", "aiohttp"]
REFUSED = InvalidEventError(0, "aggregate_id", "must not contain NUL characters")


async def _refuse() -> None:
    raise REFUSED


@asynccontextmanager
async def fastapi_server(url: str, prefix: str, **options: Any) -> AsyncIterator[str]:
    from examples.fastapi_app import create_app

    app = create_app(url, table_prefix=prefix, **options)
    app.add_api_route("/refused-by-the-store", _refuse)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not server.started:
            assert not serving.done(), "uvicorn stopped before it started"
            assert asyncio.get_running_loop().time() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


@asynccontextmanager
async def aiohttp_server(url: str, prefix: str, **options: Any) -> AsyncIterator[str]:
    from examples.aiohttp_app import create_app

    async def refuse(request: web.Request) -> web.Response:
        await _refuse()
        raise AssertionError("unreachable")

    app = create_app(url, table_prefix=prefix, **options)
    app.router.add_get("/refused-by-the-store", refuse)
    runner = web.AppRunner(app)
    await runner.setup()  # runs the cleanup context: the store opens, the runner starts
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=APPS)
async def client(request: pytest.FixtureRequest, url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of one example app, served on a local port over ``url``."""
    prefix = unique_prefix()
    serve = fastapi_server if request.param == "fastapi" else aiohttp_server
    try:
        async with serve(url, prefix) as base, httpx.AsyncClient(base_url=base) as http:
            yield http
    finally:
        if not url.startswith("sqlite"):
            await asyncio.to_thread(drop_prefixed_tables, url, prefix)


def detail(answer: httpx.Response) -> str:
    """The reason a 422 gives: FastAPI lists its checks, aiohttp names one."""
    return json.dumps(answer.json()["detail"])


LONG_ID = "a" * 300
BAD_IDS = [(LONG_ID, "at most 255 characters"), ("a%00b", "control characters")]


@pytest.mark.parametrize(("account", "reason"), BAD_IDS, ids=["300 characters", "NUL"])
async def test_a_bad_account_id_is_a_422_everywhere(
    client: httpx.AsyncClient, account: str, reason: str
) -> None:
    calls = [
        client.put(f"/accounts/{account}", json={"owner": "Alice"}),
        client.post(f"/accounts/{account}/deposits", json={"amount": 1}),
        client.post(f"/accounts/{account}/withdrawals", json={"amount": 1}),
        client.get(f"/accounts/{account}"),
    ]
    for call in calls:
        answer = await call
        assert answer.status_code == 422, answer.text
        assert reason in detail(answer)
    health = await client.get("/health")
    assert health.json()["head_position"] == 0  # nothing was appended


async def test_the_longest_account_id_is_served(client: httpx.AsyncClient) -> None:
    account = "b" * 255
    answer = await client.put(f"/accounts/{account}", json={"owner": "Bob"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["account_id"] == account


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"owner": ""}, "must not be empty"),
        ({"owner": "x" * 101}, "at most 100 characters"),
        ({"owner": "Ali\x00ce"}, "control characters"),
        ({"owner": 5}, "must be a string"),
        ({"owner": True}, "must be a string"),
        ({}, "owner"),
    ],
    ids=["empty", "101 characters", "NUL", "number", "true", "missing"],
)
async def test_a_bad_owner_is_a_422(
    client: httpx.AsyncClient, body: dict[str, Any], reason: str
) -> None:
    answer = await client.put("/accounts/acc-1", json=body)
    assert answer.status_code == 422, answer.text
    assert reason in detail(answer)
    assert (await client.get("/accounts/acc-1")).status_code == 404


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (True, "whole number of cents"),
        ("5", "whole number of cents"),
        (1.5, "whole number of cents"),
        (None, "whole number of cents"),
        (0, f"from 1 to {MAX_CENTS} cents"),
        (-1, f"from 1 to {MAX_CENTS} cents"),
        (MAX_CENTS + 1, f"from 1 to {MAX_CENTS} cents"),
        (99999999999999999999999, f"from 1 to {MAX_CENTS} cents"),
    ],
    ids=["true", "string", "fraction", "null", "zero", "negative", "too much", "past int64"],
)
async def test_a_bad_amount_is_a_422_and_appends_nothing(
    client: httpx.AsyncClient, amount: object, reason: str
) -> None:
    opened = await client.put("/accounts/acc-1", json={"owner": "Alice"})
    assert opened.status_code == 201, opened.text
    for kind in ("deposits", "withdrawals"):
        answer = await client.post(f"/accounts/acc-1/{kind}", json={"amount": amount})
        assert answer.status_code == 422, answer.text
        assert reason in detail(answer)
    assert (await client.get("/accounts/acc-1")).json()["events"] == 1


async def test_a_body_that_is_not_a_json_object_is_a_422(client: httpx.AsyncClient) -> None:
    await client.put("/accounts/acc-1", json={"owner": "Alice"})
    for body in (b"not json", b"[1]"):
        answer = await client.post(
            "/accounts/acc-1/deposits", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422, answer.text


async def test_the_largest_amount_is_served(client: httpx.AsyncClient) -> None:
    await client.put("/accounts/acc-1", json={"owner": "Alice"})
    answer = await client.post("/accounts/acc-1/deposits", json={"amount": MAX_CENTS})
    assert answer.status_code == 200, answer.text
    assert answer.json()["balance"] == MAX_CENTS
    assert (await client.get("/health")).json()["ok"] is True


async def test_an_event_the_store_refuses_is_a_422(client: httpx.AsyncClient) -> None:
    answer = await client.get("/refused-by-the-store")
    assert answer.status_code == 422
    assert answer.json() == {"detail": str(REFUSED)}
