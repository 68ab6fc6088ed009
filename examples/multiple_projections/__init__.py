"""Several projections running together. ``python -m examples.multiple_projections``."""
