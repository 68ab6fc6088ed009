"""JSON payloads for event dataclasses: deterministic bytes that decode to equal values.

The encoding follows the dataclass's type hints, not the runtime values, so one class
always gives one payload shape and decoding restores exactly the declared types:

=============================  ===========================================================
Declared type                  JSON
=============================  ===========================================================
``str``, ``int``, ``bool``     string, integer, ``true``/``false``
``float``                      number (an integer is accepted when reading); no NaN or
                               infinity
``None``                       ``null``
``Decimal``                    string, exactly ``str(value)``, e.g. ``"12.50"`` (numbers are
                               accepted when reading); finite values only
``datetime``                   string, ISO 8601 with its UTC offset,
                               ``"2024-05-01T09:30:00+02:00"``; naive datetimes are rejected
                               both ways (the offset is kept, a zone's name is not)
``date``                       string, ``"2024-05-01"``
``UUID``                       string, canonical lower-case form
``Enum``                       the member's value, which must be a string or an integer
``Literal[...]``               the literal value (strings, integers, booleans, ``None``)
a dataclass                    object, fields in declaration order; a missing field takes
                               its default, unknown keys are ignored; ``init=False`` fields
                               are not stored
``list[X]``, ``tuple[X, ...]``,  array
``tuple[X, Y]``
``dict[str, X]``               object, keys sorted
``X | None``                   ``null`` or ``X``
``Any``, ``object``            any JSON value as it is (tuples become lists, keys sorted)
=============================  ===========================================================

``NewType`` and ``Annotated`` are unwrapped. Anything else (sets, other unions, arbitrary
classes) is refused with a ``TypeError`` that names the field when the class is checked,
which the registry does when the class is registered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import types
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeVar

from ..es import _JSON

__all__ = [
    "check_event_class",
    "decode_data",
    "decode_payload",
    "encode_data",
    "encode_payload",
    "parse_payload",
]

T = TypeVar("T")


class _Mismatch(Exception):
    """A value does not fit its declared type; collects the path while it propagates."""

    def __init__(self, message: str, *, wrong_type: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.wrong_type = wrong_type
        self.path: list[str] = []

    def where(self, root: str) -> str:
        return root + "".join(reversed(self.path))


def _kind(data: object) -> str:
    """What a value is, in the words of an error message."""
    if data is None:
        return "null"
    return type(data).__name__


class _Codec:
    """Turns one declared type's values into JSON data and back."""

    __slots__ = ()

    def encode(self, value: Any) -> Any:
        raise NotImplementedError

    def decode(self, data: Any) -> Any:
        raise NotImplementedError


