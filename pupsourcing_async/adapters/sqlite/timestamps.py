"""Timestamps as SQLite tables hold them: text, in UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["format_timestamp", "parse_timestamp"]


def format_timestamp(moment: datetime) -> str:
    """A timestamp as stored: UTC, microseconds, the format the Go library writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_timestamp(text: str) -> datetime:
    """A stored timestamp, in any format SQLite or the Go library writes, as aware UTC.

    Text without an offset is taken as UTC (the Go library must be given UTC times).

    Raises:
        ValueError: ``text`` is no timestamp.
    """
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = _parse_loosely(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# Years of fewer than four digits (written before they were refused), fractions of any
# length, Go's "+0000 UTC"-style zone suffixes.
_LOOSE = re.compile(
    r"\s*(\d{1,4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"\s*(?:(Z)|([+-])(\d{2}):?(\d{2}))?(?:\s+[A-Z]{1,5})?\s*\Z"
)


def _parse_loosely(text: str) -> datetime:
    match = _LOOSE.match(text)
    if match is None:
        raise ValueError(f"not a timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    micros = int((match.group(7) or "0")[:6].ljust(6, "0"))
    zone = UTC
    if match.group(9):
        offset = timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        zone = timezone(-offset if match.group(9) == "-" else offset)
    return datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
