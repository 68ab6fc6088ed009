"""Every example under ``examples/`` runs and tells the story its README promises.

On SQLite in a temporary directory by default; a few also on PostgreSQL and MySQL when
``PUPSOURCING_TEST_POSTGRES_URL`` / ``PUPSOURCING_TEST_MYSQL_URL`` are set, with table
names of their own.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.conftest import require_all
from tests.examples_support import Child, drop_prefixed_tables, unique_prefix

EXAMPLES = [
    "aiohttp_app",
    "basic",
    "fastapi_app",
    "integration_testing",
    "multiple_projections",
    "mysql_basic",
    "partitioned",
    "scaling",
    "scoped_projections",
    "single_worker",
    "sqlite_basic",
    "stop_resume",
    "with_logging",
    "worker_pool",
]

Run = Callable[..., str]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``python -m examples.<name> ARGS`` in this process; what it printed."""

    def run_example(name: str, *args: str) -> str:
        main = importlib.import_module(f"examples.{name}.__main__").main
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    return run_example


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'example.db'}"


def test_every_example_has_a_readme_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    listed = {p.name for p in root.iterdir() if (p / "__main__.py").exists()}
    assert listed == {*EXAMPLES, "eventmap_codegen"}
    for name in EXAMPLES:
        assert (root / name / "README.md").read_text().startswith("# ")
        main = importlib.import_module(f"examples.{name}.__main__").main
        with pytest.raises(SystemExit) as exit_:
            main(["--help"])
        assert exit_.value.code == 0
        assert f"python -m examples.{name}" in capsys.readouterr().out


# --- the tours ---------------------------------------------------------------------------


def test_basic(run: Run) -> None:
    out = run("basic")  # no --url: a SQLite file in a temporary directory
    assert "Connected to sqlite" in out
    assert "Opened acc-alice-" in out
    assert "An append expecting Exact(2) is refused: the account is at 4" in out
    assert "Replaying 4 events gives the balance: $1,300.00" in out
    assert "read model says: Alice has $1,300.00" in out


def test_sqlite_basic(run: Run, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    out = run("sqlite_basic", "--url", url)
    assert f"Event store in the file {tmp_path / 'bank.db'}" in out
    lines = out.splitlines()
    a_commits = next(
        i for i, line in enumerate(lines) if "A appended version 3 and commits" in line
    )
    b_begins = next(i for i, line in enumerate(lines) if "B began after waiting" in line)
    assert a_commits < b_begins
    assert re.search(r"B began after waiting \d+ ms for the write lock and read version 3", out)
    assert "B appended version 4" in out
    assert "appended version 5 through its own aiosqlite connection" in out
    assert "has 5 events" in out
    assert "Carol has $135.00" in out
    # The file outlives the run, and a second run adds to it.
    assert "Carol has $135.00" in run("sqlite_basic", "--url", url)


def test_sqlite_basic_refuses_other_databases(run: Run) -> None:
    with pytest.raises(SystemExit) as exit_:
        run("sqlite_basic", "--url", "postgresql://localhost/x")
    assert exit_.value.code == 2


def test_mysql_basic_runs_on_sqlite_too(run: Run, sqlite_url: str) -> None:
    out = run("mysql_basic", "--url", sqlite_url)
    assert "got versions 2..11, 10 distinct" in out
    assert "1 succeeded, 1 refused" in out
    assert "lease none (SQLite has no leases)" in out
    assert "Read model: Dave has $550.00" in out


def test_eventmap_codegen(tmp_path: Path) -> None:
    from examples.eventmap_codegen.story import run as story

    out = io.StringIO()
    asyncio.run(story(f"sqlite:///{tmp_path / 'orders.db'}", out))
    assert "every stored version can be read as the newest" in out.getvalue()


# --- projections ---------------------------------------------------------------------------


def test_multiple_projections(run: Run) -> None:
    out = run("multiple_projections")
    for name in ("multi_balances", "multi_ledger", "multi_order_status"):
        assert re.search(rf"{name} +position +11, lag 0", out)
    assert re.search(r"Alice +\$800\.00", out)
    assert "Ledger: 3 money movements" in out
    assert re.search(r"order-1-\w+ +Alice +\$99\.99 +delivered 123456789", out)
    assert re.search(r"order-2-\w+ +Bob +\$49\.99 +paid", out)
    assert "stops the group: multi_auditor at position 5" in out
    assert "KeyError: 'withdrawal_reason'" in out


def test_scoped_projections(run: Run) -> None:
    out = run("scoped_projections")
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("scoped_")}
    assert "3 Banking/Account, 2 Loyalty/Account, 3 Shop/Order" in rows["scoped_audit"]
    assert "3 Banking/Account " in rows["scoped_bank"]
    assert "Loyalty" not in rows["scoped_bank"]
    assert "3 Banking/Account, 2 Loyalty/Account " in rows["scoped_accounts"]
    assert "3 Shop/Order" in rows["scoped_shop"]
    assert "Every checkpoint is at the head (8)" in out


