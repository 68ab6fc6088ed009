"""Fixtures for the NATS JetStream tests.

The shared server comes from ``PUPSOURCING_TEST_NATS_URL`` (``.ci/run`` starts it on
127.0.0.1:4222). Tests that stop, pause or restart NATS run a private ``nats-server`` of
their own on a free port (``PUPSOURCING_TEST_NATS_SERVER`` names the binary, by default
the one on the PATH or /usr/sbin/nats-server), so the shared one is never disturbed.
Without a server the tests are skipped, or fail under ``PUPSOURCING_TEST_REQUIRE_ALL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.js.errors
import pytest
from nats.aio.client import Client

import pupsourcing_async
from pupsourcing_async import Database, es
from pupsourcing_async import nats as pnats

from ..conftest import _unavailable

NATS_URL_ENV = "PUPSOURCING_TEST_NATS_URL"
NATS_SERVER_ENV = "PUPSOURCING_TEST_NATS_SERVER"
ROOT = Path(__file__).resolve().parent.parent.parent


def _answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def nats_url() -> str:
    """The shared NATS server's URL (skip, or fail under REQUIRE_ALL, without one)."""
    url = os.environ.get(NATS_URL_ENV)
    if not url:
        _unavailable(f"nats: set {NATS_URL_ENV} (for example nats://127.0.0.1:4222)")
    assert url is not None
    servers = pnats._connect.safe_servers(url)
    host, _, port = servers[0].split("://", 1)[1].rpartition(":")
    if not _answers(host.strip("[]"), int(port or 4222)):
        _unavailable(f"nats: nothing answers at {servers[0]} ({NATS_URL_ENV})")
    return url


@pytest.fixture
async def nats_client(nats_url: str) -> AsyncIterator[Client]:
    """A client of the shared server, closed after the test."""
    client = await pnats.connect(nats_url, timeout=10, reconnect_wait=0.1)
    try:
        yield client
    finally:
        await client.close()


@dataclass(frozen=True)
class Names:
    """A stream name and subject prefix no other test uses."""

    stream: str
    prefix: str


def unique_names() -> Names:
    token = uuid.uuid4().hex[:10]
    return Names(stream=f"T{token.upper()}", prefix=f"t{token}")


@pytest.fixture
def private_names() -> Names:
    """Unique names, for a private server (which goes with its streams)."""
    return unique_names()


@pytest.fixture
async def names(nats_client: Client) -> AsyncIterator[Names]:
    """Unique names on the shared server; the stream is deleted after the test."""
    found = unique_names()
    try:
        yield found
    finally:
        await delete_stream(nats_client, found.stream)


async def delete_stream(client: Client, name: str) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await client.jetstream().delete_stream(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A ``nats-server`` with JetStream, of this test's own: started, stopped, paused."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary = binary
        self.store = store
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        assert self.process is None
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not await asyncio.to_thread(_answers, "127.0.0.1", self.port):
            if self.process.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"nats-server on port {self.port} did not start")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def server_binary() -> str:
    binary = os.environ.get(NATS_SERVER_ENV) or shutil.which("nats-server")
    if not binary and os.access("/usr/sbin/nats-server", os.X_OK):
        binary = "/usr/sbin/nats-server"
    if not binary:
        _unavailable(f"nats: no nats-server binary (set {NATS_SERVER_ENV})")
    assert binary is not None
    return binary


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A running ``nats-server`` of this test's own; stopped after it."""
    server = NatsServer(server_binary(), tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stopped_nats(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A ``nats-server`` of this test's own, on a port of its own, not started yet;
    stopped after the test if it started it."""
    server = NatsServer(server_binary(), tmp_path / "jetstream")
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    """A migrated SQLite database, for tests about NATS rather than the database."""
    async with pupsourcing_async.connect(f"sqlite:///{tmp_path / 'events.db'}") as db:
        await db.migrate()
        yield db


async def stream_contents(client: Client, stream: str) -> list[tuple[str, es.PersistedEvent]]:
    """Every message of ``stream`` in stream order: its subject and the event it carries."""
    js = client.jetstream()
    info = await js.stream_info(stream)
    found = []
    if info.state.messages:
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, sequence)
            event = pnats.event_from_message(
                message.headers, message.data or b"", subject=message.subject or ""
            )
            found.append((message.subject or "", event))
    return found


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float = 20.0) -> None:
    """Wait for ``condition()`` to hold, checking often; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"not true after {within}s: {condition}")
        await asyncio.sleep(0.01)
