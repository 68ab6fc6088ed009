"""The shortest tour: append, read back, project. ``python -m examples.basic``."""