def test_stop_resume(run: Run) -> None:
    out = run("stop_resume")
    assert "stopped while handling its 13th event, position 13" in out
    assert "rolled back: checkpoint 10, 10 rows in the read model" in out
    assert "Run 2 resumed after position 10 and handled 23 events, positions 11..33" in out
    assert "33 rows; checkpoint 33; no event was handled twice" in out
    assert "run 3 handled all 33 events again; 33 rows" in out


def test_with_logging(run: Run) -> None:
    out = run("with_logging")
    part1, part2 = out.split("Part 2")
    assert "text  DEBUG pupsourcing_async.store: appended events bounded_context=Banking" in part1
    assert "INFO  pupsourcing_async.store: optimistic concurrency conflict" in part1
    assert '"logger": "pupsourcing_async.projection"' in part1
    assert '"projection": "logging_std_balances", "checkpoint": "logging_std_balances"' in part1
    assert "pupsourcing_async" not in part2  # nothing went through logging
    assert 'level=info msg="optimistic concurrency conflict" service=bank component=store' in part2
    assert 'level=debug msg="batch committed" service=bank component=projection' in part2


# --- workers, partitions, processes -------------------------------------------------------


def test_worker_pool(run: Run) -> None:
    out = run("worker_pool", "--workers", "3")
    assert "3 workers running in one process" in out
    assert "Appended 48 events to 8 accounts" in out
    counts = [int(n) for n in re.findall(r"p\d: +(\d+) events", out)]
    assert len(counts) == 3
    assert sum(counts) == 48
    assert all(counts)
    assert "Each account was handled by one partition only" in out


def test_partitioned_runs_one_process_per_partition(run: Run) -> None:
    out = run("partitioned", "--partitions", "3")
    pids = re.search(r"Started 3 worker processes: pids (\d+), (\d+), (\d+)", out)
    assert pids is not None
    assert len(set(pids.groups())) == 3
    assert str(os.getpid()) not in pids.groups()
    for key, pid in enumerate(pids.groups()):
        assert f"[p{key}] started (pid {pid})" in out
        assert re.search(rf"\[p{key}\] stopped cleanly after \d+ events", out)
    assert "Workers exited with codes [0, 0, 0]" in out
    counts = [int(n) for n in re.findall(r"p\d \(pid \d+\): +(\d+) events", out)]
    assert sum(counts) == 48
    assert all(counts)
    assert "Each account was handled by one process only" in out


def test_scaling(run: Run) -> None:
    out = run("scaling", "--partitions", "4")
    assert "partitions 1, 2, 3 have no worker yet" in out
    for key in (1, 2, 3):
        assert f"p{key} started and is catching up" in out
    assert "all 4 partitions caught up with position 48" in out
    assert "SQLite has no leases" in out
    taken_over = re.search(r"p0-standby took over partition 0 and handled the (\d+) deposits", out)
    assert taken_over is not None
    assert int(taken_over.group(1)) > 0
    assert "events handled exactly once" in out


def test_single_worker_stops_by_itself_in_bounded_mode(run: Run) -> None:
    out = run("single_worker", "--events", "9", "--interval", "0.005", "--handler-delay", "0")
    assert "Caught up with all 9 deposits" in out
    assert "Worker stopped cleanly" in out
    assert "Read model and checkpoint agree" in out
    assert "Checkpoint at position 12; the read model holds 12 events" in out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_single_worker_stops_gracefully_on_a_signal(sqlite_url: str, signum: int) -> None:
    # Each event takes the handler a second, so the signal lands in the middle of a batch.
    child = Child(["-m", "examples.single_worker", "--url", sqlite_url, "--handler-delay", "1"])
    child.wait_for_line(lambda line: "worker: AccountOpened" in line)
    child.process.send_signal(signum)
    code, out = child.finish()
    assert code == 0, out
    assert "Stopping: cancelling the worker" in out
    assert "Worker stopped cleanly" in out
    assert "The batch in flight rolled back" in out
    assert "Checkpoint at position 0; the read model holds 0 events" in out
    assert "Read model and checkpoint agree" in out
    # Run again: it resumes from the checkpoint.
    again = Child(["-m", "examples.single_worker", "--url", sqlite_url, "--events", "3",
                   "--interval", "0.005", "--handler-delay", "0"])  # fmt: skip
    code, out = again.finish()
    assert code == 0, out
    assert "Read model and checkpoint agree" in out


