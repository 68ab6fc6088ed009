"""Benchmarks of pupsourcing_async against hand-written driver code.

Run ``python -m bench --db postgres|sqlite|mysql|all [--quick]`` (see :mod:`bench.cli`).
The modules: ``common`` (sizes, events, the two sides), ``workloads`` (the registry of
workloads), ``runner`` (rounds and tables), ``latency`` (W6, with ``writer``, its writer
in another process), and one module per database (``postgres``, ``sqlite``, ``mysql``)
with its raw driver side. ``python -m bench.chart`` draws throughput against concurrent
writers, ``python -m bench.scale`` runs the scale measurements (memory, partitions,
append latency against table size), and ``python -m bench.store_bench --url URL`` runs the
PostgreSQL part under its former command line.
"""
