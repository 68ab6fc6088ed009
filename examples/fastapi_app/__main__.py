"""``python -m examples.fastapi_app [--url URL] [--port PORT] [--events N]``.

Serves the bank API with uvicorn until Ctrl-C. With ``--events N`` it serves on a free
port, plays a client that opens an account and makes N deposits over HTTP (printing
each answer, read from the projection right after the write), checks ``/health`` and
``/metrics``, and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import uvicorn

from ..common.bank import money, run_id
from ..common.cli import parser
from .app import create_app


async def play(client: httpx.AsyncClient, events: int) -> None:
    """Be a client of the API for a while."""
    account = f"acc-alice-{run_id()}"
    answer = await client.put(f"/accounts/{account}", json={"owner": "Alice"})
    print(f"PUT  /accounts/{account} -> {answer.status_code}, events {answer.json()['events']}")
    for n in range(1, events + 1):
        answer = await client.post(f"/accounts/{account}/deposits", json={"amount": 1_000 * n})
        body = answer.json()
        print(
            f"POST deposit {money(1_000 * n):>8} -> {answer.status_code}, "
            f"balance {money(body['balance'])}"
        )
    answer = await client.post(f"/accounts/{account}/withdrawals", json={"amount": 10**9})
    print(f"POST withdrawal $10,000,000.00 -> {answer.status_code}: {answer.json()['detail']}")
    answer = await client.get(f"/accounts/{account}")
    print(
        f"GET  /accounts/{account} -> {answer.status_code}, "
        f"balance {money(answer.json()['balance'])}"
    )
    answer = await client.get("/health")
    health = answer.json()
    lags = ", ".join(f"{p['name']} lag {p['lag']}" for p in health["projections"])
    print(f"GET  /health -> {answer.status_code}, ok {health['ok']}, {lags}")
    answer = await client.get("/metrics")
    appended = [
        line
        for line in answer.text.splitlines()
        if line.startswith("pupsourcing_events_appended_total{")
    ]
    print(f"GET  /metrics -> {answer.status_code}, {'; '.join(appended)}")


async def serve_and_play(
    url: str | None, prefix: str, port: int, events: int, on_failure: str | None = None
) -> None:
    """Serve on ``port`` (0: any free one), play the client, stop."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(url, table_prefix=prefix, on_failure=on_failure),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.serve())
        while not server.started:
            if serving.done():
                raise SystemExit("the server did not start")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"Serving on http://127.0.0.1:{bound}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound}", timeout=10) as client:
            await play(client, events)
        server.should_exit = True
    print("Server stopped: the projection runner was cancelled in the lifespan")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C, or play ``--events`` requests against a server of our own."""
    cli = parser("fastapi_app", "A FastAPI service with read-your-writes, health and metrics.")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, help="default: 8000, or any free port with --events")
    cli.add_argument("--events", type=int, help="play a client making N deposits, then stop")
    cli.add_argument(
        "--on-failure",
        choices=["stop", "park"],
        help="what the projection runner does with an event it cannot handle: stop "
        "(/health then answers 503) or park it and go on (default: $BANK_ON_FAILURE or stop)",
    )
    args = cli.parse_args(argv)
    if args.events is not None:
        asyncio.run(
            serve_and_play(
                args.url, args.table_prefix, args.port or 0, args.events, args.on_failure
            )
        )
        return 0
    uvicorn.run(
        create_app(args.url, table_prefix=args.table_prefix, on_failure=args.on_failure),
        host=args.host,
        port=args.port or 8000,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
