"""The command line."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import pupsourcing_async
from pupsourcing_async import es
from pupsourcing_async.cli import main

from .conftest import make_event


def test_demo_runs_fresh_then_continues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 0
    first = capsys.readouterr().out
    assert "Starting a fresh demo event store" in first
    assert "balance: $1,000.00" in first
    assert "up to Jan 10, 2024 gives: $1,300.00" in first
    assert "stale read is refused" in first
    assert "Alice       $1,000.00" in first
    assert "Bob           $250.00" in first
    assert (tmp_path / "pupsourcing_demo.db").exists()

    assert main(["demo"]) == 0
    second = capsys.readouterr().out
    assert "Continuing the demo event store" in second
    assert "balance: $1,050.00" in second
    assert "up to Jan 10, 2024 gives: $1,300.00" in second
    assert "handled 1 new event." in second
    assert "Alice       $1,050.00" in second


def test_runtime_failure_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--file", str(tmp_path / "no" / "such" / "dir.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1


def test_usage_error_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", "no-such-command"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_help_lists_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "account" in result.stdout
    assert "examples:" in result.stdout


# --- migrate-gen, migrate, events, projections ---------------------------------------------


def _run(
    *args: str, env: dict[str, str] | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pupsourcing_async.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
        timeout=60,
        **kwargs,
    )


@pytest.mark.parametrize("adapter", ["postgres", "mysql", "sqlite"])
def test_migrate_gen_writes_one_timestamped_file(tmp_path: Path, adapter: str) -> None:
    result = _run("migrate-gen", "--adapter", adapter, "--output", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    [written] = list((tmp_path / "m").iterdir())
    assert re.fullmatch(r"\d{14}_init_event_sourcing\.sql", written.name)
    sql = written.read_text()
    assert "CREATE TABLE IF NOT EXISTS events" in sql
    assert "CREATE TABLE IF NOT EXISTS aggregate_heads" in sql
    assert "CREATE TABLE IF NOT EXISTS projection_checkpoints" in sql


def test_migrate_gen_names_and_table_options(tmp_path: Path) -> None:
    result = _run(
        "migrate-gen",
        "--adapter",
        "postgres",
        "--output",
        str(tmp_path),
        "--filename",
        "001_events.sql",
        "--events-table",
        "billing_events",
        "--aggregate-heads-table",
        "billing_heads",
        "--checkpoints-table",
        "billing_checkpoints",
    )
    assert result.returncode == 0, result.stderr
    sql = (tmp_path / "001_events.sql").read_text()
    assert "CREATE TABLE IF NOT EXISTS billing_events" in sql
    assert "billing_heads" in sql
    assert "billing_checkpoints" in sql
    again = _run(
        "migrate-gen",
        "--adapter",
        "postgres",
        "--output",
        str(tmp_path),
        "--filename",
        "001_events.sql",
    )
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1


def test_generated_migration_creates_a_working_store(tmp_path: Path) -> None:
    assert _run("migrate-gen", "--adapter", "sqlite", "--output", str(tmp_path)).returncode == 0
    [written] = list(tmp_path.glob("*.sql"))
    database = tmp_path / "app.db"
    with sqlite3.connect(database) as connection:
        connection.executescript(written.read_text())
    url = f"sqlite:///{database}"

    async def use() -> int:
        async with pupsourcing_async.connect(url) as db, db.transaction() as tx:
            await db.store.append(tx, es.NoStream(), [make_event()])
            return await db.store.latest_global_position(tx)

    assert asyncio.run(use()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate-gen", "--adapter", "oracle", "--output", "x"], "invalid choice"),
        (
            ["migrate-gen", "--adapter", "sqlite", "--output", "x", "--events-table", "a-b"],
            "events-table",
        ),
        (["events", "--url", "sqlite:///x.db", "--limit", "-3"], "0 or more"),
        (["migrate"], "no database URL"),
        (["migrate", "--url", "redis://localhost"], "unsupported database URL scheme"),
        (["projections"], "ACTION"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = _run(*args, env={"PUPSOURCING_URL": ""})
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_a_password_in_a_url_is_never_printed() -> None:
    result = _run("migrate", env={"PUPSOURCING_URL": "postgresql://app:hunter2@127.0.0.1:9/db"})
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert result.stderr.count("\n") == 1


@pytest.fixture
def demo_db(tmp_path: Path) -> str:
    assert main(["demo", "--file", str(tmp_path / "demo.db")]) == 0
    return f"sqlite:///{tmp_path / 'demo.db'}"


def test_migrate_and_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert main(["migrate", "--url", url]) == 0
    assert "migrated sqlite database" in capsys.readouterr().out
    assert main(["migrate", "--url", url]) == 0  # idempotent
    assert main(["events", "--url", url]) == 0
    assert capsys.readouterr().out.endswith("s\n")  # only the migrate line before
    assert main(["events", "--url", url]) == 0
    assert capsys.readouterr().out == ""


def test_events_lines_json_from_and_limit(demo_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["events", "--url", demo_db]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    assert lines[0].split()[0] == "1"
    assert "Banking/Account/acc-alice v1  AccountOpened" in lines[0]
    assert '{"owner": "Alice"}' in lines[0]

    assert main(["events", "--url", demo_db, "--from", "3", "--limit", "2", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["global_position"] for r in records] == [3, 4]
    assert records[0]["event_type"] == "MoneyWithdrawn"
    assert json.loads(records[0]["payload"]) == {"amount": 20000}
    assert uuid.UUID(records[0]["event_id"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_events_show_progress_on_a_terminal_only_when_the_events_go_elsewhere(
    demo_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["events", "--url", demo_db, "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 7
    # Shown, then wiped: the line names how far it got and the head it was heading for.
    assert "7 events, at position 7 of 7" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[K")

    # Events on the terminal too: no progress line to mix with them.
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    monkeypatch.setattr(sys, "stdout", _Terminal())
    assert main(["events", "--url", demo_db]) == 0
    assert quiet.getvalue() == ""


def test_events_follow_tails_new_events_until_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tail.db'}"
    assert main(["migrate", "--url", url]) == 0
    follower = subprocess.Popen(
        [sys.executable, "-m", "pupsourcing_async.cli", "events", "--url", url, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)

        async def append_two() -> None:
            async with pupsourcing_async.connect(url) as db:
                for _ in range(2):
                    async with db.transaction() as tx:
                        await db.store.append(tx, es.Any(), [make_event()])

        asyncio.run(append_two())
        assert follower.stdout is not None
        first = follower.stdout.readline()
        second = follower.stdout.readline()
        assert "MoneyDeposited" in first
        assert "MoneyDeposited" in second
    finally:
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
    assert follower.returncode == 0, err


def test_projections_status_and_reset(
    demo_db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    assert main(["projections", "status", "--url", demo_db]) == 0
    out = capsys.readouterr().out
    assert "head position: 7" in out
    assert re.search(r"account_balances\s+7\s+0\s+\d{4}-", out)

    # Not on a terminal: refuse without --yes.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["projections", "reset", "account_balances", "--url", demo_db]) == 2
    assert "--yes" in capsys.readouterr().err

    # On a terminal: ask, and respect a no.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["projections", "reset", "account_balances", "--url", demo_db]) == 1
    assert "not reset" in capsys.readouterr().out
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["projections", "reset", "account_balances", "--url", demo_db]) == 0
    assert "removed 1 checkpoint" in capsys.readouterr().out

    assert main(["projections", "status", "--url", demo_db]) == 0
    assert "no projection has a checkpoint" in capsys.readouterr().out
    # A name without a checkpoint (gone, or mistyped) is a failure a script can see.
    assert main(["projections", "reset", "account_balances", "--url", demo_db, "--yes"]) == 1
    err = capsys.readouterr().err
    assert err == "error: projection account_balances has no checkpoint: nothing to reset\n"


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["migrate-gen"],
        ["migrate"],
        ["events"],
        ["projections"],
        ["projections", "status"],
        ["projections", "reset"],
        ["projections", "parked"],
        ["projections", "retry"],
        ["worker"],
        ["eventmap-gen"],
        ["eventmap-check"],
    ],
)
def test_every_subcommand_has_help_with_examples(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"

    async def fill() -> None:
        async with pupsourcing_async.connect(url) as db:
            await db.migrate()
            async with db.transaction() as tx:
                await db.store.append(tx, es.Any(), [make_event() for _ in range(3000)])

    asyncio.run(fill())  # ~300 KB of output, more than a pipe holds
    events = subprocess.Popen(
        [sys.executable, "-m", "pupsourcing_async.cli", "events", "--url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert events.stdout is not None
    events.stdout.readline()
    events.stdout.close()  # as `| head -1` would
    assert events.wait(timeout=30) == 0
    assert events.stderr is not None
    assert events.stderr.read() == b""


# --- snapshots ------------------------------------------------------------------------------


@pytest.mark.parametrize("adapter", ["postgres", "mysql", "sqlite"])
def test_migrate_gen_writes_the_snapshots_table(tmp_path: Path, adapter: str) -> None:
    result = _run(
        "migrate-gen", "--adapter", adapter, "--output", str(tmp_path), "--events-table", "bill"
    )
    assert result.returncode == 0, result.stderr
    [written] = list(tmp_path.iterdir())
    assert "CREATE TABLE IF NOT EXISTS bill_snapshots" in written.read_text()


@pytest.mark.parametrize("adapter", ["postgres", "mysql", "sqlite"])
def test_migrate_gen_writes_the_parked_events_table(tmp_path: Path, adapter: str) -> None:
    result = _run(
        "migrate-gen", "--adapter", adapter, "--output", str(tmp_path), "--events-table", "bill"
    )
    assert result.returncode == 0, result.stderr
    [written] = list(tmp_path.iterdir())
    sql = written.read_text()
    assert "CREATE TABLE IF NOT EXISTS bill_parked" in sql
    assert "PRIMARY KEY (checkpoint, global_position)" in sql


def _table_options(config: pupsourcing_async.StoreConfig) -> list[str]:
    return [
        "--events-table",
        config.events_table,
        "--aggregate-heads-table",
        config.aggregate_heads_table,
        "--checkpoints-table",
        config.checkpoints_table,
    ]


async def _fill_snapshots(url: str, config: pupsourcing_async.StoreConfig) -> None:
    from pupsourcing_async.snapshots import Snapshot

    async with pupsourcing_async.connect(url, store_config=config) as db:
        await db.migrate()
        async with db.transaction() as tx:
            for name in ("a", "b", "c", "d"):
                await db.store.append(tx, es.NoStream(), [make_event(name)])
            for name, kind, schema, size in (
                ("a", "AccountState", 1, 100),
                ("b", "AccountState", 1, 2000),
                ("c", "AccountState", 2, 10),
                ("d", "LedgerState", 1, 5),
            ):
                snapshot = Snapshot("Banking", "Account", name, 1, kind, schema, b"x" * size)
                await db.store.snapshots.save(tx, snapshot)


def _drop(url: str, config: pupsourcing_async.StoreConfig) -> None:
    from .conftest import drop_tables

    async def drop() -> None:
        async with pupsourcing_async.connect(url, store_config=config) as db:
            if db.dialect != "sqlite":
                await drop_tables(db, [config.events_table])

    asyncio.run(drop())


def test_snapshots_status_and_purge(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pupsourcing_async.testing import unique_store_config

    config = unique_store_config()
    options = ["--url", url, *_table_options(config)]
    table = f"{config.events_table}_snapshots"
    asyncio.run(_fill_snapshots(url, config))
    try:
        assert main(["snapshots", "status", *options]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == [
            "AGGREGATE",
            "SNAPSHOT",
            "TYPE",
            "SCHEMA",
            "COUNT",
            "SIZE",
            "LARGEST",
            "OLDEST",
            "NEWEST",
        ]
        assert re.match(
            r"Banking/Account\s+AccountState\s+v1\s+2\s+2\.1 KiB\s+2\.0 KiB\s+\d{4}-", lines[1]
        )
        assert re.match(r"Banking/Account\s+AccountState\s+v2\s+1\s+10 B\s+10 B\s", lines[2])
        assert re.match(r"Banking/Account\s+LedgerState\s+v1\s+1\s+5 B\s+5 B\s", lines[3])
        assert lines[4] == f"4 snapshot(s), 2.1 KiB in {table}"

        # Not on a terminal: refuse without --yes.
        monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
        assert main(["snapshots", "purge", "--schema-version", "1", *options]) == 2
        assert "confirm with --yes" in capsys.readouterr().err
        # On a terminal: ask, and respect a no.
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        prompts: list[str] = []

        def answer_no(prompt: str) -> str:
            prompts.append(prompt)
            return "n"

        monkeypatch.setattr("builtins.input", answer_no)
        assert main(["snapshots", "purge", "--schema-version", "1", *options]) == 1
        assert "not purged" in capsys.readouterr().out
        assert "Purge 3 snapshot(s), snapshots with schema_version=1" in prompts[0]
        monkeypatch.setattr("builtins.input", lambda prompt: "y")
        purge = ["snapshots", "purge", "--snapshot-type", "AccountState", "--schema-version", "1"]
        assert main([*purge, *options]) == 0
        assert f"purged 2 snapshot(s) from {table}" in capsys.readouterr().out
        assert main([*purge, *options, "--yes"]) == 0
        assert "nothing to purge" in capsys.readouterr().out

        assert main(["snapshots", "status", *options]) == 0
        out = capsys.readouterr().out
        assert "AccountState  v1" not in out
        assert "2 snapshot(s), 15 B" in out
        assert main(["snapshots", "purge", "--all", "--yes", *options]) == 0
        assert "purged 2 snapshot(s)" in capsys.readouterr().out
        assert main(["snapshots", "status", *options]) == 0
        assert capsys.readouterr().out == f"no snapshots in {table}\n"
    finally:
        _drop(url, config)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["snapshots"], "ACTION"),
        (["snapshots", "purge", "--url", "sqlite:///x.db"], "say which snapshots to purge"),
        (
            ["snapshots", "purge", "--url", "sqlite:///x.db", "--all", "--schema-version", "2"],
            "--all",
        ),
        (["snapshots", "purge", "--url", "sqlite:///x.db", "--schema-version", "0"], "between 1"),
        (
            ["snapshots", "purge", "--url", "sqlite:///x.db", "--schema-version", "v2"],
            "whole number",
        ),
        (["snapshots", "purge", "--url", "sqlite:///x.db", "--aggregate-type", ""], "not be empty"),
        (["snapshots", "status"], "no database URL"),
    ],
)
def test_snapshots_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = _run(*args, env={"PUPSOURCING_URL": ""}, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.splitlines()[-1]
    assert result.stdout == ""


def test_snapshots_status_on_a_database_not_migrated_exits_1(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    result = _run("snapshots", "status", "--url", url)
    assert result.returncode == 1
    assert "events_snapshots" in result.stderr
    assert "migrate" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "command", [["snapshots"], ["snapshots", "status"], ["snapshots", "purge"]]
)
def test_the_snapshots_commands_have_help_with_examples(command: list[str]) -> None:
    result = _run(*command, "--help")
    assert result.returncode == 0
    assert "example" in result.stdout
