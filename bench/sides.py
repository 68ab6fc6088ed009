"""The sides a benchmark compares, and the ratios its tables print.

A side is one implementation of the workloads (:class:`bench.common.StoreSide`), on
tables of its own. Every database's target opens the sides it can (``open_target`` in
``bench.postgres``, ``bench.sqlite``, ``bench.mysql``); rounds alternate between them in
the order of :data:`SIDE_SPECS`, and each table has one column per side and one per
entry of :data:`RATIOS`.

- ``library``: pupsourcing_async itself (:class:`bench.common.LibrarySide`).
- ``raw``: hand-written driver code that sends the library's own SQL (head upsert and
  insert, a transaction per page): what the library costs over its own SQL.
- ``minimal``: the minimal correct hand-written baseline (``bench.minimal_postgres``,
  ``bench.minimal_sqlite``, ``bench.minimal_mysql``): what a user who writes an event
  table by hand reaches for, and what the library is measured against.
- ``eventsourcing``: the peer library's recorders (:mod:`bench.peer_eventsourcing`), on
  PostgreSQL and SQLite, when it is installed.

Adding a side that runs on the library's own ``Database`` and tables (another way of
appending, say): give its class (``(Database, ReadModel) -> StoreSide``) as
``on_library`` of a new :class:`SideSpec`, name the workloads it runs, and add its
ratio to :data:`RATIOS`. Every database then opens it beside ``library``, on the same
tables, and the runner, the tables and ``--sides`` pick it up.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from pupsourcing_async import Database

from .common import LibrarySide, ReadModel, Side, StoreSide

__all__ = [
    "ALL_WORKLOADS",
    "RATIOS",
    "SIDE_SPECS",
    "SideSpec",
    "library_sides",
    "parse_sides",
    "runs",
]

#: Every workload key.
ALL_WORKLOADS = frozenset({"W1", "W2", "W3", "W4", "W5", "W6"})


@dataclass(frozen=True)
class SideSpec:
    """A registry entry.

    Attributes:
        name: The side's key (``--sides``, per-round lines).
        column: Its name in table headers.
        short: Its name in ratio headers (``lib/min``).
        summary: What it is, one line, printed under each table.
        workloads: The workload keys it runs; its cell is ``-`` in the others.
        on_library: For a side that runs on the library's ``Database`` and its tables,
            how to make it; ``None`` for a side each database opens itself.
    """

    name: Side
    column: str
    short: str
    summary: str
    workloads: frozenset[str] = ALL_WORKLOADS
    on_library: Callable[[Database, ReadModel], StoreSide] | None = None


#: Every side, in the order rounds alternate and columns appear.
SIDE_SPECS: dict[Side, SideSpec] = {
    spec.name: spec
    for spec in (
        SideSpec(
            "library",
            "library",
            "lib",
            "pupsourcing_async: db.transaction() + db.store.append, read_events, "
            "read_aggregate_stream, ONE_OFF/CONTINUOUS processors",
            on_library=LibrarySide,
        ),
        SideSpec(
            "raw",
            "same-SQL",
            "same",
            "hand-written driver code sending the library's own SQL (head upsert + insert, "
            "a transaction per page, checkpoint per batch)",
        ),
        SideSpec(
            "minimal",
            "minimal",
            "min",
            "minimal hand-written driver code: plain INSERT with a unique (aggregate, "
            "version) key on a held connection, plain SELECT pages, no gap safety",
        ),
        SideSpec(
            "eventsourcing",
            "eventsourcing",
            "es",
            "eventsourcing's recorders (insert_events, select_notifications, select_events, "
            "tracking); synchronous, each writer or reader in a thread of its own",
            workloads=frozenset({"W1", "W2", "W3", "W4", "W5"}),
        ),
    )
}

#: The ratios each table prints, ``(numerator, denominator)``, in column order.
RATIOS: tuple[tuple[Side, Side], ...] = (
    ("library", "minimal"),
    ("library", "raw"),
    ("eventsourcing", "minimal"),
)


def runs(side: Side, key: str) -> bool:
    """Whether ``side`` runs the workload ``key``."""
    return key in SIDE_SPECS[side].workloads


def library_sides(
    db: Database, read_model: ReadModel, wanted: Collection[Side]
) -> dict[Side, StoreSide]:
    """The wanted sides that run on the library's ``db`` and its tables."""
    return {
        name: spec.on_library(db, read_model)
        for name, spec in SIDE_SPECS.items()
        if spec.on_library is not None and name in wanted
    }


def parse_sides(text: str) -> list[Side]:
    """The sides a comma-separated list names, in registry order.

    Raises:
        ValueError: a name is not a side, or none is given.
    """
    names = {name.strip().lower() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(SIDE_SPECS))
    if unknown:
        raise ValueError(f"unknown side {', '.join(unknown)}; known: {', '.join(SIDE_SPECS)}")
    if not names:
        raise ValueError("no side given")
    return [name for name in SIDE_SPECS if name in names]
