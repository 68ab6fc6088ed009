"""Every Python sample in the documentation runs, on every database.

Each page's ``python`` blocks run in order, in one namespace per page, with top-level
``await`` allowed and ``url`` bound to a fresh database (so a page reads like one
session): a SQLite file, or a database of its own on the PostgreSQL and MariaDB servers,
made for the run and dropped after it, since pages use fixed table names. A block that
calls ``asyncio.run`` is a whole program: it runs as a script, in a temporary directory,
with the URL in ``PUPSOURCING_URL``. Blocks that include a file (``--8<--``) show code the
examples' tests run already. A page whose samples connect to NATS gets a
``nats-server`` of its own.
"""

from __future__ import annotations

import ast
import asyncio
import re
import subprocess
import sys
import textwrap
import types
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiomysql
import asyncpg
import prometheus_client
import pytest

from .conftest import _Containers, backend_url

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_BLOCK = re.compile(r"^([ \t]*)```python[^\n]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    """The page's ``python`` code blocks, in order."""
    return [textwrap.dedent(block) for _, block in _BLOCK.findall(page.read_text())]


def runnable_blocks(page: Path) -> list[str]:
    """The blocks this test runs: all but those that include an example's file."""
    return [block for block in python_blocks(page) if "--8<--" not in block]


SAMPLED = [page for page in PAGES if runnable_blocks(page)]


def test_every_page_is_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "adapters.md", "projections.md", "observability.md"} <= names
    assert {page.name for page in SAMPLED} >= {
        "README.md",
        "getting-started.md",
        "testing.md",
        "nats.md",
    }


#: The NATS server the samples name; a page that needs one gets a private server instead.
SAMPLE_NATS_URL = "nats://127.0.0.1:4222"


async def _server_statement(url: str, sql: str) -> None:
    """Run ``sql`` outside any transaction (CREATE DATABASE refuses to run inside one)."""
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()
        return
    parts = urlsplit(url)
    connection = await aiomysql.connect(
        host=parts.hostname or "localhost",
        port=parts.port or 3306,
        user=parts.username or "root",
        password=parts.password or "",
        autocommit=True,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(sql)
    finally:
        connection.close()


@pytest.fixture
async def docs_url(backend: str, containers: _Containers, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database for one page: a SQLite file, or a database made on the server."""
    server = backend_url(backend, containers, tmp_path / "server")
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'docs.db'}"
        return
    name = f"docs_{uuid.uuid4().hex[:12]}"
    await _server_statement(server, f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    finally:
        force = " WITH (FORCE)" if backend == "postgres" else ""
        await _server_statement(server, f"DROP DATABASE IF EXISTS {name}{force}")


@pytest.mark.parametrize("page", SAMPLED, ids=lambda page: page.name)
async def test_the_python_samples_of_a_page_run(page: Path, tmp_path: Path, docs_url: str) -> None:
    blocks = runnable_blocks(page)
    if any(SAMPLE_NATS_URL in block for block in blocks):
        from .jetstream.conftest import NatsServer, server_binary

        server = NatsServer(server_binary(), tmp_path / "jetstream")
        await server.start()
        try:
            blocks = [block.replace(SAMPLE_NATS_URL, server.url) for block in blocks]
            await _run_blocks(page, blocks, tmp_path, docs_url)
        finally:
            await server.stop()
        return
    await _run_blocks(page, blocks, tmp_path, docs_url)


async def _run_blocks(page: Path, blocks: list[str], tmp_path: Path, docs_url: str) -> None:
    # A module of its own, so dataclasses and pickling find the classes a page defines.
    module = types.ModuleType(f"docs_{page.stem.replace('-', '_')}")
    module.__dict__["url"] = docs_url
    sys.modules[module.__name__] = module
    # A page's metrics go to prometheus_client's global registry, once per run.
    registered = set(prometheus_client.REGISTRY._collector_to_names)
    try:
        for number, block in enumerate(blocks, 1):
            where = f"{page.name}, Python block {number}"
            if "asyncio.run(" in block:
                script = tmp_path / f"block{number}.py"
                script.write_text(block)
                result = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, str(script)],
                    cwd=tmp_path,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    env={
                        "PYTHONPATH": str(ROOT),
                        "PATH": "/usr/bin:/bin",
                        "PUPSOURCING_URL": docs_url,
                    },
                )
                assert result.returncode == 0, f"{where} failed:\n{result.stderr}"
                continue
            code = compile(
                block, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
            )
            outcome = eval(code, module.__dict__)
            if asyncio.iscoroutine(outcome):
                await outcome
    finally:
        database = module.__dict__.get("db")
        if database is not None and hasattr(database, "close"):
            await database.close()
        client = module.__dict__.get("client")
        if client is not None and not getattr(client, "is_closed", True):
            await client.close()
        engine = module.__dict__.get("engine")
        if engine is not None and hasattr(engine, "dispose"):
            await engine.dispose()
        sys.modules.pop(module.__name__, None)
        for collector in set(prometheus_client.REGISTRY._collector_to_names) - registered:
            prometheus_client.REGISTRY.unregister(collector)


def test_the_api_page_renders_no_sphinx_roles(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    api = (site / "api" / "index.html").read_text()
    assert "Made by <code>connect()</code>" in api
    for page in site.rglob("*.html"):
        found = re.findall(r":(?:meth|class|func|attr|mod|exc|data|obj):`?", page.read_text())
        assert not found, f"{page.relative_to(site)} shows Sphinx roles: {sorted(set(found))}"
