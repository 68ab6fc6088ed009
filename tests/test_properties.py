"""Generated appends: on every backend, stored exactly and read back identical, or refused
with the same typed error, and nothing written — the same outcome on every database.

Each example is a short sequence of appends (new events, exact retries, altered retries)
run on SQLite, PostgreSQL and MySQL side by side, under an aggregate key of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pupsourcing_async
from pupsourcing_async import Database, PupsourcingError, es
from pupsourcing_async.testing import unique_store_config

from .conftest import BACKENDS, _Containers, backend_url, drop_tables

ZONES = [UTC, UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), None]
# Mostly text every database keeps, sometimes text none may (empty, NUL, too long, a lone
# surrogate), often text that breaks naive SQL escaping or padding rules.
VALID_TEXT = st.one_of(
    st.text(
        st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=12,
    ),
    st.text(alphabet=" '\"\\\x1a\r\n%_aA", min_size=1, max_size=8),
    st.sampled_from(["pad", "pad ", "Pad", "é", "e\u0301", "😀", "a" * 255]),
)
INVALID_TEXT = st.sampled_from(["", "nul\x00", "\ud800", "b" * 256])
JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**66), max_value=2**66),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    JSON_LEAF,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
JSON_BYTES = JSON.map(lambda value: json.dumps(value).encode())
BAD_METADATA = st.sampled_from(
    [
        b"[" * 32 + b"]" * 32,
        b'{"a":' * 32 + b"1" + b"}" * 32,
        b"[" * 40 + b"]" * 40,
        b"",
        b"{",
        b"\xff",
        b'"\\ud800"',
        b'["\\udfff", 1]',
        b'{"a": "\\u0000"}',
        b"NaN",
        b"1e999",
        b"123456789012345678901234567890",
    ]
)
VALID_CREATED = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
CREATED = st.builds(
    lambda moment, zone: moment.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(ZONES),
)
EXPECTED = st.sampled_from(
    [
        es.Any(),
        es.Any(),
        es.NoStream(),
        es.StreamExists(),
        es.Exact(1),
        es.Exact(2),
        es.Exact(2**63),
    ]
)


# What an event may have wrong, if anything (most events have nothing wrong).
FLAWS = [
    None,
    None,
    None,
    None,
    "aggregate_id",
    "event_type",
    "event_version",
    "metadata",
    "metadata",
    "created_at",
]


@st.composite
def events(draw: st.DrawFn, count: int) -> list[es.Event]:
    aggregate_id = draw(VALID_TEXT)
    batch = []
    for _ in range(count):
        event = es.Event(
            "Props",
            "Thing",
            aggregate_id,
            draw(VALID_TEXT),
            draw(st.binary(max_size=64)),
            event_version=draw(st.sampled_from([1, 2, 2**31 - 1])),
            metadata=draw(st.one_of(st.none(), JSON_BYTES)),
            trace_id=draw(st.one_of(st.none(), VALID_TEXT)),
            created_at=draw(VALID_CREATED),
        )
        flaw = draw(st.sampled_from(FLAWS))
        if flaw == "aggregate_id":
            event = replace(event, aggregate_id=draw(INVALID_TEXT))
        elif flaw == "event_type":
            event = replace(event, event_type=draw(INVALID_TEXT))
        elif flaw == "event_version":
            event = replace(event, event_version=draw(st.sampled_from([0, -1, 2**31])))
        elif flaw == "metadata":
            event = replace(event, metadata=draw(BAD_METADATA))
        elif flaw == "created_at":
            event = replace(event, created_at=draw(CREATED))
        batch.append(event)
    return batch


# One step: new events, the previous append retried as it was, or retried altered.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["new", "new", "retry", "altered"]),
        EXPECTED,
        st.integers(min_value=1, max_value=3).flatmap(events),
    ),
    min_size=1,
    max_size=4,
)


def outcome(result: object) -> tuple[Any, ...]:
    if isinstance(result, es.AppendResult):
        return ("stored", result.from_version, result.to_version)
    assert isinstance(result, PupsourcingError), f"a raw error escaped: {result!r}"
    return (
        "refused",
        type(result).__name__,
        getattr(result, "index", None),
        getattr(result, "field", None),
    )


def as_json(data: bytes | None) -> Any:
    return None if data is None else json.loads(data, parse_float=Decimal, parse_int=Decimal)


class Backends:
    """One migrated store per backend, on a loop of its own (hypothesis runs examples
    synchronously)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        self.databases: dict[str, Database] = {}
        self.configs = {backend: unique_store_config() for backend in urls}
        for backend, url in urls.items():
            db = self.loop.run_until_complete(
                pupsourcing_async.connect(url, store_config=self.configs[backend])
            )
            self.loop.run_until_complete(db.migrate())
            self.databases[backend] = db
        self.counter = itertools.count()

    def close(self) -> None:
        for backend, db in self.databases.items():
            if db.dialect != "sqlite":
                self.loop.run_until_complete(drop_tables(db, [self.configs[backend].events_table]))
            self.loop.run_until_complete(db.close())
        self.loop.close()


@pytest.fixture(scope="module")
def backends(
    containers: _Containers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backends]:
    tmp: Path = tmp_path_factory.mktemp("properties")
    stores = Backends({backend: backend_url(backend, containers, tmp) for backend in BACKENDS})
    yield stores
    stores.close()


async def run_steps(
    db: Database, steps: list[tuple[str, es.ExpectedVersion, list[es.Event]]]
) -> list[tuple[Any, ...]]:
    results: list[tuple[Any, ...]] = []
    previous: list[es.Event] | None = None
    for kind, expected, batch in steps:
        if kind != "new" and previous is not None:
            batch = (
                previous
                if kind == "retry"
                else [replace(previous[0], payload=b"other"), *previous[1:]]
            )
        try:
            async with db.transaction() as tx:
                result: object = await db.store.append(tx, expected, batch)
        except PupsourcingError as err:
            result = err
        results.append(outcome(result))
        if isinstance(result, es.AppendResult):
            previous = batch
            async with db.transaction() as tx:
                stored = await db.store.read_aggregate_stream(
                    tx,
                    "Props",
                    "Thing",
                    batch[0].aggregate_id,
                    from_version=result.from_version + 1,
                    to_version=result.to_version,
                )
            for given_event, read in zip(batch, stored.events, strict=True):
                assert read.event_id == given_event.event_id
                assert read.payload == given_event.payload
                assert read.aggregate_id == given_event.aggregate_id
                assert read.event_type == given_event.event_type
                assert read.event_version == given_event.event_version
                assert read.trace_id == given_event.trace_id
                assert read.created_at == given_event.created_at
                assert as_json(read.metadata) == as_json(given_event.metadata)
    return results


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=STEPS)
def test_every_backend_stores_or_refuses_alike(backends: Backends, steps: Any) -> None:
    namespace = f"{next(backends.counter)}:"
    steps = [
        (
            kind,
            expected,
            [
                replace(e, aggregate_id=namespace + e.aggregate_id, event_id=uuid.uuid4())
                for e in batch
            ],
        )
        for kind, expected, batch in steps
    ]
    outcomes = {
        backend: backends.loop.run_until_complete(run_steps(db, steps))
        for backend, db in backends.databases.items()
    }
    assert outcomes["postgres"] == outcomes["sqlite"], steps
    assert outcomes["mysql"] == outcomes["sqlite"], steps
