"""What the web examples accept from a client: one set of rules for FastAPI and aiohttp.

Everything a client sends ends up in an event, and an event stays in the log for good: a
value the read model cannot hold (an amount past BIGINT, a NUL that PostgreSQL's text
refuses) would stop the projection on every database that replays it. So the rules are
strict, and checked before anything is appended.
"""

from __future__ import annotations

import unicodedata

from pupsourcing_async import es

__all__ = [
    "MAX_ACCOUNT_ID",
    "MAX_CENTS",
    "MAX_OWNER",
    "InvalidInput",
    "account_id",
    "cents",
    "owner",
]

#: The store's own limit for an aggregate id.
MAX_ACCOUNT_ID = es.MAX_TEXT_LENGTH
MAX_OWNER = 100
#: Ten billion dollars in cents: a balance of BIGINT holds nearly a million such deposits.
MAX_CENTS = 1_000_000_000_000


class InvalidInput(ValueError):
    """A client sent something these rules refuse; the message says what."""


def _text(what: str, value: object, longest: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidInput(f"{what} must not be empty")
    if len(value) > longest:
        raise InvalidInput(f"{what} must be at most {longest} characters, got {len(value)}")
    # Control characters include NUL, which PostgreSQL's text cannot hold; surrogates are
    # not UTF-8.
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise InvalidInput(f"{what} must not contain control characters")
    return value


def account_id(value: object) -> str:
    """An account id: 1 to 255 characters, none of them a control character."""
    return _text("account id", value, MAX_ACCOUNT_ID)


def owner(value: object) -> str:
    """An owner's name: 1 to 100 characters, none of them a control character."""
    return _text("owner", value, MAX_OWNER)


def cents(value: object) -> int:
    """An amount: a whole number of cents from 1 to ``MAX_CENTS``; never a bool."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"amount must be a whole number of cents, got {type(value).__name__}")
    if not 0 < value <= MAX_CENTS:
        raise InvalidInput(f"amount must be from 1 to {MAX_CENTS} cents, got {value}")
    return value
