"""JSON payloads of event dataclasses: every supported type, exact round trips, errors."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum, StrEnum
from typing import Any, Literal, NewType
from zoneinfo import ZoneInfo

import pytest

from pupsourcing_async.eventmap import codec


class Color(StrEnum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Shape(Enum):
    SQUARE = (1, 1)


SKU = NewType("SKU", str)


@dataclass(frozen=True, slots=True)
class Money:
    amount: Decimal
    currency: str = "EUR"


@dataclass(frozen=True, slots=True)
class Line:
    sku: SKU
    quantity: int
    price: Money


@dataclass(frozen=True, slots=True)
class Everything:
    text: str
    count: int
    ratio: float
    flag: bool
    nothing: None
    amount: Decimal
    at: datetime
    day: date
    ident: uuid.UUID
    color: Color
    level: Level
    kind: Literal["a", "b"]
    lines: list[Line]
    pair: tuple[int, str]
    many: tuple[int, ...]
    labels: dict[str, int]
    extra: dict[str, Any]
    maybe: Money | None
    fallback: str = "default"
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    children: list[Node] = field(default_factory=list)
    parent: Node | None = None


def everything(**changes: Any) -> Everything:
    values: dict[str, Any] = {
        "text": 'héllo "quoted" \n',
        "count": 2**70,
        "ratio": 0.1,
        "flag": False,
        "nothing": None,
        "amount": Decimal("12.50"),
        "at": datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2))),
        "day": date(2024, 2, 29),
        "ident": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "color": Color.GREEN,
        "level": Level.HIGH,
        "kind": "b",
        "lines": [Line(SKU("mug"), 2, Money(Decimal("7.50"), "USD"))],
        "pair": (1, "one"),
        "many": (3, 2, 1),
        "labels": {"b": 2, "a": 1},
        "extra": {"z": [1, (2, 3)], "a": {"nested": None}},
        "maybe": None,
    }
    values.update(changes)
    return Everything(**values)


def test_every_supported_type_round_trips_exactly() -> None:
    original = everything(tags=["x", "y"], maybe=Money(Decimal("0.10")))
    payload = codec.encode_payload(original)
    decoded = codec.decode_payload(Everything, payload)
    # tuples inside Any become lists: that is the documented JSON round trip
    assert decoded == everything(
        tags=["x", "y"],
        maybe=Money(Decimal("0.10")),
        extra={"a": {"nested": None}, "z": [1, [2, 3]]},
    )
    assert type(decoded.amount) is Decimal
    assert str(decoded.amount) == "12.50"
    assert type(decoded.ident) is uuid.UUID
    assert decoded.color is Color.GREEN
    assert decoded.level is Level.HIGH
    assert type(decoded.pair) is tuple
    assert type(decoded.many) is tuple
    assert type(decoded.lines[0].price) is Money


def test_the_json_form_of_each_type() -> None:
    data = json.loads(codec.encode_payload(everything()))
    assert data["amount"] == "12.50"
    assert data["at"] == "2024-05-01T09:30:15.123456+02:00"
    assert data["day"] == "2024-02-29"
    assert data["ident"] == "12345678-1234-5678-1234-567812345678"
    assert data["color"] == "green"
    assert data["level"] == 2
    assert data["count"] == 2**70
    assert data["pair"] == [1, "one"]
    assert data["lines"] == [
        {"sku": "mug", "quantity": 2, "price": {"amount": "7.50", "currency": "USD"}}
    ]
    assert data["maybe"] is None
    assert data["fallback"] == "default"


def test_encoding_is_deterministic_compact_and_keeps_field_order() -> None:
    first = codec.encode_payload(everything(labels={"b": 2, "a": 1}))
    second = codec.encode_payload(everything(labels={"a": 1, "b": 2}))
    assert first == second
    text = first.decode("utf-8")
    assert text.index('"text"') < text.index('"count"') < text.index('"tags"')
    assert text.index('"a":1') < text.index('"b":2')  # dict keys sorted
    assert ": " not in text
    assert ", " not in text.replace('"one"', "")
    assert "héllo" in text  # UTF-8, not \u escapes


def test_a_zone_keeps_its_offset_and_the_instant() -> None:
    at = datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Amsterdam"))
    decoded = codec.decode_payload(Everything, codec.encode_payload(everything(at=at)))
    assert decoded.at == at
    assert decoded.at.utcoffset() == timedelta(hours=2)
    assert decoded.at.isoformat() == "2024-07-01T12:00:00+02:00"


def test_naive_datetimes_are_rejected_both_ways() -> None:
    with pytest.raises(ValueError, match=r"Everything\.at: naive datetime"):
        codec.encode_payload(everything(at=datetime(2024, 1, 1)))
    data = json.loads(codec.encode_payload(everything()))
    data["at"] = "2024-01-01T10:00:00"
    with pytest.raises(ValueError, match=r"Everything\.at: .* has no UTC offset"):
        codec.decode_data(Everything, data)


def test_values_without_a_json_form_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"Everything\.ratio: nan cannot be stored"):
        codec.encode_payload(everything(ratio=float("nan")))
    with pytest.raises(ValueError, match=r"Everything\.amount: Decimal Infinity is not finite"):
        codec.encode_payload(everything(amount=Decimal("Infinity")))
    with pytest.raises(ValueError, match=r"Everything\.extra\['bad'\]: inf cannot be stored"):
        codec.encode_payload(everything(extra={"bad": float("inf")}))


def test_wrong_value_types_raise_type_error_naming_the_field() -> None:
    with pytest.raises(TypeError, match=r"Everything\.amount: expected Decimal, got float"):
        codec.encode_payload(everything(amount=1.5))
    bad_line = Line(SKU("mug"), "2", Money(Decimal(1)))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Everything\.lines\[0\]\.quantity: expected int, got str"):
        codec.encode_payload(everything(lines=[bad_line]))
    with pytest.raises(TypeError, match=r"Everything\.flag: expected bool, got int"):
        codec.encode_payload(everything(flag=1))
    with pytest.raises(TypeError, match=r"Everything\.count: expected int, got bool"):
        codec.encode_payload(everything(count=True))
    with pytest.raises(TypeError, match=r"Everything\.day: expected date, got datetime"):
        codec.encode_payload(everything(day=datetime(2024, 1, 1, tzinfo=UTC)))
    with pytest.raises(TypeError, match=r"Everything\.kind: expected one of 'a', 'b', got 'c'"):
        codec.encode_payload(everything(kind="c"))


def test_decoding_errors_name_the_path() -> None:
    data = json.loads(codec.encode_payload(everything()))
    data["lines"][0]["price"]["amount"] = "lots"
    with pytest.raises(ValueError, match=r"Everything\.lines\[0\]\.price\.amount: 'lots' is not a"):
        codec.decode_data(Everything, data)
    data = json.loads(codec.encode_payload(everything()))
    data["labels"]["a"] = "one"
    with pytest.raises(
        ValueError, match=r"Everything\.labels\['a'\]: expected an integer, got str"
    ):
        codec.decode_data(Everything, data)
    data = json.loads(codec.encode_payload(everything()))
    del data["count"]
    with pytest.raises(
        ValueError, match=r"Everything\.count: missing, and the field has no default"
    ):
        codec.decode_data(Everything, data)
    data = json.loads(codec.encode_payload(everything()))
    data["level"] = True
    with pytest.raises(ValueError, match=r"Everything\.level: True is not a Level value"):
        codec.decode_data(Everything, data)


def test_defaults_fill_missing_fields_and_unknown_keys_are_ignored() -> None:
    data = json.loads(codec.encode_payload(everything(tags=["t"])))
    del data["fallback"], data["tags"]
    data["added_by_a_newer_writer"] = 1
    decoded = codec.decode_data(Everything, data)
    assert decoded.fallback == "default"
    assert decoded.tags == []


def test_numbers_are_accepted_where_a_decimal_or_float_is_declared() -> None:
    data = json.loads(codec.encode_payload(everything()))
    data["amount"], data["ratio"] = 0.1, 3
    decoded = codec.decode_data(Everything, data)
    assert decoded.amount == Decimal("0.1")
    assert decoded.ratio == 3.0
    assert type(decoded.ratio) is float


def test_recursive_dataclasses() -> None:
    tree = Node("root", [Node("a"), Node("b", [Node("c")])], parent=Node("up"))
    assert codec.decode_payload(Node, codec.encode_payload(tree)) == tree


def test_payload_must_be_a_json_object() -> None:
    with pytest.raises(ValueError, match="payload must be a JSON object, got list"):
        codec.decode_payload(Money, b"[1]")
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        codec.decode_payload(Money, b"{nope")
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        codec.decode_payload(Money, b'{"amount": NaN}')


@dataclass
class WithSet:
    items: set[str]


@dataclass
class WithUnion:
    value: int | str


@dataclass
class WithIntKeys:
    counts: dict[int, int]


@dataclass
class WithFloatEnum:
    shape: Shape


class NotADataclass:
    pass


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (WithSet, r"WithSet\.items: unsupported type set\[str\]"),
        (WithUnion, r"WithUnion\.value: unsupported type int \| str: of unions only X \| None"),
        (WithIntKeys, r"WithIntKeys\.counts: dict keys must be str"),
        (WithFloatEnum, r"WithFloatEnum\.shape: Shape\.SQUARE has value \(1, 1\)"),
        (NotADataclass, "event classes must be dataclasses"),
    ],
)
def test_unsupported_field_types_are_refused_when_checked(cls: type[Any], message: str) -> None:
    with pytest.raises(TypeError, match=message):
        codec.check_event_class(cls)
    # a refused class stays refused: nothing half-compiled is cached
    with pytest.raises(TypeError, match=message):
        codec.check_event_class(cls)


@dataclass
class Broken:
    other: Referrer | None
    bad: set[int]


@dataclass
class Referrer:
    broken: Broken | None


def test_a_refused_class_leaves_no_codec_behind_in_classes_compiled_on_its_way() -> None:
    # Compiling Broken compiles Referrer first, which refers back to Broken before Broken
    # is known to be bad: Referrer must not stay cached with Broken's empty codec.
    with pytest.raises(TypeError, match=r"Broken\.bad: unsupported type set\[int\]"):
        codec.check_event_class(Broken)
    with pytest.raises(TypeError, match=r"Broken\.bad: unsupported type set\[int\]"):
        codec.check_event_class(Referrer)
    with pytest.raises(TypeError, match=r"Broken\.bad"):
        codec.encode_payload(Referrer(Broken(None, {1})))
