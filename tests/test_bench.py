"""The benchmark's minimal baseline and eventsourcing sides: they run, and they are correct.

Nothing here measures speed (that is the benchmark's own job, as ratios in one run). The
tests check that a quick run gives each side a row on every database, that the minimal
baseline keeps what its modules promise (a taken version or event id is a conflict, a
batch is all or nothing, a projection's read model and checkpoint move together), and
that eventsourcing runs where it has a recorder and is skipped with a note elsewhere.
"""

from __future__ import annotations

import importlib.util
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import pupsourcing_async
from bench import cli, mysql, peer_eventsourcing, postgres, sqlite
from bench.common import QUICK, MinimalTables, RawConflictError, Side, Target, make_events
from bench.peer_eventsourcing import EVENTS_TABLE, READ_MODEL_TABLE, postgres_schema

from .conftest import RawSQL

INSTALLED = all(
    importlib.util.find_spec(name) is not None
    for name in ("eventsourcing", "psycopg", "psycopg_pool")
)


def _path(url: str) -> str:
    return url.removeprefix("sqlite:///")


@asynccontextmanager
async def _target(backend: str, url: str, sides: list[Side], prefix: str) -> AsyncIterator[Target]:
    if backend == "postgres":
        async with postgres.open_target(url, QUICK, prefix, sides) as pg:
            yield pg
    elif backend == "mysql":
        async with mysql.open_target(url, QUICK, prefix, sides) as my:
            yield my
    else:
        async with sqlite.open_target(_path(url), QUICK, prefix, sides) as lite:
            yield lite


def _table(text: str, column: str) -> dict[str, dict[str, str]]:
    """The first table with ``column``: each row's cells by column name."""
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("workload ") and column in line
    )
    header = re.split(r"\s{2,}", lines[start].strip())
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def _rate(cell: str) -> float:
    return float(cell.replace(",", "").removesuffix(" ms"))


async def test_quick_run_gives_each_new_side_a_row(backend: str, url: str) -> None:
    options = ["--db", backend, "--quick", "--sides", "library,minimal,eventsourcing"]
    if backend == "postgres":
        options += ["--postgres-url", url]
    elif backend == "mysql":
        options += ["--mysql-url", url]
    else:
        options += ["--sqlite-path", _path(url)]
    printed: list[str] = []
    code = await cli.run(cli.parse_args(options), printed.append, lambda _: None)
    text = "\n".join(printed)
    assert code == 0, text

    rows = _table(text, "minimal ev/s")
    assert {label.split()[0] for label in rows} == {"W1", "W2", "W3", "W4", "W5"}
    peer = backend != "mysql" and INSTALLED
    for label, cells in rows.items():
        assert _rate(cells["minimal ev/s"]) > 0, label
        assert _rate(cells["lib/min"]) > 0, label
        if peer:
            assert _rate(cells["eventsourcing ev/s"]) > 0, label
            assert _rate(cells["es/min"]) > 0, label
        else:
            assert "eventsourcing ev/s" not in cells
    if backend == "mysql":
        assert "note: eventsourcing has no MySQL recorder" in text
    elif not INSTALLED:
        assert "note: eventsourcing skipped: " in text

    latency = _table(text, "minimal p50")
    assert len(latency) == 2
    for label, cells in latency.items():
        assert _rate(cells["minimal p50"]) > 0, label


async def test_minimal_side_refuses_taken_versions_and_event_ids(backend: str, url: str) -> None:
    prefix = f"psb_{secrets.token_hex(4)}_"
    async with _target(backend, url, ["minimal"], prefix) as target:
        side = target.sides["minimal"]
        events = make_events("taken", 3)
        await side.append_singles(events[:2], exact=False)
        # The writer's next single event would be version 1 again: the unique key refuses.
        with pytest.raises(RawConflictError):
            await side.append_singles(events[2:], exact=False)
        # A batch whose first row takes a free version but whose second is taken: nothing.
        with pytest.raises(RawConflictError):
            await side.append_batches([make_events("taken", 2)], exact=False, version=1)
        # The same events again at free versions: their event ids are taken.
        with pytest.raises(RawConflictError):
            await side.append_batches([events[:1]], exact=False, version=5)
        assert await target.count("minimal") == 2
        await side.append_batches([events[2:]], exact=False, version=2)
        assert await target.count("minimal") == 3
        assert await side.read_stream("Bench", "Account", "taken") == 3


