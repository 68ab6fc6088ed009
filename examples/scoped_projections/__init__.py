"""Projections that see only some aggregates. ``python -m examples.scoped_projections``."""
