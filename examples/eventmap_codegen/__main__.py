"""``python -m examples.eventmap_codegen [--url URL]``: the order story on a database."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from .story import run


def main() -> int:
    """Run the story; SQLite in a temporary directory unless ``--url`` names a database."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.eventmap_codegen",
        description="Typed, versioned order events on an aggregate, through generated code.",
        epilog="example: python -m examples.eventmap_codegen --url postgresql://app@localhost/app",
    )
    parser.add_argument("--url", help="the database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, sys.stdout))
        return 0
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(f"sqlite:///{Path(directory) / 'orders.db'}", sys.stdout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
