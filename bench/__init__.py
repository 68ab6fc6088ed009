"""Benchmarks of pupsourcing_async against hand-written driver code and its peer.

Run ``python -m bench --db postgres|sqlite|mysql|all [--quick]`` (see :mod:`bench.cli`).
The modules: ``common`` (sizes, events, the sides' protocol, results), ``sides`` (the
registry of sides and the ratios printed), ``workloads`` (the registry of workloads),
``runner`` (rounds and tables), ``latency`` (W6, with ``writer``, its writer in another
process); per database a target with the same-SQL side (``postgres``, ``sqlite``,
``mysql``; with ``sqlite_pool`` and ``mysql_driver``), the minimal hand-written baseline
(``minimal_postgres``, ``minimal_sqlite``, ``minimal_mysql``), and the peer library
(``peer_eventsourcing``, PostgreSQL and SQLite). ``python -m bench.chart`` draws
throughput against concurrent writers, ``python -m bench.scale`` runs the scale
measurements (memory, partitions, append latency against table size), and ``python -m
bench.store_bench --url URL`` runs the PostgreSQL part under its former command line.
"""
