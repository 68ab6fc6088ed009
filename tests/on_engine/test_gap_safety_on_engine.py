"""Gap safety under concurrent writers on a database opened on a SQLAlchemy engine."""

from tests.test_gap_safety import *  # noqa: F403
