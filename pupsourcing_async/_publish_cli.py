"""``pupsourcing-async publish nats``: the JetStream publisher as a worker process."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

from ._async import shielded
from ._worker import configure_logging, run_worker, stop_on_signals, with_progress
from .database import connect
from .projection.config import ProcessorConfig
from .store import StoreConfig

__all__ = ["register"]

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "error": logging.ERROR}


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    command: Callable[..., argparse.ArgumentParser],
    add_url_option: Callable[[argparse.ArgumentParser], None],
    store_config: Callable[[argparse.Namespace], StoreConfig],
    usage_error: type[Exception],
) -> None:
    """Add ``publish nats`` to the command line, with the command line's own helpers
    (its subcommand maker, ``--url`` and table options, and the error that exits 2)."""
    publish = command(
        commands,
        "publish",
        help="publish the event log to a message broker, exactly once",
        description="Publish the event log to a message broker as a worker process.",
        examples="  pupsourcing-async publish nats --url $DB --stream EVENTS",
    )
    brokers = publish.add_subparsers(dest="broker", metavar="BROKER", required=True)
    nats = command(
        brokers,
        "nats",
        help="publish to a NATS JetStream stream",
        description=(
            "Publish every event to a JetStream stream, in order and exactly once, until "
            "interrupted (SIGINT or SIGTERM stop it cleanly, exit code 0). Runs as a "
            "projection: its own checkpoint and lease, so a second copy waits and takes "
            "over. Each event goes to <prefix>.<bounded_context>.<aggregate_type>."
            "<event_type>, its payload as the body and its envelope in headers. The stream "
            "is made if missing, and refused if its duplicate window is shorter than "
            "--duplicate-window. Progress (position, lag, events/s) is logged to stderr."
        ),
        examples=(
            "  pupsourcing-async publish nats --url postgresql://app@db/app --stream EVENTS\n"
            "  pupsourcing-async publish nats --url $DB --nats nats://nats:4222 "
            "--stream BILLING \\\n"
            "      --bounded-context Billing --subject-prefix billing --json"
        ),
    )
    add_url_option(nats)
    nats.add_argument(
        "--nats",
        default=os.environ.get("PUPSOURCING_NATS_URL", DEFAULT_NATS_URL),
        metavar="URL",
        help="the NATS server(s), comma-separated (default: $PUPSOURCING_NATS_URL or "
        f"{DEFAULT_NATS_URL})",
    )
    nats.add_argument("--stream", required=True, help="the JetStream stream's name")
    nats.add_argument(
        "--subject-prefix", default="events", help="the subjects' first token(s) (default: events)"
    )
    nats.add_argument(
        "--name",
        default="nats_publisher",
        help="the publisher's checkpoint name (default: nats_publisher)",
    )
    nats.add_argument(
        "--aggregate-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="publish only this aggregate type (repeat for more)",
    )
    nats.add_argument(
        "--bounded-context",
        action="append",
        default=[],
        metavar="CONTEXT",
        help="publish only this bounded context (repeat for more)",
    )
    nats.add_argument(
        "--batch-size", type=_count, default=500, help="events per batch (default: 500)"
    )
    nats.add_argument(
        "--duplicate-window",
        type=_positive,
        default=120.0,
        metavar="SECONDS",
        help="the duplicate window the stream must have: the longest stop after which "
        "nothing is published twice (default: 120)",
    )
    nats.add_argument(
        "--ack-timeout",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for a batch's acknowledgements before retrying (default: 10)",
    )
    nats.add_argument(
        "--max-age",
        type=_positive,
        metavar="SECONDS",
        help="how long a stream this makes keeps messages (default: for ever)",
    )
    nats.add_argument(
        "--replicas", type=_count, default=1, help="replicas of a stream this makes (default: 1)"
    )
    nats.add_argument(
        "--no-create-stream",
        dest="create_stream",
        action="store_false",
        help="refuse to start when the stream does not exist",
    )
    nats.add_argument(
        "--connect-timeout",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for NATS at start (default: 30); once connected it "
        "reconnects for as long as it runs",
    )
    nats.add_argument(
        "--progress-every",
        type=_positive,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress reports (default: 10)",
    )
    nats.add_argument("--json", action="store_true", help="log one JSON object per line")
    nats.add_argument("--log-level", choices=tuple(_LEVELS), default="info", help="(default: info)")
    nats.set_defaults(
        handler=functools.partial(_publish_nats, store_config=store_config, usage_error=usage_error)
    )


async def _publish_nats(
    args: argparse.Namespace,
    *,
    store_config: Callable[[argparse.Namespace], StoreConfig],
    usage_error: type[Exception],
) -> int:
    try:
        from . import nats as pnats
        from .nats._envelope import check_prefix
        from .nats._stream import StreamRequirements, needed_subjects
    except ModuleNotFoundError as err:
        if err.name != "nats":
            raise
        raise ImportError(
            "publishing to NATS needs nats-py: pip install 'pupsourcing-async[nats]'"
        ) from err
    try:
        check_prefix(args.subject_prefix)
        StreamRequirements(
            name=args.stream,
            subjects=needed_subjects(args.subject_prefix, None),
            duplicate_window=args.duplicate_window,
            max_age=args.max_age,
            replicas=args.replicas,
        )
        config = ProcessorConfig(batch_size=args.batch_size)
    except ValueError as err:
        raise usage_error(str(err)) from None
    if not args.url:
        raise usage_error("no database URL: pass --url or set PUPSOURCING_URL")
    # The lease and the wake-ups can hold a connection each for the whole run; the
    # progress reports need one more.
    opening = connect(
        args.url, store_config=with_progress(store_config(args)), min_size=1, max_size=4
    )
    handler = configure_logging(json_lines=args.json, level=_LEVELS[args.log_level])
    try:
        with stop_on_signals() as stop:
            try:
                return await _run(args, pnats, config, opening)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if stop.received is None or task is None:
                    raise
                # Stopped before the worker ran (waiting for NATS or the database).
                task.uncancel()
                return 0
    finally:
        logging.getLogger().removeHandler(handler)


async def _run(args: argparse.Namespace, pnats: Any, config: ProcessorConfig, opening: Any) -> int:
    async with opening as db:
        client = await pnats.connect(
            args.nats, name=f"pupsourcing-async {args.name}", timeout=args.connect_timeout
        )
        try:
            publisher = pnats.Publisher(
                client,
                args.stream,
                name=args.name,
                subject_prefix=args.subject_prefix,
                aggregate_types=args.aggregate_type,
                bounded_contexts=args.bounded_context,
                duplicate_window=args.duplicate_window,
                ack_timeout=args.ack_timeout,
                create_stream=args.create_stream,
                max_age=args.max_age,
                replicas=args.replicas,
            )
            async with publisher:
                code: int = await run_worker(
                    db,
                    [(publisher, config)],
                    progress_interval=args.progress_every,
                    handle_signals=False,
                )
                return code
        finally:
            await shielded(client.close())
