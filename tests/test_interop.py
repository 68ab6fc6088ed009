"""Sharing one event store with the Go library.

The tables are created with the Go library's own SQL (shared/reference/schema.md) and
filled by plain INSERTs that know only its columns, as a Go service would write them.
This store must read those rows, and ``migrate()`` over them must change nothing they
rely on.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pupsourcing_async
from pupsourcing_async import OptimisticConcurrencyError, StoreConfig, es
from pupsourcing_async.testing import unique_store_config

from .conftest import (
    RawSQL,
    _Containers,
    backend_url,
    drop_tables,
    read_whole_log,
)


def go_schema(dialect: str, c: StoreConfig) -> list[str]:
    """The Go library's migration, as its generator writes it (no helper tables)."""
    e, h, p = c.events_table, c.aggregate_heads_table, c.checkpoints_table
    if dialect == "postgres":
        return [
            f"""CREATE TABLE {e} (
                global_position BIGSERIAL PRIMARY KEY, bounded_context TEXT NOT NULL,
                aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL,
                aggregate_version BIGINT NOT NULL, event_id UUID NOT NULL UNIQUE,
                event_type TEXT NOT NULL, event_version INT NOT NULL DEFAULT 1,
                payload BYTEA NOT NULL, trace_id TEXT, correlation_id TEXT, causation_id TEXT,
                metadata JSONB, created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version))""",
            f"CREATE INDEX idx_{e}_event_type ON {e} (event_type, global_position)",
            f"CREATE INDEX idx_{e}_correlation ON {e} (correlation_id) "
            "WHERE correlation_id IS NOT NULL",
            f"""CREATE TABLE {h} (bounded_context TEXT NOT NULL, aggregate_type TEXT NOT NULL,
                aggregate_id TEXT NOT NULL, aggregate_version BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                PRIMARY KEY (bounded_context, aggregate_type, aggregate_id))""",
            f"""CREATE TABLE {p} (projection_name TEXT PRIMARY KEY,
                last_global_position BIGINT NOT NULL DEFAULT 0,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
        ]
    if dialect == "mysql":
        return [
            f"""CREATE TABLE {e} (
                global_position BIGINT AUTO_INCREMENT PRIMARY KEY,
                bounded_context VARCHAR(255) NOT NULL, aggregate_type VARCHAR(255) NOT NULL,
                aggregate_id VARCHAR(255) NOT NULL, aggregate_version BIGINT NOT NULL,
                event_id BINARY(16) NOT NULL UNIQUE, event_type VARCHAR(255) NOT NULL,
                event_version INT NOT NULL DEFAULT 1, payload LONGBLOB NOT NULL,
                trace_id VARCHAR(255) NULL, correlation_id VARCHAR(255) NULL,
                causation_id VARCHAR(255) NULL, metadata JSON NULL,
                created_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6),
                UNIQUE KEY unique_aggregate_version
                    (bounded_context, aggregate_type, aggregate_id, aggregate_version),
                INDEX idx_event_type (event_type, global_position),
                INDEX idx_correlation (correlation_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE {h} (bounded_context VARCHAR(255) NOT NULL,
                aggregate_type VARCHAR(255) NOT NULL, aggregate_id VARCHAR(255) NOT NULL,
                aggregate_version BIGINT NOT NULL,
                updated_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6),
                PRIMARY KEY (bounded_context, aggregate_type, aggregate_id)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
            f"""CREATE TABLE {p} (projection_name VARCHAR(255) PRIMARY KEY,
                last_global_position BIGINT NOT NULL DEFAULT 0,
                updated_at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        ]
    return [
        f"""CREATE TABLE {e} (
            global_position INTEGER PRIMARY KEY AUTOINCREMENT, bounded_context TEXT NOT NULL,
            aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL,
            aggregate_version INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
            event_type TEXT NOT NULL, event_version INTEGER NOT NULL DEFAULT 1,
            payload BLOB NOT NULL, trace_id TEXT, correlation_id TEXT, causation_id TEXT,
            metadata TEXT, created_at TEXT NOT NULL DEFAULT (datetime('now')),
            UNIQUE (bounded_context, aggregate_type, aggregate_id, aggregate_version))""",
        f"""CREATE TABLE {h} (bounded_context TEXT NOT NULL, aggregate_type TEXT NOT NULL,
            aggregate_id TEXT NOT NULL, aggregate_version INTEGER NOT NULL,
            updated_at TEXT NOT NULL DEFAULT (datetime('now')),
            PRIMARY KEY (bounded_context, aggregate_type, aggregate_id))""",
        f"""CREATE TABLE {p} (projection_name TEXT PRIMARY KEY,
            last_global_position INTEGER NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL DEFAULT (datetime('now')))""",
    ]


def go_event_id(dialect: str, event_id: uuid.UUID) -> object:
    """An event id as the Go library stores it."""
    if dialect == "postgres":
        return event_id
    if dialect == "mysql":
        return event_id.bytes
    return str(event_id)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mysql"])
async def test_rows_written_by_the_go_schema_are_read_and_continued(
    backend: str, containers: _Containers, tmp_path: Path
) -> None:
    url = backend_url(backend, containers, tmp_path)
    config = unique_store_config()
    async with pupsourcing_async.connect(url, store_config=config) as db:
        raw = RawSQL(db.dialect)
        try:
            async with db.transaction() as tx:
                for statement in go_schema(db.dialect, config):
                    await raw.execute(tx, statement)
            # A Go service appends: two events with every column, then the head.
            ids = [uuid.uuid4(), uuid.uuid4()]
            full = (
                f"INSERT INTO {config.events_table} (bounded_context, aggregate_type, "
                "aggregate_id, aggregate_version, event_id, event_type, event_version, payload, "
                "trace_id, correlation_id, causation_id, metadata, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            created = datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
            when: object = created
            if db.dialect == "sqlite":
                when = created.strftime("%Y-%m-%d %H:%M:%S.%f")  # the Go SQLite format
            elif db.dialect == "mysql":
                when = created.replace(tzinfo=None)
            async with db.transaction() as tx:
                for version, event_id in enumerate(ids, 1):
                    await raw.execute(
                        tx,
                        full,
                        "Orders",
                        "Order",
                        "order-1",
                        version,
                        go_event_id(db.dialect, event_id),
                        "OrderCreated" if version == 1 else "PaymentProcessed",
                        1,
                        json.dumps({"total": 99.99}).encode(),
                        "trace-go",
                        "corr-go",
                        None,
                        '{"source": "go"}',
                        when,
                    )
                await raw.execute(
                    tx,
                    f"INSERT INTO {config.aggregate_heads_table} "
                    "(bounded_context, aggregate_type, aggregate_id, aggregate_version) "
                    "VALUES (?, ?, ?, ?)",
                    "Orders",
                    "Order",
                    "order-1",
                    2,
                )
                # An event from a writer that knows only the Go columns and leaves the
                # defaulted ones (event_version, created_at, the optional ids) out.
                minimal_id = uuid.uuid4()
                await raw.execute(
                    tx,
                    f"INSERT INTO {config.events_table} (bounded_context, aggregate_type, "
                    "aggregate_id, aggregate_version, event_id, event_type, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    "Orders",
                    "Order",
                    "order-2",
                    1,
                    go_event_id(db.dialect, minimal_id),
                    "OrderCreated",
                    b"{}",
                )

            await db.migrate()  # over the Go tables: adds only what this store needs

            log = await read_whole_log(db)
            assert [e.event_id for e in log] == [*ids, minimal_id]
            first = log[0]
            assert (first.bounded_context, first.aggregate_type, first.aggregate_id) == (
                "Orders",
                "Order",
                "order-1",
            )
            assert json.loads(first.payload) == {"total": 99.99}
            assert first.metadata is not None
            assert json.loads(first.metadata) == {"source": "go"}
            assert (first.trace_id, first.correlation_id, first.causation_id) == (
                "trace-go",
                "corr-go",
                None,
            )
            assert first.created_at == created
            minimal = log[2]
            assert minimal.event_version == 1
            assert minimal.metadata is None
            assert minimal.created_at.tzinfo is not None
            assert abs((datetime.now(UTC) - minimal.created_at).total_seconds()) < 300

            async with db.transaction() as tx:
                stream = await db.store.read_aggregate_stream(tx, "Orders", "Order", "order-1")
                assert stream.version == 2
                with pytest.raises(OptimisticConcurrencyError):
                    await db.store.append(
                        tx, es.Exact(1), [es.Event("Orders", "Order", "order-1", "X", b"{}")]
                    )
            async with db.transaction() as tx:
                shipped = es.Event("Orders", "Order", "order-1", "OrderShipped", b"{}")
                result = await db.store.append(tx, es.Exact(2), [shipped])
            assert result.to_version == 3
            assert [e.event_type for e in await read_whole_log(db)][-1] == "OrderShipped"
        finally:
            if db.dialect != "sqlite":
                await drop_tables(db, [config.events_table])
