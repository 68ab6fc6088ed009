"""The event registry: registering, encoding to es.Event, decoding, upcasting."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

import pupsourcing_async.eventmap as eventmap
from pupsourcing_async import EventMappingError, es
from pupsourcing_async.eventmap import DecodeProblem, EventRegistry, EventSpec


@dataclass(frozen=True, slots=True)
class OrderPlacedV1:
    order_id: str
    total: int  # cents


@dataclass(frozen=True, slots=True)
class OrderPlacedV2:
    order_id: str
    total: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class OrderPlacedV3:
    order_id: str
    total: Decimal
    currency: str
    channel: str = "web"


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Unregistered:
    value: int


def upcast_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    total = str(Decimal(payload["total"]) / 100)
    return {"order_id": payload["order_id"], "total": total, "currency": "EUR"}


def upcast_v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "channel": "legacy"}


def registry(*, upcasters: bool = True) -> EventRegistry:
    found = EventRegistry()
    found.register(OrderPlacedV1, event_type="OrderPlaced", event_version=1)
    found.register(OrderPlacedV2, event_type="OrderPlaced", event_version=2)
    found.register(OrderPlacedV3, event_type="OrderPlaced", event_version=3)
    found.register(OrderCancelled)
    if upcasters:
        found.register_upcaster("OrderPlaced", 1, upcast_v1_to_v2)
        found.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)
    return found


def stored(event_type: str, version: int, payload: dict[str, Any] | bytes) -> es.PersistedEvent:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return es.PersistedEvent(
        "Shop",
        "Order",
        "o-1",
        event_type,
        body,
        event_version=version,
        global_position=1,
        aggregate_version=1,
    )


def test_the_documented_names_import() -> None:
    for name in eventmap.__all__:
        assert getattr(eventmap, name) is not None
    assert eventmap.EventMappingError is EventMappingError


def test_register_as_call_bare_decorator_and_decorator_with_arguments() -> None:
    found = EventRegistry()

    @found.register
    @dataclass(frozen=True)
    class Shipped:
        order_id: str

    @found.register(event_type="Shipped", event_version=2)
    @dataclass(frozen=True)
    class ShippedV2:
        order_id: str
        carrier: str

    assert found.register(OrderCancelled) is OrderCancelled
    assert found.specs == (
        EventSpec("OrderCancelled", 1, OrderCancelled),
        EventSpec("Shipped", 1, Shipped),
        EventSpec("Shipped", 2, ShippedV2),
    )
    assert ("Shipped", 2) in found
    assert ("Shipped", 3) not in found
    assert len(found) == 3
    assert found.latest_version("Shipped") == 2
    assert found.event_type_of(ShippedV2("o", "dhl")) == "Shipped"
    assert found.spec_of(ShippedV2) == EventSpec("Shipped", 2, ShippedV2)
    # registering the same class the same way again is harmless
    found.register(OrderCancelled)
    assert len(found) == 3


def test_register_refuses_mistakes() -> None:
    found = registry()
    with pytest.raises(
        ValueError, match=r"OrderPlaced v1 is already registered to .*OrderPlacedV1"
    ):
        found.register(OrderPlacedV2, event_type="OrderPlaced", event_version=1)
    with pytest.raises(ValueError, match=r"already registered as OrderPlaced v3"):
        found.register(OrderPlacedV3, event_type="Other")
    with pytest.raises(ValueError, match="event_version must be an int from 1"):
        EventRegistry().register(OrderCancelled, event_version=0)
    with pytest.raises(ValueError, match="event_type must be a non-empty string"):
        EventRegistry().register(OrderCancelled, event_type="")
    with pytest.raises(TypeError, match="event classes must be dataclasses"):
        EventRegistry().register(int)
    with pytest.raises(ValueError, match=r"OrderPlaced v1 -> v2 already has an upcaster"):
        found.register_upcaster("OrderPlaced", 1, upcast_v2_to_v3)
    with pytest.raises(ValueError, match="from_version must be an int of 1 or more"):
        found.register_upcaster("OrderPlaced", 0, upcast_v2_to_v3)


def test_to_event_builds_an_es_event() -> None:
    found = registry()
    before = datetime.now(UTC)
    event = found.to_event(
        "Shop",
        "Order",
        "o-1",
        OrderPlacedV3("o-1", Decimal("9.90"), "EUR"),
        causation_id="cmd-1",
        correlation_id="flow-1",
        trace_id="trace-1",
        metadata={"user": "ann", "a": 1},
    )
    assert (event.bounded_context, event.aggregate_type, event.aggregate_id) == (
        "Shop",
        "Order",
        "o-1",
    )
    assert (event.event_type, event.event_version) == ("OrderPlaced", 3)
    assert event.payload == b'{"order_id":"o-1","total":"9.90","currency":"EUR","channel":"web"}'
    assert (event.causation_id, event.correlation_id, event.trace_id) == (
        "cmd-1",
        "flow-1",
        "trace-1",
    )
    assert event.metadata == b'{"a":1,"user":"ann"}'
    assert event.event_id.version == 4
    assert before <= event.created_at <= datetime.now(UTC)
    es.validate_event(0, event)


def test_to_events_share_time_and_metadata_with_fresh_ids() -> None:
    found = registry()
    at = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [uuid.uuid4(), uuid.uuid4()]
    events = found.to_events(
        "Shop",
        "Order",
        "o-1",
        [OrderPlacedV3("o-1", Decimal(1), "EUR"), OrderCancelled("o-1", "changed mind")],
        metadata=b'{"raw": true}',
        event_ids=ids,
        created_at=at,
    )
    assert [e.event_type for e in events] == ["OrderPlaced", "OrderCancelled"]
    assert [e.event_id for e in events] == ids
    assert all(e.created_at == at and e.metadata == b'{"raw": true}' for e in events)
    fresh = found.to_events("Shop", "Order", "o-1", [OrderCancelled("a"), OrderCancelled("b")])
    assert fresh[0].event_id != fresh[1].event_id
    assert fresh[0].created_at == fresh[1].created_at
    with pytest.raises(ValueError, match="got 1 event ids for 2 events"):
        found.to_events("S", "O", "o", [OrderCancelled("a")] * 2, event_ids=ids[:1])


def test_an_unregistered_class_cannot_be_encoded() -> None:
    with pytest.raises(
        EventMappingError, match="Unregistered is not a registered event class"
    ) as caught:
        registry().to_event("Shop", "Order", "o-1", Unregistered(1))
    assert caught.value.event_type == "Unregistered"
    assert caught.value.event_version is None


def test_from_event_decodes_each_stored_version_as_its_own_class() -> None:
    found = registry()
    assert found.from_event(stored("OrderPlaced", 1, {"order_id": "o-1", "total": 990})) == (
        OrderPlacedV1("o-1", 990)
    )
    events = [
        stored("OrderPlaced", 2, {"order_id": "o-1", "total": "9.90", "currency": "USD"}),
        stored("OrderCancelled", 1, {"order_id": "o-1"}),
    ]
    assert found.from_events(events) == [
        OrderPlacedV2("o-1", Decimal("9.90"), "USD"),
        OrderCancelled("o-1", None),
    ]
    placed = OrderPlacedV3("o-1", Decimal("9.90"), "EUR", "shop")
    assert found.from_event(found.to_event("Shop", "Order", "o-1", placed)) == placed


def test_unknown_type_and_version_name_both() -> None:
    found = registry()
    with pytest.raises(EventMappingError, match="unknown event type: Refunded v2") as caught:
        found.from_event(stored("Refunded", 2, {}))
    assert (caught.value.event_type, caught.value.event_version) == ("Refunded", 2)
    with pytest.raises(EventMappingError, match=r"unknown event version: OrderPlaced v4") as caught:
        found.from_event(stored("OrderPlaced", 4, {}))
    assert (caught.value.event_type, caught.value.event_version) == ("OrderPlaced", 4)
    assert "registered: v1, v2, v3" in str(caught.value)
    with pytest.raises(EventMappingError, match="unknown event version: OrderPlaced v4"):
        found.from_event(stored("OrderPlaced", 4, {}), latest=True)
    with pytest.raises(EventMappingError, match="unknown event type: Refunded v1"):
        found.from_event(stored("Refunded", 1, {}), latest=True)
    assert isinstance(caught.value, LookupError)


def test_a_payload_that_does_not_fit_raises_mapping_error_with_the_cause() -> None:
    with pytest.raises(EventMappingError, match=r"cannot decode OrderPlaced v2: .*total") as caught:
        registry().from_event(
            stored("OrderPlaced", 2, {"order_id": "o", "total": [], "currency": "X"})
        )
    assert isinstance(caught.value.__cause__, ValueError)
    assert caught.value.event_version == 2
    with pytest.raises(EventMappingError, match="cannot decode OrderCancelled v1: payload is not"):
        registry().from_event(stored("OrderCancelled", 1, b"\xff"))


def test_from_event_as_checks_type_and_version() -> None:
    found = registry()
    event = stored("OrderPlaced", 2, {"order_id": "o-1", "total": "1", "currency": "EUR"})
    assert found.from_event_as(event, OrderPlacedV2) == OrderPlacedV2("o-1", Decimal(1), "EUR")
    with pytest.raises(EventMappingError, match=r"expected OrderPlaced v3 .* got OrderPlaced v2"):
        found.from_event_as(event, OrderPlacedV3)


def test_upcasting_chains_v1_through_v2_to_v3() -> None:
    found = registry()
    v1 = stored("OrderPlaced", 1, {"order_id": "o-1", "total": 990})
    assert found.from_event(v1, latest=True) == OrderPlacedV3(
        "o-1", Decimal("9.9"), "EUR", "legacy"
    )
    v2 = stored("OrderPlaced", 2, {"order_id": "o-2", "total": "5", "currency": "USD"})
    assert found.from_event(v2, latest=True) == OrderPlacedV3("o-2", Decimal(5), "USD", "legacy")
    v3 = stored("OrderPlaced", 3, {"order_id": "o-3", "total": "1", "currency": "EUR"})
    assert found.from_event(v3, latest=True) == OrderPlacedV3("o-3", Decimal(1), "EUR", "web")
    assert found.from_events([v1, v2, v3], latest=True)[0] == found.from_event(v1, latest=True)
    # other types are unaffected by latest
    cancelled = stored("OrderCancelled", 1, {"order_id": "o-1", "reason": "x"})
    assert found.from_event(cancelled, latest=True) == OrderCancelled("o-1", "x")


def test_an_old_version_needs_no_class_when_upcasters_cover_it() -> None:
    found = EventRegistry()
    found.register(OrderPlacedV3, event_type="OrderPlaced", event_version=3)

    @found.register_upcaster("OrderPlaced", 1)
    def first(payload: dict[str, Any]) -> dict[str, Any]:
        return upcast_v1_to_v2(payload)

    found.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)
    v1 = stored("OrderPlaced", 1, {"order_id": "o-1", "total": 100})
    assert found.from_event(v1, latest=True) == OrderPlacedV3("o-1", Decimal(1), "EUR", "legacy")
    with pytest.raises(EventMappingError, match="read it with latest=True to upcast it"):
        found.from_event(v1)
    assert found.problems([("OrderPlaced", 1)]) == []
    assert found.problems([("OrderPlaced", 1)], latest=False) == [
        DecodeProblem("OrderPlaced", 1, "unknown version (registered: v3)")
    ]


def test_a_missing_upcaster_names_the_gap() -> None:
    found = registry(upcasters=False)
    found.register_upcaster("OrderPlaced", 1, upcast_v1_to_v2)
    v1 = stored("OrderPlaced", 1, {"order_id": "o-1", "total": 990})
    with pytest.raises(EventMappingError, match=r"from v2 to v3 \(upcast_order_placed_v2_to_v3\)"):
        found.from_event(v1, latest=True)
    assert found.from_event(v1) == OrderPlacedV1("o-1", 990)  # its own class still reads


def test_a_failing_or_wrong_upcaster_raises_mapping_error() -> None:
    found = registry(upcasters=False)
    found.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)

    def broken(payload: dict[str, Any]) -> dict[str, Any]:
        return {"missing": payload["nope"]}

    found.register_upcaster("OrderPlaced", 1, broken)
    v1 = stored("OrderPlaced", 1, {"order_id": "o-1", "total": 990})
    with pytest.raises(
        EventMappingError, match=r"upcasting OrderPlaced v1 to v2 with .*broken"
    ) as caught:
        found.from_event(v1, latest=True)
    assert isinstance(caught.value.__cause__, KeyError)

    wrong = registry(upcasters=False)
    wrong.register_upcaster("OrderPlaced", 1, lambda payload: [payload])  # type: ignore[arg-type,return-value]
    wrong.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)
    with pytest.raises(EventMappingError, match="must return a dict, got list"):
        wrong.from_event(v1, latest=True)

    shapeless = registry(upcasters=False)
    shapeless.register_upcaster("OrderPlaced", 1, lambda payload: payload)
    shapeless.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)
    with pytest.raises(EventMappingError, match=r"upcast to v3 does not fit .*OrderPlacedV3"):
        shapeless.from_event(v1, latest=True)


def test_problems_lists_what_a_store_holds_but_cannot_be_read() -> None:
    found = registry(upcasters=False)
    found.register_upcaster("OrderPlaced", 2, upcast_v2_to_v3)
    stored_pairs = [
        ("OrderCancelled", 1),
        ("OrderPlaced", 1),
        ("OrderPlaced", 2),
        ("OrderPlaced", 3),
        ("OrderPlaced", 7),
        ("Refunded", 1),
    ]
    assert found.problems(stored_pairs) == [
        DecodeProblem("OrderPlaced", 1, "no upcaster path to v3 (missing v1 -> v2)"),
        DecodeProblem("OrderPlaced", 7, "unknown version (newest registered is v3)"),
        DecodeProblem("Refunded", 1, "unknown event type"),
    ]
    assert [str(p) for p in found.problems(stored_pairs, latest=False)] == [
        "OrderPlaced v7: unknown version (registered: v1, v2, v3)",
        "Refunded v1: unknown event type",
    ]


def test_registration_checks_field_types_up_front() -> None:
    @dataclass
    class Bad:
        when: timedelta

    with pytest.raises(TypeError, match=r"Bad\.when: unsupported type timedelta"):
        EventRegistry().register(Bad)


def test_default_factories_and_optional_fields_round_trip() -> None:
    @dataclass(frozen=True)
    class Tagged:
        name: str
        tags: list[str] = field(default_factory=list)
        note: str | None = None

    found = EventRegistry()
    found.register(Tagged)
    event = found.to_event("S", "A", "a-1", Tagged("x"))
    assert json.loads(event.payload) == {"name": "x", "tags": [], "note": None}
    assert found.from_event(stored("Tagged", 1, {"name": "x"})) == Tagged("x")
