"""Adding workers to a running projection. ``python -m examples.scaling``."""
