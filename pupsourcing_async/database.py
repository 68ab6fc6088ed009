"""Connecting to an event store by URL: one ``Database`` API for every engine.

```python
async with pupsourcing_async.connect("sqlite:///app.db") as db:
    await db.migrate()
    async with db.transaction() as tx:
        await db.store.append(tx, es.NoStream(), [event])
```
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Generic, cast

from . import es
from ._health import HealthReport, ProjectionHealth, projection_health
from ._url import DatabaseURL, parse_url
from .adapters._shared import checkpoint_names
from .adapters.base import AdapterStore, Backend, CheckpointRow
from .connections import DriverConnection
from .errors import SchemaError
from .projection.config import ProcessorConfig
from .projection.parking import ParkedEvent, parked_table
from .projection.processor import Processor
from .store import StoreConfig

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from typing_extensions import TypeVar

    # Bare ``Database`` in an annotation means ``Database[Any]``, as it did before.
    TxT = TypeVar("TxT", default=Any)
else:
    from typing import TypeVar

    TxT = TypeVar("TxT")

__all__ = [
    "Connecting",
    "Database",
    "HealthReport",
    "ProjectionHealth",
    "ProjectionStatus",
    "connect",
]

# dialect -> (adapter module, backend class, driver package, extra to install)
_ADAPTERS = {
    "postgres": ("pupsourcing_async.adapters.postgres", "PostgresBackend", "asyncpg", "postgres"),
    "sqlite": ("pupsourcing_async.adapters.sqlite", "SqliteBackend", "aiosqlite", None),
    "mysql": ("pupsourcing_async.adapters.mysql", "MysqlBackend", "aiomysql", "mysql"),
}


def _is_engine(value: object) -> bool:
    # Only a value from SQLAlchemy's own modules can be an engine: SQLAlchemy is imported
    # for nothing else.
    if not type(value).__module__.startswith("sqlalchemy."):
        return False
    from .sqlalchemy._open import is_engine

    return is_engine(value)


def _adapter_module(dialect: str) -> ModuleType:
    module_name, _, driver, extra = _ADAPTERS[dialect]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name != driver:
            raise
        raise ModuleNotFoundError(
            f"the {dialect} adapter needs {driver}: pip install 'pupsourcing-async[{extra}]'",
            name=driver,
        ) from err


class Database(Generic[TxT]):
    """An event store database: a connection pool, a store, and the operations on both.

    Made by :func:`connect`. Use it as an async context manager, or call :meth:`close`.
    ``TxT`` is the type of the ``tx`` its transactions and projections get: the driver
    connection (see ``pupsourcing_async.connections``).

    Attributes:
        store: The event store bound to this database's tables.
        dialect: ``"postgres"``, ``"sqlite"`` or ``"mysql"``.
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._closed = False
        self._schema_notes: list[str] | None = None

    @property
    def store(self) -> AdapterStore:
        """The event store; pass it the ``tx`` of :meth:`transaction`."""
        return self._backend.store

    @property
    def dialect(self) -> str:
        """``"postgres"``, ``"sqlite"`` or ``"mysql"``."""
        return self._backend.dialect

    @property
    def location(self) -> str:
        """Where the database is (host, port and name, or file); never a password."""
        return self._backend.location

    @property
    def backend(self) -> Backend:
        """The adapter's backend, for the projection processor and tools."""
        return self._backend

    def transaction(self) -> AbstractAsyncContextManager[TxT]:
        """A connection inside a new transaction, for the store's ``tx`` argument.

        The transaction commits when the block exits normally and rolls back when it
        raises or is cancelled (the rollback finishes before the cancellation goes on).
        On SQLite it begins with ``BEGIN IMMEDIATE``. The connection is the driver's own
        (asyncpg, aiosqlite or aiomysql), so your own queries can share the transaction;
        on a database opened on an engine, ``pupsourcing_async.sqlalchemy.connection(tx)``
        runs SQLAlchemy Core in it.

        Raises:
            StoreUnavailableError: no connection could be had, or it broke.
        """
        return cast("AbstractAsyncContextManager[TxT]", self._backend.transaction())

    async def append(
        self, expected: es.ExpectedVersion, events: Sequence[es.Event]
    ) -> es.AppendResult:
        """Append ``events`` to one aggregate in a transaction of its own.

        The same guarantees as ``store.append`` in a ``transaction()`` block (versions,
        conflicts, idempotent retries by event id, gap safety, notifications), on the
        fastest path the database offers: one round trip on PostgreSQL and MySQL for an
        append that meets no conflict, one call into SQLite's thread. Use
        ``transaction()`` when the append must commit together with other writes.

        Raises:
            The errors of ``EventStore.append``; the append is committed when it returns.
        """
        return await self._backend.append(expected, events)

    async def read_events(
        self, from_position: int = 0, limit: int = 1000
    ) -> list[es.PersistedEvent]:
        """Read up to ``limit`` events after ``from_position``, gap-safe, without a
        transaction block (see ``EventStore.read_events``: a short or empty page is not
        the end of the log while a hole is pending)."""
        return await self._backend.read_events(from_position, limit)

    async def read_aggregate_stream(
        self,
        bounded_context: str,
        aggregate_type: str,
        aggregate_id: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> es.Stream:
        """Read one aggregate's events in version order (both bounds inclusive) without a
        transaction block."""
        return await self._backend.read_aggregate_stream(
            bounded_context, aggregate_type, aggregate_id, from_version, to_version
        )

    async def migrate(self) -> None:
        """Create the event store's tables and indexes if they do not exist.

        Idempotent, safe to run from several processes at once, and harmless over tables
        the Go library created. What such tables still lack for this library's guarantees
        is logged, and reported by :meth:`health` (``schema_notes``).
        """
        await self._backend.migrate()
        self._schema_notes = None

    def processor(self, config: ProcessorConfig | None = None) -> Processor[TxT]:
        """A projection processor on this database: ``await db.processor(cfg).run(p)``."""
        return Processor(self._backend, config)

    async def wait_for(
        self,
        position: int,
        *,
        projections: Sequence[str],
        timeout: float | None = None,
    ) -> None:
        """Wait until every named projection has processed up to ``position``.

        For read-your-writes: append, then ``await db.wait_for(result.global_positions[-1],
        projections=["balances"], timeout=5)``, then answer from the read model. A
        partitioned projection counts once all of its partitions' checkpoints (every
        ``<name>_p<key>`` row a running worker has written) are at or past ``position``;
        to wait for partitions whose workers may not have started yet, name them:
        ``projections=["balances_p0", "balances_p1"]``.

        Raises:
            TimeoutError: ``timeout`` seconds passed first; the message names the
                projections still behind.
        """
        if isinstance(projections, str):
            raise TypeError(
                f"projections must be a list of names, not one str: "
                f"use projections=[{projections!r}]"
            )
        if not projections:
            raise ValueError("wait_for needs at least one projection name")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.005
        while True:
            watch = self._backend.progress.watch()
            behind = await self._projections_behind(position, projections)
            if not behind:
                return
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    f"projections still behind position {position} after {timeout}s: "
                    + ", ".join(behind)
                )
            # Processors in this process signal each batch; others are polled for.
            wait = pause if remaining is None else min(pause, remaining)
            if not await watch.wait(wait):
                pause = min(pause * 2, 0.2)

    async def _projections_behind(self, position: int, projections: Sequence[str]) -> list[str]:
        async with self.transaction() as tx:
            rows = await self.store.list_checkpoints(tx)
        positions = {row.name: row.position for row in rows}
        behind = []
        for name in projections:
            names = checkpoint_names(list(positions), name)
            if not names or any(positions[n] < position for n in names):
                behind.append(name)
        return behind

    async def projection_status(self) -> list[ProjectionStatus]:
        """Every checkpoint with its lag behind the head of the log, by name."""
        head, rows = await self._head_and_checkpoints()
        return [
            ProjectionStatus(
                row.name, row.position, head, max(head - row.position, 0), row.updated_at
            )
            for row in rows
        ]

    async def _head_and_checkpoints(self) -> tuple[int, list[CheckpointRow]]:
        """The head of the log and every checkpoint, read in one transaction."""
        async with self.transaction() as tx:
            head = await self.store.latest_global_position(tx)
            return head, await self.store.list_checkpoints(tx)

    async def reset_projection(self, name: str) -> int:
        """Delete the checkpoints of projection ``name`` (all its partitions), and the
        events it parked, so its next run starts from the beginning; how many checkpoint
        rows went.

        Clear the read model in the same breath: the events will be handled again (and
        parked again if they still fail). Stop the projection's workers first.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"projection name must be a non-empty string, got {name!r}")
        async with self.transaction() as tx:
            rows = await self.store.list_checkpoints(tx)
            parked = await self.store.parked.summary(tx)
            await self.store.parked.delete(tx, checkpoint_names(sorted(parked), name))
            names = checkpoint_names([row.name for row in rows], name)
            return await self.store.delete_checkpoints(tx, names) if names else 0

    async def parked_events(self, projection: str | None = None) -> list[ParkedEvent]:
        """The events projections parked (``OnFailure.PARK``), in log order: every
        projection's, or only those of ``projection`` (all its partitions).

        Raises:
            SchemaError: the parked events table is missing: run :meth:`migrate`.
        """
        if projection is not None and (not isinstance(projection, str) or not projection):
            raise ValueError(f"projection must be a non-empty str or None, got {projection!r}")
        async with self.transaction() as tx:
            if projection is None:
                return await self.store.parked.events(tx)
            summary = await self.store.parked.summary(tx)
            found: list[ParkedEvent] = []
            for checkpoint in checkpoint_names(sorted(summary), projection):
                found += await self.store.parked.events(tx, checkpoint)
        return sorted(found, key=lambda parked: (parked.global_position, parked.checkpoint))

    async def health(
        self, projections: Sequence[str] | None = None, *, stale_after: float = 60.0
    ) -> HealthReport:
        """How the database and its projections are doing; never raises for a database
        that does not answer (``reachable`` is then False).

        A projection whose runner in this process stopped on an error is reported
        stopped, with that error, at once; one that runs elsewhere is judged by its
        checkpoint. Parked events are counted but leave a projection healthy.

        Args:
            projections: Report only these projections (each with all its partitions,
                matched exactly), for an application that runs them: one without a
                checkpoint yet is reported at position 0. Every checkpoint when omitted.
            stale_after: A projection behind the head whose checkpoint has not moved for
                this many seconds is reported as not progressing.
        """
        if isinstance(projections, str):
            raise TypeError(
                f"projections must be a list of names, not one str: "
                f"use projections=[{projections!r}]"
            )
        loop = asyncio.get_running_loop()
        started = loop.time()
        head: int | None = None
        found: list[ProjectionHealth] = []
        error = None
        try:
            head, rows = await self._head_and_checkpoints()
            latency = loop.time() - started
            if self._schema_notes is None:
                self._schema_notes = await self._backend.inspect_schema()
            parked = await self._parked_summary()
            found = await projection_health(
                self._backend, head, rows, parked, projections, stale_after
            )
        except Exception as err:  # a health check reports trouble; it does not raise it
            head, found, error = None, [], " ".join(str(err).split())
            latency = loop.time() - started
        return HealthReport(
            reachable=error is None,
            dialect=self.dialect,
            location=self.location,
            latency=latency,
            head_position=head,
            projections=found,
            pending_holes=self.store.pending_holes(),
            error=error,
            schema_notes=list(self._schema_notes or []),
        )

    async def _parked_summary(self) -> dict[str, tuple[int, str]]:
        """Parked events per checkpoint; none, with a schema note, if the table is missing
        (tables migrated by an earlier version)."""
        try:
            async with self.transaction() as tx:
                return await self.store.parked.summary(tx)
        except SchemaError:
            note = (
                f"the parked events table {parked_table(self.store.config)} is missing: "
                "run migrate() before projections park events"
            )
            if self._schema_notes is not None and note not in self._schema_notes:
                self._schema_notes.append(note)
            return {}

    async def close(self) -> None:
        """Close every connection. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            await self._backend.aclose()

    async def __aenter__(self) -> Database[TxT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Database {self.dialect} {self.location}>"


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection (or one partition of it) stands.

    Attributes:
        name: The checkpoint's name: the projection's, or ``<name>_p<key>``.
        position: The last global position it processed.
        head: The highest committed position in the log.
        lag: How many positions it is behind: ``head - position``.
        updated_at: When its checkpoint last moved.
    """

    name: str
    position: int
    head: int
    lag: int
    updated_at: datetime | None


class Connecting(Generic[TxT]):
    """What :func:`connect` returns: await it for a :class:`Database`, or use it as an async
    context manager that closes the database on exit."""

    def __init__(
        self, url: DatabaseURL | None, options: dict[str, Any], *, engine: Any = None
    ) -> None:
        self._url = url
        self._options = options
        self._engine = engine
        self._database: Database[TxT] | None = None

    async def _open(self) -> Database[TxT]:
        if self._engine is not None:
            from .sqlalchemy._open import open_backend

            options = self._options
            return Database(
                await open_backend(
                    self._engine,
                    store_config=options["store_config"],
                    connect_timeout=options["connect_timeout"],
                )
            )
        assert self._url is not None
        backend_class = getattr(_adapter_module(self._url.dialect), _ADAPTERS[self._url.dialect][1])
        backend: Backend = await backend_class.connect(self._url, **self._options)
        return Database(backend)

    def __await__(self) -> Generator[Any, None, Database[TxT]]:
        return self._open().__await__()

    async def __aenter__(self) -> Database[TxT]:
        self._database = await self._open()
        return self._database

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._database is not None:
            await self._database.close()


def connect(
    url: str | AsyncEngine,
    *,
    store_config: StoreConfig | None = None,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    pool_options: Mapping[str, Any] | None = None,
) -> Connecting[DriverConnection]:
    """Open an event store database by URL, or on an application's SQLAlchemy engine.

    ``postgresql://user:password@host:5432/db`` (asyncpg), ``mysql://user:password@host:3306/db``
    (aiomysql) or ``sqlite:///relative.db`` / ``sqlite:////absolute.db`` (aiosqlite, the
    embedded default). Use ``async with connect(url) as db:`` or ``db = await connect(url)``.

    Given a SQLAlchemy ``AsyncEngine`` on asyncpg, aiomysql or aiosqlite instead of a URL,
    the store takes its connections from the engine's pool, so the application and the
    store share one pool, and handlers can use SQLAlchemy Core on the batch's own
    transaction (``pupsourcing_async.sqlalchemy.connection(tx)``). The pool options do not
    apply then (size the engine's pool: each running projection holds one connection, and
    on PostgreSQL one more listens for new events; passing them is a ``ValueError``), and
    closing the database leaves the engine open. ``connect_timeout`` bounds the wait for a
    pool of one shared connection.

    Args:
        url: The database URL (SQLAlchemy forms such as ``postgresql+asyncpg://`` work
            too), or an ``AsyncEngine``.
        store_config: Table names and logger; the defaults when omitted.
        min_size: Connections the pool keeps open.
        max_size: Most connections the pool opens.
        connect_timeout: Seconds to wait for the database to answer.
        pool_options: Passed to the driver's pool as they are (for example asyncpg's
            ``server_settings``); for SQLite, ``busy_timeout`` in seconds (default 10).

    Raises:
        UnsupportedURLError: the URL's scheme (or the engine's driver) is not one of the
            above.
        StoreUnavailableError: the database did not answer; the message names its host.
    """
    if not isinstance(url, str):
        if not _is_engine(url):
            raise TypeError(
                f"url must be a str or a SQLAlchemy AsyncEngine, got {type(url).__name__}"
            )
        if (min_size, max_size) != (1, 10) or pool_options:
            raise ValueError(
                "min_size, max_size and pool_options are for the pool connect() opens; "
                "with an engine, size the engine's pool (pool_size, max_overflow)"
            )
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
        config = store_config or StoreConfig()
        return Connecting(
            None, {"store_config": config, "connect_timeout": connect_timeout}, engine=url
        )
    parsed = parse_url(url)
    if min_size < 0 or max_size < 1 or min_size > max_size:
        raise ValueError(
            f"pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
            f"got min_size={min_size}, max_size={max_size}"
        )
    if connect_timeout <= 0:
        raise ValueError(f"connect_timeout must be positive, got {connect_timeout}")
    options: dict[str, Any] = {
        "store_config": store_config or StoreConfig(),
        "min_size": min_size,
        "max_size": max_size,
        "connect_timeout": connect_timeout,
        "pool_options": dict(pool_options or {}),
    }
    return Connecting(parsed, options)