# --- the web apps ---------------------------------------------------------------------------


async def test_fastapi_app_in_process(sqlite_url: str) -> None:
    from examples.fastapi_app import create_app

    app = create_app(sqlite_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bank") as client:
            answer = await client.put("/accounts/acc-1", json={"owner": "Alice"})
            assert answer.status_code == 201
            assert answer.json() == {
                "account_id": "acc-1",
                "owner": "Alice",
                "balance": 0,
                "events": 1,
            }
            for n, balance in ((1_000, 1_000), (2_500, 3_500)):
                # Read-your-writes: the answer already holds the deposit.
                answer = await client.post("/accounts/acc-1/deposits", json={"amount": n})
                assert answer.status_code == 200
                assert answer.json()["balance"] == balance
            answer = await client.post("/accounts/acc-1/withdrawals", json={"amount": 500})
            assert answer.json()["balance"] == 3_000
            assert (
                await client.post("/accounts/acc-1/withdrawals", json={"amount": 9_999})
            ).status_code == 422
            assert (
                await client.put("/accounts/acc-1", json={"owner": "Mallory"})
            ).status_code == 409
            assert (
                await client.post("/accounts/nope/deposits", json={"amount": 1})
            ).status_code == 404
            assert (
                await client.post("/accounts/acc-1/deposits", json={"amount": -1})
            ).status_code == 422
            assert (await client.get("/accounts/acc-1")).json()["events"] == 4

            health = await client.get("/health")
            assert health.status_code == 200
            report = health.json()
            assert report["ok"] is True
            assert report["dialect"] == "sqlite"
            assert [(p["name"], p["lag"]) for p in report["projections"]] == [("api_balances", 0)]

            metrics = await client.get("/metrics")
            assert metrics.headers["content-type"].startswith("text/plain")
            text = metrics.text
            assert (
                "pupsourcing_events_appended_total"
                '{aggregate_type="Account",bounded_context="Banking"} 4.0' in text
            )
            assert (
                'pupsourcing_projection_events_handled_total{partition="0",projection="api_balances"}'
                in text
            )

            # A database that no longer answers makes /health say so, with a 503.
            await app.state.services.db.close()
            health = await client.get("/health")
            assert health.status_code == 503
            assert health.json()["reachable"] is False


def test_fastapi_app_serves_a_client_of_its_own(sqlite_url: str) -> None:
    child = Child(["-m", "examples.fastapi_app", "--url", sqlite_url, "--events", "3"])
    code, out = child.finish(timeout=60)
    assert code == 0, out
    assert re.search(r"Serving on http://127\.0\.0\.1:\d+", out)
    assert re.search(r"POST deposit +\$30\.00 -> 200, balance \$60\.00", out)
    assert "-> 422: balance 6000 does not cover" in out
    assert "GET  /health -> 200, ok True, api_balances lag 0" in out
    assert "Server stopped" in out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_uvicorn_serves_the_module_level_app(sqlite_url: str) -> None:
    port = _free_port()
    env = {**os.environ, "PUPSOURCING_URL": sqlite_url}
    child = Child(
        ["-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port), "--log-level", "info"],
        env=env,
    )
    try:
        child.wait_for_line(lambda line: "Application startup complete" in line)
        base = f"http://127.0.0.1:{port}"
        assert httpx.put(f"{base}/accounts/acc-9", json={"owner": "Zoe"}).status_code == 201
        answer = httpx.post(f"{base}/accounts/acc-9/deposits", json={"amount": 4_200})
        assert answer.json()["balance"] == 4_200
        assert httpx.get(f"{base}/health").json()["location"] == sqlite_url.removeprefix(
            "sqlite:///"
        )
    finally:
        child.process.send_signal(signal.SIGTERM)
        code, out = child.finish()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert code in (0, -signal.SIGTERM), out
    assert "Application shutdown complete" in out


async def test_aiohttp_app_in_process(sqlite_url: str) -> None:
    from examples.aiohttp_app import create_app

    async with TestClient(TestServer(create_app(sqlite_url))) as client:
        answer = await client.put("/accounts/acc-1", json={"owner": "Bob"})
        assert answer.status == 201
        assert await answer.json() == {
            "account_id": "acc-1",
            "owner": "Bob",
            "balance": 0,
            "events": 1,
        }
        answer = await client.post("/accounts/acc-1/deposits", json={"amount": 1_500})
        assert (await answer.json())["balance"] == 1_500
        answer = await client.post("/accounts/acc-1/withdrawals", json={"amount": 400})
        assert (await answer.json())["balance"] == 1_100
        assert (
            await client.post("/accounts/acc-1/withdrawals", json={"amount": 5_000})
        ).status == 422
        assert (await client.put("/accounts/acc-1", json={"owner": "Eve"})).status == 409
        assert (await client.get("/accounts/nope")).status == 404
        assert (await client.post("/accounts/acc-1/deposits", data=b"not json")).status == 422
        health = await client.get("/health")
        assert health.status == 200
        assert (await health.json())["projections"][0]["name"] == "aiohttp_balances"
        text = await (await client.get("/metrics")).text()
        assert (
            "pupsourcing_events_appended_total"
            '{aggregate_type="Account",bounded_context="Banking"} 3.0' in text
        )


def test_aiohttp_app_serves_a_client_of_its_own(sqlite_url: str) -> None:
    child = Child(["-m", "examples.aiohttp_app", "--url", sqlite_url, "--events", "2"])
    code, out = child.finish(timeout=60)
    assert code == 0, out
    assert re.search(r"POST deposit +\$20\.00 -> 200, balance \$30\.00", out)
    assert "GET  /health -> 200, ok True, aiohttp_balances lag 0" in out
    assert "Server stopped" in out


# --- integration testing ----------------------------------------------------------------------


def test_integration_testing_examples_tests_pass() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PUPSOURCING_TEST_URL"}
    child = Child(["-m", "examples.integration_testing"], env=env)
    code, out = child.finish(timeout=60)
    assert code == 0, out
    assert "7 passed" in out


# --- on the database servers ----------------------------------------------------------------

_SERVERS = {"postgres": "PUPSOURCING_TEST_POSTGRES_URL", "mysql": "PUPSOURCING_TEST_MYSQL_URL"}


@pytest.fixture(params=sorted(_SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A database server's URL and a table prefix of this test's own; tables dropped after."""
    variable = _SERVERS[str(request.param)]
    url = os.environ.get(variable)
    if not url:
        reason = f"{request.param}: set {variable}"
        if require_all():
            pytest.fail(f"{reason} (PUPSOURCING_TEST_REQUIRE_ALL is set)")
        pytest.skip(reason)
    prefix = unique_prefix()
    yield url, prefix
    drop_prefixed_tables(url, prefix)


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("basic", (), "read model says: Alice has $1,300.00"),
        ("mysql_basic", (), "Read model: Dave has $550.00"),
        ("stop_resume", (), "33 rows; checkpoint 33; no event was handled twice"),
        ("worker_pool", ("--workers", "3"), "Each account was handled by one partition only"),
        ("scaling", ("--partitions", "3"), "p0-standby waits for the lease p0 holds"),
        ("multiple_projections", (), "stops the group: multi_auditor at position 5"),
    ],
)
def test_examples_on_database_servers(
    run: Run, server: tuple[str, str], name: str, args: tuple[str, ...], expected: str
) -> None:
    url, prefix = server
    out = run(name, "--url", url, "--table-prefix", prefix, *args)
    assert expected in out
    if name == "scaling":
        assert "events handled exactly once" in out
    if name == "mysql_basic":
        assert "lease held" in out


def test_partitioned_on_database_servers(run: Run, server: tuple[str, str]) -> None:
    url, prefix = server
    out = run("partitioned", "--url", url, "--table-prefix", prefix, "--partitions", "2")
    assert "Workers exited with codes [0, 0]" in out
    assert "Each account was handled by one process only" in out


assert sys.version_info >= (3, 11)
