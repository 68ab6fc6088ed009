"""The command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pupsourcing_async.cli import main


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
    assert "bank-account" in result.stdout or "account" in result.stdout
    assert "example:" in result.stdout
