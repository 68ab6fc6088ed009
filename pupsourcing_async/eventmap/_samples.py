"""Sample payloads for the generated tests: valid, canonical JSON data for a dataclass.

Every scalar gets a distinct value (a counter runs through the fields), so a test that
round-trips the sample notices fields that were swapped or dropped. Values are already in
the form the codec writes, so the encoded payload equals the sample exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import types
import typing
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

__all__ = ["defaulted_fields", "sample_payload"]

_BASE_TIME = datetime(2024, 1, 1, 9, 30, tzinfo=timezone(timedelta(hours=2)))
_BASE_DATE = date(2024, 1, 1)


def sample_payload(cls: type[Any]) -> dict[str, Any]:
    """JSON data for dataclass ``cls`` with every field set, defaults included."""
    data: dict[str, Any] = _sample(cls, "", itertools.count(1), frozenset())
    return data


def defaulted_fields(cls: type[Any]) -> list[str]:
    """The names of ``cls``'s fields that may be missing from a payload."""
    return [
        field.name
        for field in dataclasses.fields(cls)
        if field.init
        and (
            field.default is not dataclasses.MISSING
            or field.default_factory is not dataclasses.MISSING
        )
    ]


def _sample(declared: object, name: str, counter: Iterator[int], seen: frozenset[type]) -> Any:
    if isinstance(declared, typing.NewType):
        return _sample(declared.__supertype__, name, counter, seen)
    origin = typing.get_origin(declared)
    args = typing.get_args(declared)
    if origin is typing.Annotated:
        return _sample(args[0], name, counter, seen)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        if declared in seen:
            raise _Recursive
        hints = typing.get_type_hints(declared)
        return {
            field.name: _sample(hints[field.name], field.name, counter, seen | {declared})
            for field in dataclasses.fields(declared)
            if field.init
        }
    if isinstance(declared, type) and issubclass(declared, Enum):
        return next(iter(declared)).value
    if origin is typing.Union or origin is types.UnionType or origin is typing.Literal:
        if origin is typing.Literal:
            return args[0]
        inner = next(arg for arg in args if arg is not type(None))
        try:
            return _sample(inner, name, counter, seen)
        except _Recursive:
            return None
    if declared is list or origin is list or declared is tuple or origin is tuple:
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return [] if args == ((),) else [_sample(a, name, counter, seen) for a in args]
        try:
            return [_sample(args[0] if args else Any, name, counter, seen)]
        except _Recursive:
            return []
    if declared is dict or origin is dict:
        try:
            return {"key": _sample(args[1] if args else Any, name, counter, seen)}
        except _Recursive:
            return {}
    return _scalar(declared, name, next(counter))


def _scalar(declared: object, name: str, n: int) -> Any:
    if declared is str:
        return f"{name} {n}"
    if declared is bool:
        return n % 2 == 1
    if declared is int:
        return n
    if declared is float:
        return n + 0.5
    if declared is Decimal:
        return f"{n}.50"
    if declared is datetime:
        return (_BASE_TIME + timedelta(days=n, minutes=n)).isoformat()
    if declared is date:
        return (_BASE_DATE + timedelta(days=n)).isoformat()
    if declared is uuid.UUID:
        return str(uuid.UUID(int=n))
    if declared is type(None) or declared is None:
        return None
    # Any or object: any JSON value will do.
    return f"{name} {n}"


class _Recursive(Exception):
    """A dataclass contains itself; the nearest optional or collection stops the sample."""
