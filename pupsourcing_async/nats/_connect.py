"""Connecting to NATS the way a long-running publisher or consumer needs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client

from .._async import shielded
from ..log import Logger, get_logger
from ._errors import NatsUnavailableError

__all__ = ["connect", "safe_servers"]


def safe_servers(servers: str | Sequence[str]) -> list[str]:
    """The server URLs without user names, passwords or tokens, for messages."""
    found = []
    for server in _server_list(servers):
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        try:
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            port = ""
        found.append(f"{parts.scheme}://{host}{port}")
    return found


def _server_list(servers: str | Sequence[str]) -> list[str]:
    if isinstance(servers, str):
        return [part.strip() for part in servers.split(",") if part.strip()]
    return [str(server) for server in servers]


async def connect(
    servers: str | Sequence[str] = "nats://127.0.0.1:4222",
    *,
    name: str | None = None,
    timeout: float = 30.0,
    reconnect_wait: float = 1.0,
    logger: Logger | None = None,
    **options: Any,
) -> Client:
    """Connect to NATS, waiting up to ``timeout`` seconds for it to answer.

    Once connected, the client reconnects by itself for as long as it is open, however
    long NATS is away (nats-py gives up after a minute by default); a publisher's
    batches fail meanwhile and are retried. Connection trouble is logged on one line.
    Close the client when done (``await client.close()``).

    Args:
        servers: A URL, comma-separated URLs, or a list of them.
        name: The connection's name in NATS's monitoring.
        timeout: How long to keep trying before giving up.
        reconnect_wait: Seconds between attempts to reach a server.
        logger: Where connection trouble is logged; the standard
            ``pupsourcing_async.nats`` logger by default.
        **options: Passed to ``nats.aio.client.Client.connect`` (credentials, TLS, ...).

    Raises:
        NatsUnavailableError: no server answered within ``timeout``; the message names
            the servers without credentials, and the last error.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    log = get_logger(logger, "pupsourcing_async.nats")
    shown = safe_servers(servers)
    where = ", ".join(shown)
    last: list[BaseException] = []
    client = Client()

    async def on_error(err: Exception) -> None:
        last[:] = [err]
        log.error("NATS connection trouble", servers=where, error=_describe(err))

    async def on_disconnected() -> None:
        # Closing the client disconnects it too; only a loss is news.
        if not client.is_closed:
            log.info("NATS connection lost; reconnecting", servers=where)

    async def on_reconnected() -> None:
        log.info("NATS connection back", servers=where)

    settings: dict[str, Any] = {
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": reconnect_wait,
        "connect_timeout": min(2.0, timeout),
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    settings.update(options)
    connected = False
    try:
        async with asyncio.timeout(timeout):
            await client.connect(servers=_server_list(servers), name=name, **settings)
        connected = True
    except TimeoutError:
        reason = f": {_describe(last[0])}" if last else ""
        raise NatsUnavailableError(
            f"NATS does not answer at {where} (tried for {timeout:g}s){reason}", servers=shown
        ) from None
    finally:
        if not connected:
            # Timed out, cancelled, or refused for good: nothing may stay open.
            await shielded(client.close())
    log.info("NATS connected", servers=where, server=_connected(client))
    return client


def _connected(client: Client) -> str:
    url = client.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
