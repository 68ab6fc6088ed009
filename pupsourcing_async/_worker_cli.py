"""``pupsourcing-async worker``: an application's projections as a worker process.

The options that shape how each projection runs are turned into ``ProcessorConfig``
keyword arguments in one place (:func:`processor_options`), and a projection's runs (one
per partition this worker takes) in another (:func:`runs`): a new option is one argument
and one line there.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ._projection_spec import load_projections
from ._worker import configure_logging, run_worker, stop_on_signals, with_progress
from .database import connect
from .log import get_logger
from .projection.base import Projection
from .projection.config import OnFailure, ProcessorConfig, RunMode
from .store import StoreConfig

__all__ = ["processor_options", "register", "runs"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "error": logging.ERROR}


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _key(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    command: Callable[..., argparse.ArgumentParser],
    add_url_option: Callable[[argparse.ArgumentParser], None],
    store_config: Callable[[argparse.Namespace], StoreConfig],
    usage_error: type[Exception],
) -> None:
    """Add ``worker`` to the command line, with the command line's own helpers (its
    subcommand maker, ``--url`` and table options, and the error that exits 2)."""
    worker = command(
        commands,
        "worker",
        help="run an application's projections until SIGINT or SIGTERM",
        description=(
            "Run the projections MODULE:ATTR names (a projection, a list of them, or a "
            "callable returning either) until SIGINT or SIGTERM, which stop it cleanly: "
            "the batch in flight commits or rolls back, leases are released, exit code 0. "
            "Progress (position, lag, events/s) is logged to stderr at least every 10 "
            "seconds while catching up; exit code 1 when a projection fails. Several "
            "workers may run the same command: leases keep each partition to one of them."
        ),
        examples=(
            "  pupsourcing-async worker app.read_models:ALL --url postgresql://app@db/app\n"
            "  pupsourcing-async worker app.read_models:make --url $DB --partitions 4 "
            "--on-failure park --json"
        ),
    )
    worker.add_argument("projections", metavar="MODULE:ATTR", help="the projections to run")
    add_url_option(worker)
    worker.add_argument(
        "--partitions",
        type=_count,
        default=1,
        metavar="N",
        help="split each projection into N partitions (checkpoints <name>_p<k>); this "
        "worker runs all of them unless --partition-key says which (default: 1)",
    )
    worker.add_argument(
        "--partition-key",
        type=_key,
        action="append",
        default=[],
        metavar="K",
        help="run only partition K of --partitions (repeat for more)",
    )
    worker.add_argument(
        "--batch-size", type=_count, default=100, help="events per batch (default: 100)"
    )
    worker.add_argument(
        "--on-failure",
        choices=[policy.value for policy in OnFailure],
        default=OnFailure.STOP.value,
        help="when a handler keeps failing on an event: stop the worker (exit 1), or "
        "park the event and go on (default: stop)",
    )
    worker.add_argument(
        "--handler-attempts",
        type=_count,
        default=1,
        metavar="N",
        help="tries of a failing event before --on-failure applies (default: 1)",
    )
    worker.add_argument(
        "--one-off",
        action="store_true",
        help="stop once every projection has caught up, instead of following the log",
    )
    worker.add_argument(
        "--progress-every",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress reports (default: 10)",
    )
    worker.add_argument("--json", action="store_true", help="log one JSON object per line")
    worker.add_argument(
        "--log-level", choices=tuple(_LEVELS), default="info", help="(default: info)"
    )
    worker.set_defaults(
        handler=functools.partial(_worker, store_config=store_config, usage_error=usage_error)
    )


def processor_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ProcessorConfig`` options every run of this worker shares."""
    return {
        "batch_size": args.batch_size,
        "run_mode": RunMode.ONE_OFF if args.one_off else RunMode.CONTINUOUS,
        "on_failure": OnFailure(args.on_failure),
        "handler_attempts": args.handler_attempts,
    }


def runs(
    projections: Sequence[Projection], args: argparse.Namespace
) -> list[tuple[Projection, ProcessorConfig]]:
    """Each ``(projection, config)`` this worker runs: one per partition it takes.

    Raises:
        ValueError: a partition key is not below ``--partitions``.
    """
    total = args.partitions
    keys = sorted(set(args.partition_key)) or list(range(total))
    for key in keys:
        if key >= total:
            raise ValueError(f"--partition-key {key} must be below --partitions ({total})")
    options = processor_options(args)
    return [
        (
            projection,
            ProcessorConfig(partition_key=key, total_partitions=total, **options),
        )
        for projection in projections
        for key in keys
    ]


async def _worker(
    args: argparse.Namespace,
    *,
    store_config: Callable[[argparse.Namespace], StoreConfig],
    usage_error: type[Exception],
) -> int:
    if not args.url:
        raise usage_error("no database URL: pass --url or set PUPSOURCING_URL")
    handler = configure_logging(json_lines=args.json, level=_LEVELS[args.log_level])
    try:
        with stop_on_signals() as stop:
            try:
                return await _run(args, store_config, usage_error)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if stop.received is None or task is None:
                    raise
                # The worker (or the loading and connecting before it) wound down.
                task.uncancel()
                get_logger(None, "pupsourcing_async.worker").info(
                    "worker stopped", signal=stop.received
                )
                return 0
    finally:
        logging.getLogger().removeHandler(handler)


async def _run(
    args: argparse.Namespace,
    store_config: Callable[[argparse.Namespace], StoreConfig],
    usage_error: type[Exception],
) -> int:
    try:
        pairs = runs(await load_projections(args.projections), args)
    except ValueError as err:
        raise usage_error(str(err)) from None
    # On PostgreSQL each run holds a connection for its lease, on which its batches run,
    # and one more listens for new events; one more is spare for a run that reconnects.
    size = len(pairs) + 2
    opening = connect(
        args.url,
        store_config=with_progress(store_config(args)),
        min_size=1,
        max_size=size,
    )
    async with opening as db:
        code: int = await run_worker(
            db, pairs, progress_interval=args.progress_every, handle_signals=False
        )
        return code
