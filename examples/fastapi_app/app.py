"""The FastAPI application: accounts with read-your-writes, health and metrics.

- ``PUT /accounts/{id}`` opens an account, ``POST /accounts/{id}/deposits`` and
  ``/withdrawals`` move money: each appends, waits until the balances projection has
  processed its event (``db.wait_for``), and answers from the read model, so the client
  reads its own write.
- ``GET /accounts/{id}`` answers from the read model.
- ``GET /health`` is ``db.health([PROJECTION])``: 503, with the reason, when the database
  or the projection is in trouble (its runner stopped, say).
- ``GET /parked`` lists the events the projection parked.
- ``GET /metrics`` is the Prometheus text format.

Input is checked by the rules in ``examples/common/validation.py``, the same as the
aiohttp example's: a bad account id, owner or amount is a 422, and so is an event the
store refuses (``InvalidEventError``).

The projection runner lives in the lifespan: a task started after the database opens
and cancelled (its batch in flight rolled back) before it closes. An event its handler
cannot take stops it (``OnFailure.STOP``: writes and ``/health`` then answer 503 with the
reason), or, with ``on_failure=OnFailure.PARK`` (or ``BANK_ON_FAILURE=park``), is parked
and the runner goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async.projection import OnFailure, run_projections
from pupsourcing_async.prometheus import PrometheusObserver

from ..common import commands, validation, web
from ..common.bank import Balances
from ..common.cli import Setup

__all__ = ["PROJECTION", "app", "create_app"]

PROJECTION = "api_balances"
log = logging.getLogger("examples.fastapi_app")


AccountId = Annotated[str, AfterValidator(validation.account_id)]


class Opening(BaseModel):
    """The body of ``PUT /accounts/{id}``."""

    owner: Annotated[str, BeforeValidator(validation.owner), Field(max_length=validation.MAX_OWNER)]


class Movement(BaseModel):
    """The body of a deposit or withdrawal: an amount in cents."""

    # Checked before pydantic's own int, which would take true for 1.
    amount: Annotated[int, BeforeValidator(validation.cents), Field(le=validation.MAX_CENTS)]


class Account(BaseModel):
    """An account as the read model knows it."""

    account_id: str
    owner: str
    balance: int
    events: int


class Services:
    """What the endpoints need, made in the lifespan."""

    def __init__(self, db: Database, balances: Balances, runner: asyncio.Task[None]) -> None:
        self.db = db
        self.balances = balances
        self.runner = runner

    async def account(self, account_id: str) -> Account:
        rows = await self.balances.rows(self.db, [account_id])
        if not rows:
            raise HTTPException(404, f"no account {account_id}")
        owner, balance, events = rows[0]
        return Account(account_id=account_id, owner=owner, balance=balance, events=events)

    async def after(self, account_id: str, result: es.AppendResult) -> Account:
        """The account once the projection has processed ``result``: read-your-writes."""
        position = result.global_positions[-1]
        try:
            await web.wait_for(self.db, position, PROJECTION, self.runner, timeout=5)
        except TimeoutError as err:
            raise HTTPException(504, "stored, but the read model has not caught up yet") from err
        except web.ReadModelStopped as err:
            raise HTTPException(503, f"stored, but {err}") from err
        return await self.account(account_id)


def services(request: Request) -> Services:
    """The lifespan's services, for ``Depends``."""
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


def create_app(
    url: str | None = None, *, table_prefix: str = "", on_failure: OnFailure | str | None = None
) -> FastAPI:
    """The application on the database at ``url``.

    Without ``url``: ``PUPSOURCING_URL`` from the environment, or a SQLite file in a
    temporary directory that lives as long as the application runs. ``on_failure`` is
    what the runner does with an event its handler keeps failing on (``BANK_ON_FAILURE``
    when omitted, else stop).
    """
    policy = web.on_failure(on_failure)
    # A registry per application, so that several apps (tests) can live in one process.
    registry = CollectorRegistry()
    metrics = PrometheusObserver(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            where_url = url or os.environ.get("PUPSOURCING_URL")
            if not where_url:
                directory = stack.enter_context(tempfile.TemporaryDirectory())
                where_url = f"sqlite:///{Path(directory) / 'bank.db'}"
            where = Setup(where_url, table_prefix)
            config = where.store_config(observers=[metrics])
            # The store shares the engine's pool, and the read model is Core on it.
            db = await stack.enter_async_context(where.connect(config))
            await db.migrate()
            balances = Balances(PROJECTION, where.table("api_balances"))
            await balances.create_table(db)
            runner = asyncio.create_task(
                run_projections(db, [(balances, web.runner_config(policy))]), name="projections"
            )
            app.state.services = Services(db, balances, runner)
            try:
                yield
            finally:
                runner.cancel()
                # asyncio.wait, unlike await, neither raises the cancellation we asked for
                # nor swallows one aimed at us.
                await asyncio.wait([runner])
                if not runner.cancelled() and runner.exception() is not None:
                    log.error("the projection runner had failed", exc_info=runner.exception())

    app = FastAPI(title="pupsourcing_async bank", lifespan=lifespan)

    @app.exception_handler(pupsourcing_async.InvalidEventError)
    async def invalid_event(request: Request, err: Exception) -> JSONResponse:
        # What the store refuses is the client's input, not a server failure.
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.put("/accounts/{account_id}", status_code=201)
    async def open_account(account_id: AccountId, body: Opening, svc: ServicesDep) -> Account:
        try:
            result = await commands.open_account(svc.db, account_id, body.owner)
        except commands.AccountExistsError as err:
            raise HTTPException(409, str(err)) from err
        return await svc.after(account_id, result)

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(account_id: AccountId, body: Movement, svc: ServicesDep) -> Account:
        try:
            result = await commands.deposit(svc.db, account_id, body.amount)
        except commands.AccountNotFoundError as err:
            raise HTTPException(404, str(err)) from err
        except pupsourcing_async.OptimisticConcurrencyError as err:
            raise HTTPException(409, "the account changed meanwhile; try again") from err
        return await svc.after(account_id, result)

    @app.post("/accounts/{account_id}/withdrawals")
    async def withdraw(account_id: AccountId, body: Movement, svc: ServicesDep) -> Account:
        try:
            result = await commands.withdraw(svc.db, account_id, body.amount)
        except commands.AccountNotFoundError as err:
            raise HTTPException(404, str(err)) from err
        except commands.InsufficientFundsError as err:
            raise HTTPException(422, str(err)) from err
        except pupsourcing_async.OptimisticConcurrencyError as err:
            raise HTTPException(409, "the account changed meanwhile; try again") from err
        return await svc.after(account_id, result)

    @app.get("/accounts/{account_id}")
    async def account(account_id: AccountId, svc: ServicesDep) -> Account:
        return await svc.account(account_id)

    @app.get("/health")
    async def health(svc: ServicesDep) -> JSONResponse:
        status, report = await web.health(svc.db, PROJECTION)
        return JSONResponse(report, status_code=status)

    @app.get("/parked")
    async def parked(svc: ServicesDep) -> JSONResponse:
        return JSONResponse(await web.parked(svc.db, PROJECTION))

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


#: For ``uvicorn examples.fastapi_app:app``: the database comes from ``PUPSOURCING_URL``.
app = create_app()
