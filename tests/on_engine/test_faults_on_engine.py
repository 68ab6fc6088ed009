"""Faults (connections killed by the server) on a database opened on a SQLAlchemy engine."""

from tests.test_faults import *  # noqa: F403
