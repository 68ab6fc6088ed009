"""``python -m examples.integration_testing [--url URL]``: run the example's tests.

The same as ``pytest examples/integration_testing``; ``--url`` sets
``PUPSOURCING_TEST_URL``, so the tests run against that database instead of SQLite.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tests in this directory; pytest's exit code."""
    cli = argparse.ArgumentParser(
        prog="python -m examples.integration_testing",
        description="Run the example's tests of its own projections.",
    )
    cli.add_argument("--url", help="database for the tests (default: a SQLite file per test)")
    args = cli.parse_args(argv)
    if args.url:
        os.environ["PUPSOURCING_TEST_URL"] = args.url
    return int(pytest.main([str(HERE), "-v", "-p", "no:cacheprovider"]))


if __name__ == "__main__":
    raise SystemExit(main())
