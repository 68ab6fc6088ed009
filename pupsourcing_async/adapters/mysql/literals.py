"""Values written into MySQL statements as literals that no ``sql_mode`` can misread.

aiomysql sends statements as text with their parameters escaped in, and it escapes with
backslashes whatever the session's ``sql_mode`` says. With ``NO_BACKSLASH_ESCAPES`` set (on
the server, or by whoever opened the connection) a backslash-escaped quote ends the
string, and the rest of the value runs as SQL. So the store never hands values to the
driver's escaping: it renders each one itself, in a form that means the same in every mode —
binary data and any text that is not plain printable ASCII as hexadecimal literals, numbers
from ``int``, timestamps from their fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

__all__ = ["literal", "render"]


def literal(value: object) -> str:
    """``value`` as an SQL literal.

    Raises:
        TypeError: the store never writes a value of this type.
    """
    kind = type(value)
    if kind is str:
        text: str = value  # type: ignore[assignment]
        # Printable ASCII without a quote or a backslash (the only characters any mode
        # reads specially inside single quotes) can be quoted as it is.
        if text.isascii() and text.isprintable() and "'" not in text and "\\" not in text:
            return f"'{text}'"
        return f"_utf8mb4 X'{text.encode('utf-8').hex()}'"
    if kind is bytes:
        return f"X'{value.hex()}'"  # type: ignore[attr-defined]
    if kind is int:
        return str(int(value))  # type: ignore[call-overload]
    if value is None:
        return "NULL"
    if kind is datetime:
        moment: datetime = value  # type: ignore[assignment]
        return (
            f"'{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {moment.hour:02d}:"
            f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}'"
        )
    raise TypeError(f"no SQL literal for a {kind.__name__}")


def render(sql: str, args: Sequence[object] = ()) -> str:
    """``sql`` with each ``%s`` replaced by the literal of the next of ``args`` (and each
    ``%%`` by ``%``)."""
    return sql % tuple(map(literal, args))