async def _fetch(url: str, sql: str) -> list[tuple[Any, ...]]:
    async with pupsourcing_async.connect(url, max_size=1) as db, db.transaction() as tx:
        return await RawSQL(db.dialect).fetch(tx, sql)


async def _load(target: Target, side: Side, aggregates: int, each: int) -> None:
    for index in range(aggregates):
        await target.sides[side].append_batches([make_events(f"load-{index}", each)], exact=False)


async def test_minimal_projection_moves_read_model_and_checkpoint_together(
    backend: str, url: str
) -> None:
    prefix = f"psb_{secrets.token_hex(4)}_"
    async with _target(backend, url, ["minimal"], prefix) as target:
        side = target.sides["minimal"]
        await _load(target, "minimal", 5, 30)
        assert await side.catch_up("p", 40, upsert=False) == 150
        assert await side.catch_up("p", 40, upsert=True) == 150
        # It resumes from its checkpoint: nothing is handled twice.
        assert await side.catch_up("p", 40, upsert=True) == 0
        tables = MinimalTables(prefix)
        counts = await _fetch(url, f"SELECT aggregate_id, events FROM {tables.read_model}")
        assert sorted((str(a), int(n)) for a, n in counts) == [(f"load-{i}", 30) for i in range(5)]
        checkpoints = await _fetch(url, f"SELECT last_global_position FROM {tables.checkpoints}")
        assert [int(position) for (position,) in checkpoints] == [150]


def _peer_url(backend: str, url: str, prefix: str) -> tuple[str, str]:
    """A URL that reaches eventsourcing's tables, and the qualifier of their names."""
    if backend == "postgres":
        return url, f"{postgres_schema(prefix)}."
    directory, name = Path(_path(url)).parent, Path(_path(url)).name
    return f"sqlite:///{directory / f'.{name}-{prefix}eventsourcing.db'}", ""


async def test_eventsourcing_side_refuses_taken_versions_and_tracks(backend: str, url: str) -> None:
    prefix = f"psb_{secrets.token_hex(4)}_"
    async with _target(backend, url, ["eventsourcing"], prefix) as target:
        if backend == "mysql":
            assert "eventsourcing" not in target.sides
            assert target.notes == ["eventsourcing has no MySQL recorder; not run on this database"]
            return
        if not INSTALLED:
            assert "eventsourcing" not in target.sides
            assert target.notes[0].startswith("eventsourcing skipped: ")
            pytest.skip("eventsourcing is not installed (the bench extra)")
        persistence = importlib.import_module("eventsourcing.persistence")
        side = target.sides["eventsourcing"]
        events = make_events("taken", 3)
        await side.append_singles(events[:2], exact=False)
        with pytest.raises(persistence.IntegrityError):
            await side.append_singles(events[2:], exact=False)
        with pytest.raises(persistence.IntegrityError):
            await side.append_batches([events[1:]], exact=False, version=1)
        assert await target.count("eventsourcing") == 2
        assert await side.read_stream("Bench", "Account", "taken") == 2

        await _load(target, "eventsourcing", 4, 25)
        assert await side.read_all(30) == 102
        assert await side.catch_up("p", 30, upsert=True) == 102
        assert await side.catch_up("p", 30, upsert=True) == 0
        peer, schema = _peer_url(backend, url, prefix)
        counts = await _fetch(peer, f"SELECT aggregate_id, events FROM {schema}{READ_MODEL_TABLE}")
        expected = [("load-0", 25), ("load-1", 25), ("load-2", 25), ("load-3", 25), ("taken", 2)]
        assert sorted((str(a), int(n)) for a, n in counts) == expected
        rows = await _fetch(peer, f"SELECT count(*) FROM {schema}{EVENTS_TABLE}")
        assert rows == [(102,)]


async def test_missing_eventsourcing_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peer_eventsourcing, "_installed", lambda name: name != "eventsourcing")
    options = ["--db", "sqlite", "--quick", "--only", "W1", "--sqlite-path"]
    printed: list[str] = []
    args = cli.parse_args([*options, str(tmp_path / "events.db")])
    assert await cli.run(args, printed.append, lambda _: None) == 0
    text = "\n".join(printed)
    notes = [line for line in text.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: eventsourcing skipped: eventsourcing not installed (pip install -e '.[bench]')"
    ]
    rows = _table(text, "minimal ev/s")
    assert len(rows) == 2
    assert all("eventsourcing ev/s" not in cells for cells in rows.values())
