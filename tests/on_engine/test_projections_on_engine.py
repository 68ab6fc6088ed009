"""Projections on a database opened on a SQLAlchemy engine."""

from tests.test_projections import *  # noqa: F403
