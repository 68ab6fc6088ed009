"""An embedded event store in one SQLite file. ``python -m examples.sqlite_basic``."""
