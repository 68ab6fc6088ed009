"""The ``snapshots status`` and ``snapshots purge`` subcommands of ``pupsourcing-async``.

Exit codes as for every subcommand: 0 success, 1 runtime failure (or a purge not
confirmed), 2 usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime

from .database import Connecting, connect
from .snapshots import SnapshotSummary, check_schema_version, snapshots_table
from .store import StoreConfig

__all__ = ["register"]

Handler = Callable[[argparse.Namespace], Awaitable[int]]


class _UsageError(Exception):
    """Bad input found after parsing: exit code 2."""


def _usage_errors(handler: Handler) -> Handler:
    # Reported here rather than by the main command's own usage error: run as
    # ``python -m pupsourcing_async.cli`` that module is ``__main__``, and a class
    # imported from it here would be another class than the one it catches.
    @functools.wraps(handler)
    async def run(args: argparse.Namespace) -> int:
        try:
            return await handler(args)
        except _UsageError as err:
            print(f"pupsourcing-async: error: {err}", file=sys.stderr)
            return 2

    return run


def _store_config(args: argparse.Namespace) -> StoreConfig:
    try:
        return StoreConfig(
            events_table=args.events_table,
            aggregate_heads_table=args.aggregate_heads_table,
            checkpoints_table=args.checkpoints_table,
        )
    except ValueError as err:
        raise _UsageError(str(err)) from None


def _open(args: argparse.Namespace) -> Connecting:
    if not args.url:
        raise _UsageError("no database URL: pass --url or set PUPSOURCING_URL")
    return connect(args.url, store_config=_store_config(args), min_size=1, max_size=2)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``snapshots status|purge`` to the ``pupsourcing-async`` parser."""
    from .cli import _add_url_option, _command

    snapshots = _command(
        commands,
        "snapshots",
        help="look at or purge aggregate snapshots",
        description=(
            "Look at the aggregate snapshots kept in <events-table>_snapshots, or purge "
            "some. A snapshot only speeds up loading: an aggregate without one replays "
            "its events."
        ),
        examples=(
            "  pupsourcing-async snapshots status --url $DB\n"
            "  pupsourcing-async snapshots purge --url $DB --snapshot-type OrderState "
            "--schema-version 1 --yes"
        ),
    )
    actions = snapshots.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = _command(
        actions,
        "status",
        help="count the snapshots by aggregate type, snapshot type and schema version",
        description=(
            "Count the snapshots per bounded context and aggregate type, snapshot type and "
            "schema version, with their payloads' size and when the oldest and newest "
            "were written."
        ),
        examples="  pupsourcing-async snapshots status --url sqlite:///app.db",
    )
    _add_url_option(status)
    status.set_defaults(handler=_usage_errors(_status))

    purge = _command(
        actions,
        "purge",
        help="delete snapshots by type or schema version, or all of them",
        description=(
            "Delete the snapshots that match every filter given, or all with --all. "
            "Nothing is lost: their aggregates replay their events until a save takes a "
            "new snapshot. Purge the schema versions no running release reads."
        ),
        examples=(
            "  pupsourcing-async snapshots purge --url $DB --schema-version 1 --yes\n"
            "  pupsourcing-async snapshots purge --url $DB --aggregate-type Order "
            "--snapshot-type OrderState\n"
            "  pupsourcing-async snapshots purge --url $DB --all --yes"
        ),
    )
    purge.add_argument("--bounded-context", metavar="NAME", help="only this bounded context")
    purge.add_argument("--aggregate-type", metavar="TYPE", help="only this aggregate type")
    purge.add_argument("--snapshot-type", metavar="TYPE", help="only this snapshot type")
    purge.add_argument(
        "--schema-version", type=_schema_version, metavar="N", help="only this schema version"
    )
    purge.add_argument("--all", action="store_true", help="every snapshot")
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_url_option(purge)
    purge.set_defaults(handler=_usage_errors(_purge))


def _schema_version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    try:
        return check_schema_version(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _table(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


async def _status(args: argparse.Namespace) -> int:
    table = snapshots_table(_store_config(args))
    async with _open(args) as db, db.transaction() as tx:
        summary = await db.store.snapshots.summary(tx)
    if not summary:
        print(f"no snapshots in {table}")
        return 0
    rows: list[tuple[str, ...]] = [
        ("AGGREGATE", "SNAPSHOT TYPE", "SCHEMA", "COUNT", "SIZE", "LARGEST", "OLDEST", "NEWEST")
    ]
    for s in summary:
        rows.append(
            (
                f"{s.bounded_context}/{s.aggregate_type}",
                s.snapshot_type,
                f"v{s.schema_version}",
                str(s.count),
                _size(s.total_bytes),
                _size(s.largest_bytes),
                _when(s.oldest),
                _when(s.newest),
            )
        )
    for line in _table(rows, right={3, 4, 5}):
        print(line)
    count = sum(s.count for s in summary)
    total = sum(s.total_bytes for s in summary)
    print(f"{count} snapshot(s), {_size(total)} in {table}")
    return 0


def _matches(s: SnapshotSummary, args: argparse.Namespace) -> bool:
    return all(
        wanted is None or wanted == have
        for wanted, have in (
            (args.bounded_context, s.bounded_context),
            (args.aggregate_type, s.aggregate_type),
            (args.snapshot_type, s.snapshot_type),
            (args.schema_version, s.schema_version),
        )
    )


async def _purge(args: argparse.Namespace) -> int:
    filters = {
        "bounded_context": args.bounded_context,
        "aggregate_type": args.aggregate_type,
        "snapshot_type": args.snapshot_type,
        "schema_version": args.schema_version,
    }
    given = {name: value for name, value in filters.items() if value is not None}
    if args.all and given:
        raise _UsageError("--all purges every snapshot: give it without filters")
    if not args.all and not given:
        raise _UsageError(
            "say which snapshots to purge: --bounded-context, --aggregate-type, "
            "--snapshot-type, --schema-version, or --all"
        )
    for name, value in given.items():
        if isinstance(value, str) and not value:
            raise _UsageError(f"--{name.replace('_', '-')} must not be empty")
    what = (
        "every snapshot"
        if args.all
        else "snapshots with " + ", ".join(f"{name}={value}" for name, value in given.items())
    )
    table = snapshots_table(_store_config(args))
    async with _open(args) as db:
        async with db.transaction() as tx:
            summary = await db.store.snapshots.summary(tx)
        count = sum(s.count for s in summary if _matches(s, args))
        if not count:
            print(f"no snapshot in {table} matches: nothing to purge")
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise _UsageError(
                    f"purging {what} deletes {count} snapshot(s); confirm with --yes when "
                    "not running on a terminal"
                )
            answer = await asyncio.to_thread(
                input,
                f"Purge {count} snapshot(s), {what}, from {table}? Their aggregates will "
                "replay their events until new snapshots are taken. [y/N] ",
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not purged")
                return 1
        async with db.transaction() as tx:
            removed = await db.store.snapshots.purge(tx, **given)
    print(f"purged {removed} snapshot(s) from {table} ({what})")
    return 0
