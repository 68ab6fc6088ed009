"""The command line every example takes: ``--url`` and ``--table-prefix``."""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pupsourcing_async
from pupsourcing_async import Database, Logger, StoreConfig
from pupsourcing_async.connections import DriverConnection
from pupsourcing_async.observe import Observer
from pupsourcing_async.sqlalchemy import create_engine

__all__ = ["Setup", "parser", "setup"]


@dataclass(frozen=True, slots=True)
class Setup:
    """Where an example runs.

    Attributes:
        url: The database URL.
        prefix: Put before every table name, the store's and the read models', so that
            runs sharing one database server never see each other's tables.
    """

    url: str
    prefix: str = ""

    def store_config(
        self, *, logger: Logger | None = None, observers: Sequence[Observer] = ()
    ) -> StoreConfig:
        """The store's table names under this prefix."""
        return StoreConfig(
            events_table=f"{self.prefix}events",
            aggregate_heads_table=f"{self.prefix}aggregate_heads",
            checkpoints_table=f"{self.prefix}projection_checkpoints",
            logger=logger,
            observers=tuple(observers),
        )

    @asynccontextmanager
    async def connect(
        self, config: StoreConfig | None = None, **engine_options: Any
    ) -> AsyncIterator[Database[DriverConnection]]:
        """The database, opened on an SQLAlchemy engine of its own (disposed after), so
        the read models can be written once in SQLAlchemy Core for every database."""
        if self.url.startswith("sqlite"):
            # The busy timeout connect(url) gives SQLite, for concurrent writers.
            engine_options.setdefault("connect_args", {"timeout": 10.0})
        engine = create_engine(self.url, **engine_options)
        try:
            async with pupsourcing_async.connect(
                engine, store_config=config or self.store_config()
            ) as db:
                yield db
        finally:
            await engine.dispose()

    def table(self, name: str) -> str:
        """A read model's table name under this prefix."""
        return f"{self.prefix}{name}"

    def argv(self) -> list[str]:
        """The command-line options that recreate this setup (for child processes)."""
        return ["--url", self.url, "--table-prefix", self.prefix]


def parser(
    name: str, description: str, *, default_url: str | None = None
) -> argparse.ArgumentParser:
    """An argument parser with ``--url`` and ``--table-prefix``."""
    result = argparse.ArgumentParser(prog=f"python -m examples.{name}", description=description)
    result.add_argument(
        "--url",
        default=default_url,
        help=f"database URL (default: {default_url or 'a SQLite file in a temporary directory'})",
    )
    result.add_argument(
        "--table-prefix",
        default="",
        metavar="PREFIX",
        help="prefix for every table name, to keep runs apart on a shared database",
    )
    return result


@contextmanager
def setup(args: argparse.Namespace, filename: str) -> Iterator[Setup]:
    """The setup the parsed ``args`` ask for; a temporary SQLite file without ``--url``."""
    prefix = str(args.table_prefix)
    if prefix:
        StoreConfig(events_table=f"{prefix}events")  # fails early on a bad prefix
    if args.url:
        yield Setup(str(args.url), prefix)
        return
    with tempfile.TemporaryDirectory(prefix="pupsourcing-example-") as directory:
        yield Setup(f"sqlite:///{Path(directory) / filename}", prefix)
