"""``python -m examples.with_logging [--url URL]``: what the library logs, and where.

Part 1 configures the standard ``logging`` module: the library logs to loggers under
``pupsourcing_async`` (``.store`` for appends and conflicts, ``.projection`` for leases
and batches), with its structured fields both in the message (``key=value``) and on the
record (``extra=``), where a JSON formatter picks them up.

Part 2 passes a structured logger of its own as ``StoreConfig(logger=...)`` and
``ProcessorConfig(logger=...)``: any object with ``debug``, ``info`` and ``error`` taking
a message and keyword fields (structlog and loguru loggers fit with a thin wrapper).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from pupsourcing_async import Logger, OptimisticConcurrencyError, es
from pupsourcing_async.projection import ProcessorConfig, RunMode

from ..common.bank import Balances, account_opened, append, money_deposited, run_id
from ..common.cli import Setup, parser, setup

# The attributes every LogRecord has; anything else on a record came in through extra=.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the library's structured fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        entry = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields,
        }
        return "  json  " + json.dumps(entry, default=str)


@contextmanager
def standard_logging(stream: TextIO) -> Iterator[None]:
    """Log ``pupsourcing_async`` at DEBUG to ``stream``, as text and as JSON.

    An application would call ``logging.basicConfig`` or ``logging.config.dictConfig``
    once at startup; this attaches handlers for the block only, and removes them after.
    """
    text = logging.StreamHandler(stream)
    text.setFormatter(logging.Formatter("  text  %(levelname)-5s %(name)s: %(message)s"))
    as_json = logging.StreamHandler(stream)
    as_json.setFormatter(JsonFormatter())
    as_json.addFilter(lambda record: record.name == "pupsourcing_async.projection")
    library = logging.getLogger("pupsourcing_async")
    level = library.level
    library.setLevel(logging.DEBUG)
    library.addHandler(text)
    library.addHandler(as_json)
    try:
        yield
    finally:
        library.removeHandler(text)
        library.removeHandler(as_json)
        library.setLevel(level)


class StructuredLogger:
    """A logger of your own: ``level=... msg="..." key=value`` lines, with bound fields.

    It satisfies ``pupsourcing_async.Logger`` structurally: no base class needed.
    """

    def __init__(self, stream: TextIO, **bound: object) -> None:
        self.stream = stream
        self.bound = bound

    def bind(self, **fields: object) -> StructuredLogger:
        """A logger that adds ``fields`` to every line."""
        return StructuredLogger(self.stream, **{**self.bound, **fields})

    def _emit(self, level: str, msg: str, fields: dict[str, object]) -> None:
        pairs = " ".join(f"{key}={value}" for key, value in {**self.bound, **fields}.items())
        print(f'  level={level} msg="{msg}" {pairs}', file=self.stream)

    def debug(self, msg: str, **fields: object) -> None:
        self._emit("debug", msg, fields)

    def info(self, msg: str, **fields: object) -> None:
        self._emit("info", msg, fields)

    def error(self, msg: str, **fields: object) -> None:
        self._emit("error", msg, fields)


async def activity(where: Setup, *, logger: Logger | None, name: str) -> None:
    """Open an account, deposit, hit a conflict, and run a projection: things worth a log."""
    config = where.store_config(logger=logger)
    async with where.connect(config) as db:
        await db.migrate()
        balances = Balances(name, where.table(name))
        await balances.create_table(db)
        account = f"acc-alice-{run_id()}"
        print(f"- opening {account} and depositing")
        await append(db, [account_opened(account, "Alice")], es.NoStream())
        await append(db, [money_deposited(account, 10_000)], es.Exact(1))
        print("- depositing again on a stale version")
        with contextlib.suppress(OptimisticConcurrencyError):
            await append(db, [money_deposited(account, 500)], es.Exact(1))
        print("- running the projection once")
        processor_logger = (
            logger.bind(component="projection") if isinstance(logger, StructuredLogger) else None
        )
        run_config = ProcessorConfig(run_mode=RunMode.ONE_OFF, logger=processor_logger)
        await db.processor(run_config).run(balances)


async def story(where: Setup) -> None:
    """Both parts, one after the other."""
    print("Part 1: the standard logging module (text, and JSON for projection records)")
    with standard_logging(sys.stdout):
        await activity(where, logger=None, name="logging_std_balances")
    print("Part 2: a structured logger of our own, in StoreConfig and ProcessorConfig")
    logger = StructuredLogger(sys.stdout, service="bank").bind(component="store")
    await activity(where, logger=logger, name="logging_custom_balances")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts; SQLite in a temporary directory unless ``--url`` names a database."""
    cli = parser("with_logging", "What the library logs, through logging or your own logger.")
    with setup(cli.parse_args(argv), "bank.db") as where:
        asyncio.run(story(where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
