"""Benchmarks for pupsourcing_async; run them as modules, e.g. ``python -m bench.store_bench``."""
