"""The aiohttp application: the FastAPI example's API, with the store in ``cleanup_ctx``.

The cleanup context opens the database, starts the projection runner as a task, and
on shutdown cancels the runner (its batch in flight rolls back) and closes the database.
Input is checked by the same rules as the FastAPI example's
(``examples/common/validation.py``): a bad account id, owner or amount is a 422, and so
is an event the store refuses (``InvalidEventError``). A runner that stops on an event its
handler cannot take makes writes and ``/health`` answer 503 with the reason at once; with
``on_failure=OnFailure.PARK`` the event is parked instead (``GET /parked`` lists it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pupsourcing_async import Database, InvalidEventError, OptimisticConcurrencyError, es
from pupsourcing_async.projection import OnFailure, run_projections
from pupsourcing_async.prometheus import PrometheusObserver

from ..common import commands, validation
from ..common import web as shared
from ..common.bank import Balances
from ..common.cli import Setup

__all__ = ["PROJECTION", "create_app", "init_app"]

PROJECTION = "aiohttp_balances"
log = logging.getLogger("examples.aiohttp_app")


class Services:
    """What the handlers need, made in the cleanup context."""

    def __init__(self, db: Database, balances: Balances, runner: asyncio.Task[None]) -> None:
        self.db = db
        self.balances = balances
        self.runner = runner

    async def account(self, account_id: str) -> web.Response:
        rows = await self.balances.rows(self.db, [account_id])
        if not rows:
            return error(404, f"no account {account_id}")
        owner, balance, events = rows[0]
        return web.json_response(
            {"account_id": account_id, "owner": owner, "balance": balance, "events": events}
        )

    async def after(self, account_id: str, result: es.AppendResult) -> web.Response:
        """The account once the projection has processed ``result``: read-your-writes."""
        position = result.global_positions[-1]
        try:
            await shared.wait_for(self.db, position, PROJECTION, self.runner, timeout=5)
        except TimeoutError:
            return error(504, "stored, but the read model has not caught up yet")
        except shared.ReadModelStopped as err:
            return error(503, f"stored, but {err}")
        return await self.account(account_id)


SERVICES = web.AppKey("services", Services)
REGISTRY = web.AppKey("registry", CollectorRegistry)
routes = web.RouteTableDef()


def error(status: int, detail: str) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


class BadInput(web.HTTPUnprocessableEntity):
    """A 422 whose JSON body says what was wrong, as the FastAPI example's do."""

    def __init__(self, detail: str) -> None:
        super().__init__(text=json.dumps({"detail": detail}), content_type="application/json")


@web.middleware
async def refused_input(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer 422 for input the rules or the store refuse, not 500."""
    try:
        return await handler(request)
    except (validation.InvalidInput, InvalidEventError) as err:
        raise BadInput(str(err)) from err


def account_id_of(request: web.Request) -> str:
    """The request's account id, checked."""
    return validation.account_id(request.match_info["account_id"])


async def field(request: web.Request, name: str) -> Any:
    """A field of the request's JSON object, or None."""
    try:
        body: Any = await request.json()
    except ValueError:
        raise BadInput("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body.get(name)


async def amount_of(request: web.Request) -> int:
    """The ``amount`` of a JSON body, checked."""
    return validation.cents(await field(request, "amount"))


@routes.put("/accounts/{account_id}")
async def open_account(request: web.Request) -> web.Response:
    svc, account_id = request.app[SERVICES], account_id_of(request)
    owner = validation.owner(await field(request, "owner"))
    try:
        result = await commands.open_account(svc.db, account_id, owner)
    except commands.AccountExistsError as err:
        return error(409, str(err))
    response = await svc.after(account_id, result)
    response.set_status(201 if response.status == 200 else response.status)
    return response


@routes.post("/accounts/{account_id}/deposits")
async def deposit(request: web.Request) -> web.Response:
    svc, account_id = request.app[SERVICES], account_id_of(request)
    amount = await amount_of(request)
    try:
        result = await commands.deposit(svc.db, account_id, amount)
    except commands.AccountNotFoundError as err:
        return error(404, str(err))
    except OptimisticConcurrencyError:
        return error(409, "the account changed meanwhile; try again")
    return await svc.after(account_id, result)


@routes.post("/accounts/{account_id}/withdrawals")
async def withdraw(request: web.Request) -> web.Response:
    svc, account_id = request.app[SERVICES], account_id_of(request)
    amount = await amount_of(request)
    try:
        result = await commands.withdraw(svc.db, account_id, amount)
    except commands.AccountNotFoundError as err:
        return error(404, str(err))
    except commands.InsufficientFundsError as err:
        return error(422, str(err))
    except OptimisticConcurrencyError:
        return error(409, "the account changed meanwhile; try again")
    return await svc.after(account_id, result)


@routes.get("/accounts/{account_id}")
async def account(request: web.Request) -> web.Response:
    return await request.app[SERVICES].account(account_id_of(request))


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    status, report = await shared.health(request.app[SERVICES].db, PROJECTION)
    return web.json_response(report, status=status)


@routes.get("/parked")
async def parked(request: web.Request) -> web.Response:
    return web.json_response(await shared.parked(request.app[SERVICES].db, PROJECTION))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    url: str | None = None, *, table_prefix: str = "", on_failure: OnFailure | str | None = None
) -> web.Application:
    """The application on the database at ``url``.

    Without ``url``: ``PUPSOURCING_URL`` from the environment, or a SQLite file in a
    temporary directory that lives as long as the application runs. ``on_failure`` is
    what the runner does with an event its handler keeps failing on (``BANK_ON_FAILURE``
    when omitted, else stop).
    """
    policy = shared.on_failure(on_failure)
    app = web.Application(middlewares=[refused_input])
    # A registry per application, so that several apps (tests) can live in one process.
    app[REGISTRY] = CollectorRegistry()
    observer = PrometheusObserver(app[REGISTRY])

    async def event_store(app: web.Application) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            where_url = url or os.environ.get("PUPSOURCING_URL")
            if not where_url:
                directory = stack.enter_context(tempfile.TemporaryDirectory())
                where_url = f"sqlite:///{Path(directory) / 'bank.db'}"
            where = Setup(where_url, table_prefix)
            config = where.store_config(observers=[observer])
            # The store shares the engine's pool, and the read model is Core on it.
            db = await stack.enter_async_context(where.connect(config))
            await db.migrate()
            balances = Balances(PROJECTION, where.table("aiohttp_balances"))
            await balances.create_table(db)
            runner = asyncio.create_task(
                run_projections(db, [(balances, shared.runner_config(policy))]),
                name="projections",
            )
            app[SERVICES] = Services(db, balances, runner)
            try:
                yield
            finally:
                runner.cancel()
                # asyncio.wait, unlike await, neither raises the cancellation we asked for
                # nor swallows one aimed at us.
                await asyncio.wait([runner])
                if not runner.cancelled() and runner.exception() is not None:
                    log.error("the projection runner had failed", exc_info=runner.exception())

    app.cleanup_ctx.append(event_store)
    app.add_routes(routes)
    return app


def init_app(argv: Sequence[str] | None = None) -> web.Application:
    """For ``python -m aiohttp.web examples.aiohttp_app:init_app``: ``PUPSOURCING_URL``."""
    return create_app()
