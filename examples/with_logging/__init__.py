"""Logging: the standard ``logging`` module, or a logger of your own.
``python -m examples.with_logging``."""
