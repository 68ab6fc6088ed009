"""The store contract on a database opened on a SQLAlchemy engine."""

from tests.test_store_contract import *  # noqa: F403
