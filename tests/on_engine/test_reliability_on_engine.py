"""Reliability (lost connections, racing writers) on a database opened on a SQLAlchemy engine."""

from tests.test_reliability import *  # noqa: F403
