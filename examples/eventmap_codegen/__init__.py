"""Typed event mapping, generated: pupsourcing's order example on an aggregate.

Run ``python -m examples.eventmap_codegen`` from the repository root (SQLite by default,
``--url`` for PostgreSQL or MySQL). See README.md.
"""
