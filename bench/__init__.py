"""Benchmarks of pupsourcing_async against hand-written driver code.

Run ``python -m bench --db postgres|sqlite|mysql|all [--quick]`` (see :mod:`bench.cli`).
The modules: ``common`` (sizes, events, the two sides), ``workloads`` (the registry of
workloads), ``runner`` (rounds and tables), and one module per database (``postgres``,
``sqlite``, ``mysql``) with its raw driver side. ``python -m bench.store_bench --url URL``
runs the PostgreSQL part, as before.
"""
