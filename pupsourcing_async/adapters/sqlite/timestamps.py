"""Timestamps as SQLite tables hold them: text, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def format_timestamp(moment: datetime) -> str:
    """A timestamp as stored: UTC, microseconds, the format the Go library writes."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def parse_timestamp(text: str) -> datetime:
    """A stored timestamp, in any format SQLite or the Go library writes, as aware UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
