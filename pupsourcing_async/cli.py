"""The ``pupsourcing-async`` command.

Exit codes: 0 success, 1 runtime failure, 2 usage error. Failures print one line to
stderr; a password in a URL is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .errors import PupsourcingError
from .eventmap.cli import register as register_eventmap

__all__ = ["main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    await run_demo(args.file, sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pupsourcing-async",
        description="Event sourcing on PostgreSQL, SQLite and MySQL/MariaDB.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the bank-account story on an embedded SQLite file",
        description=(
            "Open an account, deposit and withdraw as events, replay to the current balance "
            "and to an earlier date, and project every balance into a read model. Runs on a "
            "SQLite file in the working directory; run it again to continue the story."
        ),
        epilog="example: pupsourcing-async demo --file bank.db",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--file",
        default="pupsourcing_demo.db",
        help="the SQLite file to use (default: %(default)s)",
    )
    demo.set_defaults(handler=_demo)
    register_eventmap(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (PupsourcingError, OSError, ValueError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
