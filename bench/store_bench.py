"""The PostgreSQL part of ``python -m bench``, under its former command line.

Run it against a PostgreSQL database it may create and drop tables in::

    python -m bench.store_bench --url postgresql://postgres@127.0.0.1:5432/test [--rounds 5]
    python -m bench.store_bench --url ... --quick        # a few seconds, for smoke runs

It takes ``--rounds``, ``--quick``, ``--expected any|exact`` and ``--only`` as
``python -m bench`` does (see :mod:`bench.cli` and :mod:`bench.postgres` for what runs).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .cli import main as bench_main

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the PostgreSQL benchmark on ``--url``; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_bench",
        description="Compare pupsourcing_async on PostgreSQL with hand-written asyncpg and "
        "eventsourcing (the same as python -m bench --db postgres).",
        add_help=True,
    )
    parser.add_argument("--url", required=True, help="postgresql://user@host:port/db")
    known, rest = parser.parse_known_args(argv)
    return bench_main(
        ["--db", "postgres", "--postgres-url", known.url, *rest],
        prog="python -m bench.store_bench",
    )


if __name__ == "__main__":
    sys.exit(main())
