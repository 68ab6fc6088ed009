"""The ``examples/eventmap_codegen`` example runs, and its generated code is current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pupsourcing_async.eventmap.generator import generate

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "eventmap_codegen"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=90
    )


def test_the_example_runs_on_sqlite_by_default() -> None:
    result = run("-m", "examples.eventmap_codegen")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "stored as OrderCreated v1, loaded as v2" in out
    assert "status created, total 15.00 EUR" in out
    for step, version in (("created", 1), ("paid", 2), ("shipped", 3), ("delivered", 4)):
        assert f"{step:<9} -> version {version}" in out
    assert "second payment refused: expected Exact(1), found version 2" in out
    assert "1. OrderCreated v2    2 lines in EUR, to Amsterdam" in out
    assert "4. OrderDelivered v1  signed by J. Smit" in out
    assert '"unit_price":"24.90"' in out
    assert "every stored version can be read as the newest" in out


def test_the_examples_generated_code_is_up_to_date() -> None:
    generation = generate(EXAMPLE / "domain" / "events", EXAMPLE / "eventmap")
    assert generation.discovery.package == "examples.eventmap_codegen.domain.events"
    assert [str(file.path) for file in generation.changed] == []
    assert generation.unfilled_stubs == ()


def test_the_examples_generated_tests_and_types_pass() -> None:
    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "eventmap"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = run("-m", "mypy", "--strict", str(EXAMPLE))
    assert result.returncode == 0, result.stdout + result.stderr
