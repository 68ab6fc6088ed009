"""What event metadata may hold: JSON that every supported database stores as given.

Each database checks JSON in its own way, and an append must not pass validation here
only to fail in the driver. So metadata is held to what all of them accept and read back
equal: UTF-8 JSON text with

- no ``\\u0000`` escape (PostgreSQL's ``jsonb`` cannot hold NUL),
- no lone UTF-16 surrogate escape such as ``"\\ud800"`` (``jsonb`` and MariaDB refuse them),
- at most :data:`MAX_DEPTH` nested arrays and objects (MariaDB's ``JSON_VALID`` refuses a
  32nd level),
- numbers a 64-bit double or integer holds (MySQL 8's JSON type stores numbers so).
"""

from __future__ import annotations

import json
import math

__all__ = ["MAX_DEPTH", "metadata_problem"]

#: The deepest nesting of arrays and objects metadata may have.
MAX_DEPTH = 31

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class _Refused(ValueError):
    pass


def _constant(name: str) -> object:
    raise _Refused(f"{name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} does not fit a 64-bit double")
    return value


def _int(text: str) -> int:
    # Digits beyond what a 64-bit integer holds cannot be stored exactly by MySQL 8; the
    # length check keeps int() away from numbers too long to parse quickly.
    if len(text) > 21 or not _INT_MIN <= int(text) <= _INT_MAX:
        raise _Refused(f"the integer {text[:40]} does not fit 64 bits")
    return int(text)


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_float, parse_int=_int)


def _too_deep(text: str) -> bool:
    """Whether arrays and objects nest deeper than ``MAX_DEPTH``, found without recursion."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _strings(value: object) -> list[str]:
    """Every string in a decoded JSON value, keys included (iteratively)."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            found.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def metadata_problem(metadata: bytes) -> str | None:
    """Why ``metadata`` cannot be stored as event metadata, or ``None`` if it can."""
    try:
        text = metadata.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"must be UTF-8 JSON: {err}"
    # Counting brackets is cheap and bounds the nesting from above; only metadata with
    # many of them is scanned, before the (recursive) parser sees it.
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(text):
        return f"must not nest arrays and objects more than {MAX_DEPTH} deep"
    try:
        value = _DECODER.decode(text)
    except _Refused as err:
        return f"must be JSON every database stores: {err}"
    except ValueError as err:
        return f"must be UTF-8 JSON: {err}"
    if "\\u" in text:
        if "\\u0000" in text and any("\x00" in s for s in _strings(value)):
            return "must not contain the JSON escape \\u0000"
        for string in _strings(value):
            try:
                string.encode("utf-8")
            except UnicodeEncodeError:
                return "must not contain a lone UTF-16 surrogate escape such as \\ud800"
    return None
