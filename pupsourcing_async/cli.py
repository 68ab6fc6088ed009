"""The ``pupsourcing-async`` command.

Exit codes: 0 success, 1 runtime failure, 2 usage error. Failures print one line to
stderr; a password in a URL is never printed. Database URLs come from ``--url`` or the
``PUPSOURCING_URL`` environment variable.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from . import __version__, es
from ._holes import hole_above
from ._parked_cli import register as register_parked
from ._publish_cli import register as register_publish
from ._worker_cli import register as register_worker
from .adapters._shared import checkpoint_names
from .database import connect
from .errors import PupsourcingError, SchemaError, UnsupportedURLError
from .eventmap.cli import register as register_eventmap
from .migrations import DIALECTS, write_migration
from .snapshots_cli import register as register_snapshots
from .store import StoreConfig, check_identifier

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """Bad command-line input found after parsing: exit code 2."""


# --- shared options ----------------------------------------------------------------------


def _identifier(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        try:
            return check_identifier(text, what)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return check


def _add_table_options(parser: argparse.ArgumentParser) -> None:
    defaults = StoreConfig()
    group = parser.add_argument_group("table names")
    group.add_argument(
        "--events-table",
        default=defaults.events_table,
        type=_identifier("--events-table"),
        help="the events table (default: %(default)s)",
    )
    group.add_argument(
        "--aggregate-heads-table",
        default=defaults.aggregate_heads_table,
        type=_identifier("--aggregate-heads-table"),
        help="the aggregate heads table (default: %(default)s)",
    )
    group.add_argument(
        "--checkpoints-table",
        default=defaults.checkpoints_table,
        type=_identifier("--checkpoints-table"),
        help="the projection checkpoints table (default: %(default)s)",
    )


def _add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("PUPSOURCING_URL"),
        help="the database URL (default: $PUPSOURCING_URL)",
    )
    _add_table_options(parser)


def _store_config(args: argparse.Namespace) -> StoreConfig:
    try:
        return StoreConfig(
            events_table=args.events_table,
            aggregate_heads_table=args.aggregate_heads_table,
            checkpoints_table=args.checkpoints_table,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None


def _open(args: argparse.Namespace) -> Any:
    if not args.url:
        raise UsageError("no database URL: pass --url or set PUPSOURCING_URL")
    return connect(args.url, store_config=_store_config(args), min_size=1, max_size=2)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


class _Progress:
    """A one-line progress report on stderr, shown only on a terminal (and, with
    ``quiet_on_tty_output``, only when the command's own output goes elsewhere)."""

    def __init__(self, *, quiet_on_tty_output: bool = False) -> None:
        self._stream = sys.stderr
        self._enabled = sys.stderr.isatty() and not (quiet_on_tty_output and sys.stdout.isatty())
        self._last = 0.0
        self._shown = False

    def due(self) -> bool:
        """Whether the next ``update`` would show, so its text is worth computing."""
        return self._enabled and time.monotonic() - self._last >= 0.2

    def update(self, text: str, *, force: bool = False) -> None:
        if self._enabled and (force or self.due()):
            self._last = time.monotonic()
            self._shown = True
            self._stream.write(f"\r\x1b[K{text}")
            self._stream.flush()

    def done(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


# --- demo ----------------------------------------------------------------------------------


async def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    await run_demo(args.file, sys.stdout)
    return 0


# --- migrations ----------------------------------------------------------------------------


async def _migrate_gen(args: argparse.Namespace) -> int:
    path = write_migration(
        args.adapter, args.output, filename=args.filename, config=_store_config(args)
    )
    print(f"wrote {path}")
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    config = _store_config(args)
    async with _open(args) as db:
        progress = _Progress()
        progress.update(f"migrating {db.dialect} database {db.location}...", force=True)
        started = time.monotonic()
        await db.migrate()
        progress.done()
        print(
            f"migrated {db.dialect} database {db.location} "
            f"({config.events_table}, {config.aggregate_heads_table}, "
            f"{config.checkpoints_table}) in {time.monotonic() - started:.2f}s"
        )
    return 0


# --- events --------------------------------------------------------------------------------


def _payload_text(payload: bytes) -> str | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


def format_event(event: es.PersistedEvent, *, width: int = 80) -> str:
    """One readable line for an event: position, time, aggregate, type, payload."""
    text = _payload_text(event.payload)
    if text is None:
        body = f"<{len(event.payload)} bytes>"
    else:
        body = text if len(text) <= width else text[: width - 1] + "…"
    return (
        f"{event.global_position:>8}  {event.created_at:%Y-%m-%d %H:%M:%S}  "
        f"{event.bounded_context}/{event.aggregate_type}/{event.aggregate_id} "
        f"v{event.aggregate_version}  {event.event_type}"
        f"{'' if event.event_version == 1 else f' (v{event.event_version})'}  {body}"
    )


def event_json(event: es.PersistedEvent) -> str:
    """An event as one line of JSON."""
    text = _payload_text(event.payload)
    record: dict[str, Any] = {
        "global_position": event.global_position,
        "bounded_context": event.bounded_context,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_version": event.aggregate_version,
        "event_id": str(event.event_id),
        "event_type": event.event_type,
        "event_version": event.event_version,
        "created_at": event.created_at.isoformat(),
        "trace_id": event.trace_id,
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "metadata": None if event.metadata is None else json.loads(event.metadata),
    }
    if text is None:
        record["payload_base64"] = base64.b64encode(event.payload).decode("ascii")
    else:
        record["payload"] = text
    return json.dumps(record, ensure_ascii=False)


async def _events(args: argparse.Namespace) -> int:
    emit = event_json if args.json else format_event
    shown = 0
    async with _open(args) as db:
        position = max(args.start - 1, 0)
        progress = _Progress(quiet_on_tty_output=True)
        async with db.backend.news() as news:
            while True:
                watch = news.watch()
                wanted = 500 if args.limit is None else min(500, args.limit - shown)
                if wanted <= 0:
                    break
                async with db.transaction() as tx:
                    batch = await db.store.read_events(tx, position, wanted)
                    # The head is only for the progress line: not asked when none shows.
                    show = bool(batch) and progress.due()
                    head = await db.store.latest_global_position(tx) if show else 0
                for event in batch:
                    print(emit(event))
                shown += len(batch)
                if batch:
                    position = batch[-1].global_position
                    if show:
                        progress.update(f"{shown} events, at position {position} of {head}")
                    continue
                if hole_above(db.store.pending_holes(), position):
                    await news.wait(watch, 0.05)
                    continue
                if not args.follow:
                    break
                sys.stdout.flush()
                await news.wait(watch, 1.0)
        progress.done()
    return 0


# --- projections ---------------------------------------------------------------------------


async def _parked_counts(db: Any) -> dict[str, int]:
    """Parked events per checkpoint; none where the table is missing (an older schema)."""
    try:
        async with db.transaction() as tx:
            summary = await db.store.parked.summary(tx)
    except SchemaError:
        return {}
    return {name: count for name, (count, _) in summary.items()}


async def _projections_status(args: argparse.Namespace) -> int:
    async with _open(args) as db:
        statuses = await db.projection_status()
        holes = db.store.pending_holes()
        async with db.transaction() as tx:
            head = await db.store.latest_global_position(tx)
        parked = await _parked_counts(db)
    if args.names:
        wanted = {
            c for name in args.names for c in checkpoint_names([s.name for s in statuses], name)
        }
        statuses = [s for s in statuses if s.name in wanted]
    if args.json:
        print(
            json.dumps(
                {
                    "head_position": head,
                    "projections": [
                        {
                            "name": s.name,
                            "position": s.position,
                            "lag": s.lag,
                            "updated_at": None
                            if s.updated_at is None
                            else s.updated_at.isoformat(),
                            "parked": parked.get(s.name, 0),
                        }
                        for s in statuses
                    ],
                    "pending_holes": [
                        {
                            "first": h.first_position,
                            "last": h.last_position,
                            "age_s": round(h.age, 3),
                        }
                        for h in holes
                    ],
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"head position: {head}")
    if not statuses:
        if args.names:
            print(f"no checkpoint of {', '.join(args.names)} yet")
        else:
            print("no projection has a checkpoint yet")
        return 0
    rows = [("PROJECTION", "POSITION", "LAG", "UPDATED", "PARKED")] + [
        (
            s.name,
            str(s.position),
            str(s.lag),
            "-" if s.updated_at is None else f"{s.updated_at:%Y-%m-%d %H:%M:%S}",
            str(parked.get(s.name, 0)),
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for name, position, lag, updated, count in rows:
        print(
            f"{name:<{widths[0]}}  {position:>{widths[1]}}  {lag:>{widths[2]}}  "
            f"{updated:<{widths[3]}}  {count:>{widths[4]}}"
        )
    if sum(parked.values()):
        print("parked events: see `pupsourcing-async projections parked`")
    for hole in holes:
        print(
            f"waiting on positions {hole.first_position}-{hole.last_position} "
            f"for {hole.age:.1f}s (an append in flight, or rolled back)"
        )
    return 0


async def _projections_reset(args: argparse.Namespace) -> int:
    async with _open(args) as db:
        names = checkpoint_names([s.name for s in await db.projection_status()], args.name)
        if not names:
            raise LookupError(f"projection {args.name} has no checkpoint: nothing to reset")
        if not args.yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    f"resetting {args.name} deletes {len(names)} checkpoint(s); "
                    "confirm with --yes when not running on a terminal"
                )
            answer = await asyncio.to_thread(
                input,
                f"Reset projection {args.name} ({', '.join(names)})? It will start over "
                "from the first event. [y/N] ",
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not reset")
                return 1
        removed = await db.reset_projection(args.name)
    print(
        f"reset projection {args.name}: removed {removed} checkpoint(s); clear its read "
        "model before it runs again"
    )
    return 0


# --- the parser ----------------------------------------------------------------------------


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    examples: str,
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        help=help,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="pupsourcing-async",
        description="Event sourcing on PostgreSQL, SQLite and MySQL/MariaDB.",
        epilog="Database URLs: postgresql://user:pw@host:5432/db, mysql://user:pw@host:3306/db, "
        "sqlite:///relative.db or sqlite:////absolute.db; --url defaults to $PUPSOURCING_URL.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = _command(
        commands,
        "demo",
        help="run the bank-account story on an embedded SQLite file",
        description=(
            "Open an account, deposit and withdraw as events, replay to the current balance "
            "and to an earlier date, and project every balance into a read model. Runs on a "
            "SQLite file in the working directory; run it again to continue the story."
        ),
        examples="  pupsourcing-async demo\n  pupsourcing-async demo --file bank.db",
    )
    demo.add_argument(
        "--file",
        default="pupsourcing_demo.db",
        help="the SQLite file to use (default: %(default)s)",
    )
    demo.set_defaults(handler=_demo)

    migrate_gen = _command(
        commands,
        "migrate-gen",
        help="write the event store's schema as a SQL migration file",
        description=(
            "Write one timestamped SQL file with the tables and indexes the event store "
            "needs, for your own migration tool. Nothing touches a database."
        ),
        examples=(
            "  pupsourcing-async migrate-gen --adapter postgres --output db/migrations\n"
            "  pupsourcing-async migrate-gen --adapter mysql --output migrations "
            "--filename 001_events.sql --events-table billing_events"
        ),
    )
    migrate_gen.add_argument("--adapter", required=True, choices=DIALECTS, help="the database")
    migrate_gen.add_argument("--output", required=True, help="the directory to write to")
    migrate_gen.add_argument(
        "--filename", help="the file name (default: <timestamp>_init_event_sourcing.sql)"
    )
    _add_table_options(migrate_gen)
    migrate_gen.set_defaults(handler=_migrate_gen)

    migrate = _command(
        commands,
        "migrate",
        help="create the event store's tables in a database",
        description="Create the tables and indexes if they do not exist. Idempotent.",
        examples=(
            "  pupsourcing-async migrate --url sqlite:///app.db\n"
            "  PUPSOURCING_URL=postgresql://app@db/app pupsourcing-async migrate"
        ),
    )
    _add_url_option(migrate)
    migrate.set_defaults(handler=_migrate)

    events = _command(
        commands,
        "events",
        help="print the global log, or tail it",
        description=(
            "Print events in log order, one line each (or one JSON object each). Like every "
            "reader here it is gap-safe: it never prints past an append still in flight."
        ),
        examples=(
            "  pupsourcing-async events --url sqlite:///app.db --limit 20\n"
            "  pupsourcing-async events --url $DB --from 1000 --json | jq .event_type\n"
            "  pupsourcing-async events --url $DB --follow"
        ),
    )
    _add_url_option(events)
    events.add_argument(
        "--from",
        dest="start",
        type=_non_negative,
        default=1,
        metavar="POS",
        help="the first global position to print (default: 1)",
    )
    events.add_argument("--limit", type=_non_negative, metavar="N", help="print at most N events")
    events.add_argument(
        "--follow", action="store_true", help="keep printing new events until interrupted"
    )
    events.add_argument("--json", action="store_true", help="print one JSON object per line")
    events.set_defaults(handler=_events)

    projections = _command(
        commands,
        "projections",
        help="look at or reset projection checkpoints, and their parked events",
        description=(
            "Look at projection checkpoints, reset one so it rebuilds, list the events "
            "projections parked, and retry them."
        ),
        examples=(
            "  pupsourcing-async projections status --url $DB\n"
            "  pupsourcing-async projections reset balances --url $DB --yes\n"
            "  pupsourcing-async projections parked --url $DB"
        ),
    )
    actions = projections.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = _command(
        actions,
        "status",
        help="every checkpoint with its lag behind the head of the log",
        description=(
            "List every projection checkpoint (or those of the named projections, with "
            "their partitions) with its position, lag and parked events."
        ),
        examples=(
            "  pupsourcing-async projections status --url sqlite:///app.db\n"
            "  pupsourcing-async projections status balances --url $DB --json"
        ),
    )
    status.add_argument("names", nargs="*", metavar="NAME", help="only these projections")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    _add_url_option(status)
    status.set_defaults(handler=_projections_status)
    reset = _command(
        actions,
        "reset",
        help="delete a projection's checkpoints so its next run starts over",
        description=(
            "Delete the checkpoints of a projection (all its partitions) and the events it "
            "parked. Stop its workers first and clear its read model: every event will be "
            "handled again. A name without a checkpoint is an error (exit code 1)."
        ),
        examples="  pupsourcing-async projections reset balances --url $DB --yes",
    )
    reset.add_argument("name", help="the projection's name")
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    _add_url_option(reset)
    reset.set_defaults(handler=_projections_reset)
    register_parked(
        actions,
        command=_command,
        add_url_option=_add_url_option,
        open_database=_open,
        usage_error=UsageError,
    )

    register_publish(
        commands,
        command=_command,
        add_url_option=_add_url_option,
        store_config=_store_config,
        usage_error=UsageError,
    )
    register_worker(
        commands,
        command=_command,
        add_url_option=_add_url_option,
        store_config=_store_config,
        usage_error=UsageError,
    )
    register_snapshots(commands)
    register_eventmap(commands)
    return parser


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Command = args.handler
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        if getattr(args, "follow", False):
            return 0  # the way to stop --follow
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`events | head`): what it wanted was printed. Point stdout
        # at nothing so the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, UnsupportedURLError) as err:
        print(f"{parser.prog}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (PupsourcingError, OSError, ValueError, ImportError, LookupError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
