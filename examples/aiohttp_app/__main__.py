"""``python -m examples.aiohttp_app [--url URL] [--port PORT] [--events N]``.

Serves the bank API with aiohttp until Ctrl-C. With ``--events N`` it serves on a free
port, plays a client that opens an account and makes N deposits over HTTP (printing
each answer, read from the projection right after the write), checks ``/health`` and
``/metrics``, and stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from ..common.bank import money, run_id
from ..common.cli import parser
from .app import create_app


async def play(session: aiohttp.ClientSession, base: str, events: int) -> None:
    """Be a client of the API for a while."""
    account = f"acc-bob-{run_id()}"
    async with session.put(f"{base}/accounts/{account}", json={"owner": "Bob"}) as answer:
        body = await answer.json()
        print(f"PUT  /accounts/{account} -> {answer.status}, events {body['events']}")
    for n in range(1, events + 1):
        url = f"{base}/accounts/{account}/deposits"
        async with session.post(url, json={"amount": 1_000 * n}) as answer:
            body = await answer.json()
            print(
                f"POST deposit {money(1_000 * n):>8} -> {answer.status}, "
                f"balance {money(body['balance'])}"
            )
    url = f"{base}/accounts/{account}/withdrawals"
    async with session.post(url, json={"amount": 10**9}) as answer:
        print(
            f"POST withdrawal $10,000,000.00 -> {answer.status}: {(await answer.json())['detail']}"
        )
    async with session.get(f"{base}/accounts/{account}") as answer:
        body = await answer.json()
        print(f"GET  /accounts/{account} -> {answer.status}, balance {money(body['balance'])}")
    async with session.get(f"{base}/health") as answer:
        health = await answer.json()
        lags = ", ".join(f"{p['name']} lag {p['lag']}" for p in health["projections"])
        print(f"GET  /health -> {answer.status}, ok {health['ok']}, {lags}")
    async with session.get(f"{base}/metrics") as answer:
        text = await answer.text()
        appended = [
            line
            for line in text.splitlines()
            if line.startswith("pupsourcing_events_appended_total{")
        ]
        print(f"GET  /metrics -> {answer.status}, {'; '.join(appended)}")


async def serve_and_play(
    url: str | None, prefix: str, port: int, events: int, on_failure: str | None = None
) -> None:
    """Serve on ``port`` (0: any free one), play the client, stop."""
    runner = web.AppRunner(create_app(url, table_prefix=prefix, on_failure=on_failure))
    await runner.setup()  # runs the cleanup context up to its yield
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"Serving on http://127.0.0.1:{bound}")
        async with aiohttp.ClientSession() as session:
            await play(session, f"http://127.0.0.1:{bound}", events)
    finally:
        await runner.cleanup()  # and the rest of it
    print("Server stopped: the projection runner was cancelled in the cleanup context")


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until Ctrl-C, or play ``--events`` requests against a server of our own."""
    cli = parser("aiohttp_app", "An aiohttp service with read-your-writes, health and metrics.")
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, help="default: 8080, or any free port with --events")
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
    web.run_app(
        create_app(args.url, table_prefix=args.table_prefix, on_failure=args.on_failure),
        host=args.host,
        port=args.port or 8080,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