class _Str(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise _Mismatch(f"expected str, got {_kind(value)}", wrong_type=True)
        return value

    def decode(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise _Mismatch(f"expected a string, got {_kind(data)}")
        return data


class _Int(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Mismatch(f"expected int, got {_kind(value)}", wrong_type=True)
        return int(value)

    def decode(self, data: Any) -> Any:
        if type(data) is not int:
            raise _Mismatch(f"expected an integer, got {_kind(data)}")
        return data


class _Float(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Mismatch(f"expected float, got {_kind(value)}", wrong_type=True)
        number = float(value)
        if not math.isfinite(number):
            raise _Mismatch(f"{number} cannot be stored as JSON")
        return number

    def decode(self, data: Any) -> Any:
        if type(data) is not float and type(data) is not int:
            raise _Mismatch(f"expected a number, got {_kind(data)}")
        return float(data)


class _Bool(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _Mismatch(f"expected bool, got {_kind(value)}", wrong_type=True)
        return value

    def decode(self, data: Any) -> Any:
        if not isinstance(data, bool):
            raise _Mismatch(f"expected true or false, got {_kind(data)}")
        return data


class _None(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if value is not None:
            raise _Mismatch(f"expected None, got {_kind(value)}", wrong_type=True)
        return None

    def decode(self, data: Any) -> Any:
        if data is not None:
            raise _Mismatch(f"expected null, got {_kind(data)}")
        return None


class _Decimal(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, Decimal):
            raise _Mismatch(f"expected Decimal, got {_kind(value)}", wrong_type=True)
        if not value.is_finite():
            raise _Mismatch(f"Decimal {value} is not finite")
        return str(value)

    def decode(self, data: Any) -> Any:
        if isinstance(data, str):
            try:
                number = Decimal(data)
            except InvalidOperation:
                raise _Mismatch(f"{data!r} is not a decimal number") from None
        elif type(data) is int:
            number = Decimal(data)
        elif type(data) is float:
            # repr() is the shortest text that reads back as this float: Decimal("0.1"), not
            # the binary value Decimal(0.1) == 0.1000000000000000055511151231257827...
            number = Decimal(repr(data))
        else:
            raise _Mismatch(f"expected a decimal string, got {_kind(data)}")
        if not number.is_finite():
            raise _Mismatch(f"{data!r} is not a finite decimal number")
        return number


class _DateTime(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, datetime):
            raise _Mismatch(f"expected datetime, got {_kind(value)}", wrong_type=True)
        if value.utcoffset() is None:
            raise _Mismatch("naive datetime: give it a timezone (datetime.now(UTC))")
        return value.isoformat()

    def decode(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise _Mismatch(f"expected an ISO 8601 datetime string, got {_kind(data)}")
        try:
            value = datetime.fromisoformat(data)
        except ValueError:
            raise _Mismatch(f"{data!r} is not an ISO 8601 datetime") from None
        if value.utcoffset() is None:
            raise _Mismatch(f"{data!r} has no UTC offset")
        return value


class _Date(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, date) or isinstance(value, datetime):
            raise _Mismatch(f"expected date, got {_kind(value)}", wrong_type=True)
        return value.isoformat()

    def decode(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise _Mismatch(f"expected an ISO 8601 date string, got {_kind(data)}")
        try:
            return date.fromisoformat(data)
        except ValueError:
            raise _Mismatch(f"{data!r} is not an ISO 8601 date") from None


class _UUID(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, uuid.UUID):
            raise _Mismatch(f"expected UUID, got {_kind(value)}", wrong_type=True)
        return str(value)

    def decode(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise _Mismatch(f"expected a UUID string, got {_kind(data)}")
        try:
            return uuid.UUID(data)
        except ValueError:
            raise _Mismatch(f"{data!r} is not a UUID") from None


class _Enum(_Codec):
    __slots__ = ("cls",)

    def __init__(self, cls: type[Enum]) -> None:
        self.cls = cls

    def encode(self, value: Any) -> Any:
        if not isinstance(value, self.cls):
            raise _Mismatch(f"expected {self.cls.__name__}, got {_kind(value)}", wrong_type=True)
        return value.value

    def decode(self, data: Any) -> Any:
        if isinstance(data, bool):  # True would find the member whose value is 1
            raise _Mismatch(f"{data!r} is not a {self.cls.__name__} value")
        try:
            return self.cls(data)
        except ValueError:
            raise _Mismatch(f"{data!r} is not a {self.cls.__name__} value") from None


class _Literal(_Codec):
    __slots__ = ("values",)

    def __init__(self, values: tuple[object, ...]) -> None:
        self.values = values

    def _check(self, value: Any, wrong_type: bool) -> Any:
        # `in` would take 1 for True: compare types as well.
        if not any(type(value) is type(v) and value == v for v in self.values):
            allowed = ", ".join(repr(v) for v in self.values)
            raise _Mismatch(f"expected one of {allowed}, got {value!r}", wrong_type=wrong_type)
        return value

    def encode(self, value: Any) -> Any:
        return self._check(value, True)

    def decode(self, data: Any) -> Any:
        return self._check(data, False)


def _plain_json(value: Any) -> Any:
    """``value`` as plain JSON data, with sorted keys, or a mismatch naming what is not."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Mismatch(f"{value} cannot be stored as JSON")
        return value
    if isinstance(value, (list, tuple)):
        return [_item(index, item, _plain_json) for index, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key in sorted(value, key=_sort_key):
            if not isinstance(key, str):
                raise _Mismatch(f"JSON object keys must be strings, got {_kind(key)}")
            out[key] = _entry(key, value[key], _plain_json)
        return out
    raise _Mismatch(f"{_kind(value)} is not a JSON value", wrong_type=True)


def _sort_key(key: object) -> str:
    return key if isinstance(key, str) else repr(key)


def _item(index: int, value: Any, convert: Callable[[Any], Any]) -> Any:
    try:
        return convert(value)
    except _Mismatch as err:
        err.path.append(f"[{index}]")
        raise


def _entry(key: str, value: Any, convert: Callable[[Any], Any]) -> Any:
    try:
        return convert(value)
    except _Mismatch as err:
        err.path.append(f"[{key!r}]")
        raise


class _AnyJSON(_Codec):
    __slots__ = ()

    def encode(self, value: Any) -> Any:
        return _plain_json(value)

    def decode(self, data: Any) -> Any:
        return data


class _Optional(_Codec):
    __slots__ = ("inner",)

    def __init__(self, inner: _Codec) -> None:
        self.inner = inner

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, data: Any) -> Any:
        return None if data is None else self.inner.decode(data)


class _List(_Codec):
    __slots__ = ("item", "make")

    def __init__(self, item: _Codec, make: Callable[[list[Any]], Any]) -> None:
        self.item = item
        self.make = make

    def encode(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected a list or tuple, got {_kind(value)}", wrong_type=True)
        encode = self.item.encode
        return [_item(index, item, encode) for index, item in enumerate(value)]

    def decode(self, data: Any) -> Any:
        if not isinstance(data, list):
            raise _Mismatch(f"expected an array, got {_kind(data)}")
        decode = self.item.decode
        return self.make([_item(index, item, decode) for index, item in enumerate(data)])


class _FixedTuple(_Codec):
    __slots__ = ("items",)

    def __init__(self, items: tuple[_Codec, ...]) -> None:
        self.items = items

    def _length(self, size: int, wrong_type: bool) -> None:
        if size != len(self.items):
            raise _Mismatch(f"expected {len(self.items)} items, got {size}", wrong_type=wrong_type)

    def encode(self, value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(f"expected a tuple, got {_kind(value)}", wrong_type=True)
        self._length(len(value), True)
        return [
            _item(index, item, codec.encode)
            for index, (codec, item) in enumerate(zip(self.items, value, strict=True))
        ]

    def decode(self, data: Any) -> Any:
        if not isinstance(data, list):
            raise _Mismatch(f"expected an array, got {_kind(data)}")
        self._length(len(data), False)
        return tuple(
            _item(index, item, codec.decode)
            for index, (codec, item) in enumerate(zip(self.items, data, strict=True))
        )


class _Dict(_Codec):
    __slots__ = ("value",)

    def __init__(self, value: _Codec) -> None:
        self.value = value

    def encode(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected a dict, got {_kind(value)}", wrong_type=True)
        encode = self.value.encode
        out = {}
        for key in sorted(value, key=_sort_key):
            if not isinstance(key, str):
                raise _Mismatch(f"dict keys must be strings, got {_kind(key)}", wrong_type=True)
            out[key] = _entry(key, value[key], encode)
        return out

    def decode(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _Mismatch(f"expected an object, got {_kind(data)}")
        decode = self.value.decode
        return {key: _entry(key, item, decode) for key, item in data.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    codec: _Codec
    required: bool


class _Dataclass(_Codec):
    __slots__ = ("cls", "fields")

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        # Filled in after construction, so that a class can refer to itself.
        self.fields: tuple[_Field, ...] = ()

    def encode(self, value: Any) -> Any:
        if not isinstance(value, self.cls):
            raise _Mismatch(f"expected {self.cls.__name__}, got {_kind(value)}", wrong_type=True)
        out = {}
        for field in self.fields:
            try:
                out[field.name] = field.codec.encode(getattr(value, field.name))
            except _Mismatch as err:
                err.path.append(f".{field.name}")
                raise
        return out

    def decode(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise _Mismatch(f"expected an object, got {_kind(data)}")
        values = {}
        for field in self.fields:
            if field.name in data:
                try:
                    values[field.name] = field.codec.decode(data[field.name])
                except _Mismatch as err:
                    err.path.append(f".{field.name}")
                    raise
            elif field.required:
                missing = _Mismatch("missing, and the field has no default")
                missing.path.append(f".{field.name}")
                raise missing
        try:
            return self.cls(**values)
        except (TypeError, ValueError) as err:
            raise _Mismatch(f"{self.cls.__name__}() refused the values: {err}") from err


_SCALARS: dict[object, _Codec] = {
    str: _Str(),
    int: _Int(),
    float: _Float(),
    bool: _Bool(),
    type(None): _None(),
    None: _None(),
    Decimal: _Decimal(),
    datetime: _DateTime(),
    date: _Date(),
    uuid.UUID: _UUID(),
    Any: _AnyJSON(),
    object: _AnyJSON(),
}

# Compiled codecs by declared type. Classes are immutable once defined, so entries never
# go stale; a class that fails to compile is not kept, nor anything compiled on its way.
_CODECS: dict[object, _Codec] = dict(_SCALARS)

_SUPPORTED = (
    "str, int, float, bool, None, Decimal, datetime, date, UUID, Enum, Literal, dataclasses, "
    "list[X], tuple[X, ...], dict[str, X], X | None or Any"
)


def _compile(declared: object, where: str) -> _Codec:
    try:
        cached = _CODECS.get(declared)
    except TypeError:  # an unhashable annotation, such as Literal[[1]]
        cached = None
    if cached is not None:
        return cached
    if isinstance(declared, typing.NewType):
        return _compile(declared.__supertype__, where)
    origin = typing.get_origin(declared)
    args = typing.get_args(declared)
    codec: _Codec
    if origin is typing.Annotated:
        return _compile(args[0], where)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return _compile_dataclass(declared)
    if isinstance(declared, type) and issubclass(declared, Enum):
        codec = _compile_enum(declared, where)
    elif origin is typing.Union or origin is types.UnionType:
        others = [arg for arg in args if arg is not type(None)]
        if len(others) != 1 or len(args) != 2:
            raise TypeError(
                f"{where}: unsupported type {_show(declared)}: of unions only X | None "
                "can be decoded unambiguously"
            )
        codec = _Optional(_compile(others[0], where))
    elif origin is typing.Literal:
        for value in args:
            if value is not None and type(value) not in (str, int, bool):
                raise TypeError(
                    f"{where}: Literal values must be str, int, bool or None, got {value!r}"
                )
        codec = _Literal(args)
    elif declared is list or origin is list:
        codec = _List(_compile(args[0] if args else Any, f"{where}[]"), list)
    elif declared is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            codec = _List(_compile(args[0] if args else Any, f"{where}[]"), tuple)
        else:
            items = tuple(_compile(arg, f"{where}[{i}]") for i, arg in enumerate(args))
            codec = _FixedTuple(() if args == ((),) else items)
    elif declared is dict or origin is dict:
        key, value = args if args else (str, Any)
        if key is not str:
            raise TypeError(f"{where}: dict keys must be str (JSON keys are strings)")
        codec = _Dict(_compile(value, f"{where}[]"))
    else:
        raise TypeError(f"{where}: unsupported type {_show(declared)}; use {_SUPPORTED}")
    with contextlib.suppress(TypeError):  # an unhashable annotation is just not cached
        _CODECS[declared] = codec
    return codec


def _compile_enum(cls: type[Enum], where: str) -> _Codec:
    for member in cls:
        if type(member.value) not in (str, int):
            raise TypeError(
                f"{where}: {cls.__name__}.{member.name} has value {member.value!r}; enum "
                "values must be str or int to be stored as JSON"
            )
    return _Enum(cls)


def _compile_dataclass(cls: type[Any]) -> _Codec:
    codec = _Dataclass(cls)
    # Registered before its fields compile, so that a field may refer back to the class.
    # Should a field fail, whatever compiled since (classes that may refer to this one's
    # empty codec) goes too: entries are only ever appended, so they are the ones after
    # ``mark``.
    mark = len(_CODECS)
    _CODECS[cls] = codec
    compiled = False
    try:
        hints = _type_hints(cls)
        codec.fields = tuple(
            _Field(
                field.name,
                _compile(hints[field.name], f"{cls.__qualname__}.{field.name}"),
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING,
            )
            for field in dataclasses.fields(cls)
            if field.init
        )
        compiled = True
    finally:
        if not compiled:
            for key in list(_CODECS)[mark:]:
                del _CODECS[key]
    return codec


def _type_hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved annotations of ``cls``.

    Raises:
        TypeError: one cannot be resolved (a name not in scope, say).
    """
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError) as err:
        raise TypeError(f"cannot resolve the type hints of {cls.__qualname__}: {err}") from err


def _show(declared: object) -> str:
    if isinstance(declared, type):
        return declared.__qualname__
    return repr(declared).replace("typing.", "")


def _dataclass_codec(cls: object) -> _Codec:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"event classes must be dataclasses, got {cls!r}")
    return _compile(cls, cls.__qualname__)


def check_event_class(cls: type[Any]) -> None:
    """Check that every field of dataclass ``cls`` has a type this codec can store.

    Raises:
        TypeError: ``cls`` is not a dataclass, or a field's type is unsupported; the
            message names the field, e.g. ``OrderPaid.amount``.
    """
    _dataclass_codec(cls)


def encode_data(event: object) -> dict[str, Any]:
    """``event`` (a dataclass instance) as JSON data, following its class's type hints.

    Raises:
        TypeError: a field holds a value of the wrong type; the message names the field.
        ValueError: a value has no JSON form (a naive datetime, NaN).
    """
    codec = _dataclass_codec(type(event))
    try:
        data: dict[str, Any] = codec.encode(event)
    except _Mismatch as err:
        message = f"{err.where(type(event).__qualname__)}: {err.message}"
        raise (TypeError if err.wrong_type else ValueError)(message) from None
    return data


def encode_payload(event: object) -> bytes:
    """``event`` (a dataclass instance) as compact UTF-8 JSON; equal events give equal bytes.

    Raises:
        TypeError: a field holds a value of the wrong type; the message names the field.
        ValueError: a value has no JSON form (a naive datetime, NaN).
    """
    text = json.dumps(
        encode_data(event), ensure_ascii=False, separators=(",", ":"), allow_nan=False
    )
    return text.encode("utf-8")


def parse_payload(payload: bytes) -> dict[str, Any]:
    """A payload's JSON object, as plain data (for upcasters).

    Raises:
        ValueError: the payload is not UTF-8 JSON, or not a JSON object.
    """
    try:
        data = _JSON.decode(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"payload is not UTF-8 JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"payload must be a JSON object, got {_kind(data)}")
    return data


def decode_data(cls: type[T], data: object) -> T:
    """Build an instance of dataclass ``cls`` from JSON data.

    Raises:
        TypeError: ``cls`` is not a dataclass or has a field of an unsupported type.
        ValueError: the data does not fit ``cls``; the message names the field, e.g.
            ``OrderCreated.lines[0].quantity: expected an integer, got str``.
    """
    codec = _dataclass_codec(cls)
    try:
        event: T = codec.decode(data)
    except _Mismatch as err:
        raise ValueError(f"{err.where(cls.__qualname__)}: {err.message}") from err.__cause__
    return event


def decode_payload(cls: type[T], payload: bytes) -> T:
    """Build an instance of dataclass ``cls`` from a JSON payload.

    Raises:
        TypeError: ``cls`` is not a dataclass or has a field of an unsupported type.
        ValueError: the payload is not a JSON object or does not fit ``cls``.
    """
    return decode_data(cls, parse_payload(payload))
