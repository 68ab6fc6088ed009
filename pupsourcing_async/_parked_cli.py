"""``pupsourcing-async projections parked|retry``: the events projections parked."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

from ._projection_spec import load_projections
from .projection.parking import ParkedEvent

__all__ = ["register"]


def register(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    command: Callable[..., argparse.ArgumentParser],
    add_url_option: Callable[[argparse.ArgumentParser], None],
    open_database: Callable[[argparse.Namespace], Any],
    usage_error: type[Exception],
) -> None:
    """Add ``projections parked`` and ``projections retry`` to the command line, with its
    own helpers (its subcommand maker, ``--url`` and table options, opening the database,
    and the error that exits 2)."""
    parked = command(
        actions,
        "parked",
        help="list the events projections parked after failing on them",
        description=(
            "List the events that projections running with OnFailure.PARK stepped over: "
            "checkpoint, position, event type, attempts, when, and the handler's error."
        ),
        examples=(
            "  pupsourcing-async projections parked --url $DB\n"
            "  pupsourcing-async projections parked balances --url $DB --json | jq '.[].error'"
        ),
    )
    parked.add_argument("name", nargs="?", help="only this projection's (all its partitions)")
    parked.add_argument("--json", action="store_true", help="print a JSON array")
    add_url_option(parked)
    parked.set_defaults(handler=functools.partial(_parked, open_database=open_database))

    retry = command(
        actions,
        "retry",
        help="run a projection's parked events through it again",
        description=(
            "Run the parked events of projection NAME through it again, oldest first, each "
            "in a transaction of its own that also drops its record; one that fails again "
            "stays parked with its attempts counted. --projection names the projection's "
            "code as MODULE:ATTR (a projection, a list of them, or a callable returning "
            "either), as for `worker`. Exit code 1 when some stay parked."
        ),
        examples=(
            "  pupsourcing-async projections retry balances --projection app.read_models:ALL "
            "--url $DB"
        ),
    )
    retry.add_argument("name", help="the projection's name")
    retry.add_argument(
        "--projection",
        required=True,
        metavar="MODULE:ATTR",
        help="where the projection's code is",
    )
    add_url_option(retry)
    retry.set_defaults(
        handler=functools.partial(_retry, open_database=open_database, usage_error=usage_error)
    )


def _table(parked: list[ParkedEvent]) -> list[str]:
    rows = [("CHECKPOINT", "POSITION", "EVENT TYPE", "ATTEMPTS", "PARKED AT", "EVENT ID", "ERROR")]
    rows += [
        (
            p.checkpoint,
            str(p.global_position),
            p.event_type,
            str(p.attempts),
            f"{p.parked_at:%Y-%m-%d %H:%M:%S}",
            str(p.event_id),
            p.error,
        )
        for p in parked
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    right = (False, True, False, True, False, False)
    return [
        "  ".join(
            [
                f"{cell:>{width}}" if flush else f"{cell:<{width}}"
                for cell, width, flush in zip(row[:6], widths, right, strict=True)
            ]
            + [row[6]]
        )
        for row in rows
    ]


async def _parked(args: argparse.Namespace, *, open_database: Callable[..., Any]) -> int:
    async with open_database(args) as db:
        parked: list[ParkedEvent] = await db.parked_events(args.name)
    if args.json:
        print(json.dumps([p.as_dict() for p in parked], ensure_ascii=False))
        return 0
    if not parked:
        print("no parked events" + (f" of projection {args.name}" if args.name else ""))
        return 0
    for line in _table(parked):
        print(line)
    return 0


async def _retry(
    args: argparse.Namespace, *, open_database: Callable[..., Any], usage_error: type[Exception]
) -> int:
    try:
        projections = await load_projections(args.projection)
    except ValueError as err:
        raise usage_error(str(err)) from None
    chosen = [p for p in projections if p.name == args.name]
    if not chosen:
        names = ", ".join(p.name for p in projections)
        raise usage_error(f"{args.projection} has no projection named {args.name} (it has {names})")
    async with open_database(args) as db:
        before = len(await db.parked_events(args.name))
        handled: int = await db.processor().retry_parked(chosen[0])
        left = len(await db.parked_events(args.name))
    print(
        f"retried {before} parked event(s) of projection {args.name}: {handled} handled, "
        f"{left} still parked"
    )
    if left:
        print(
            f"error: {left} parked event(s) of {args.name} failed again; see "
            "`pupsourcing-async projections parked`",
            file=sys.stderr,
        )
        return 1
    return 0
