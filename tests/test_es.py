"""The core value types."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from pupsourcing_async import es


def persisted(version: int, position: int) -> es.PersistedEvent:
    return es.PersistedEvent(
        "Banking",
        "Account",
        "acc-1",
        "MoneyDeposited",
        b"{}",
        global_position=position,
        aggregate_version=version,
    )


def test_event_defaults() -> None:
    before = datetime.now(UTC)
    event = es.Event("Banking", "Account", "acc-1", "AccountOpened", b"{}")
    assert isinstance(event.event_id, uuid.UUID)
    assert event.event_id.version == 4
    assert event.event_version == 1
    assert event.metadata is None
    assert event.trace_id is event.correlation_id is event.causation_id is None
    assert before <= event.created_at <= datetime.now(UTC)
    assert event.created_at.tzinfo is not None
    other = es.Event("Banking", "Account", "acc-1", "AccountOpened", b"{}")
    assert other.event_id != event.event_id


def test_values_are_frozen_slotted_and_compare_by_value() -> None:
    event = es.Event("B", "A", "1", "E", b"x", event_id=uuid.UUID(int=1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.payload = b"y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    same = dataclasses.replace(event)
    assert same == event
    assert hash(same) == hash(event)
    assert dataclasses.replace(event, payload=b"y") != event


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        es.Event("B", "A", "1", "E", b"x", uuid.uuid4())  # type: ignore[call-arg]


def test_persisted_event_carries_every_event_field() -> None:
    event_fields = {f.name for f in dataclasses.fields(es.Event)}
    persisted_fields = {f.name for f in dataclasses.fields(es.PersistedEvent)}
    assert persisted_fields == event_fields | {"global_position", "aggregate_version"}


def test_expected_versions() -> None:
    assert es.Exact(0) == es.NoStream()
    assert es.NoStream() == es.Exact(0)
    assert hash(es.Exact(0)) == hash(es.NoStream())
    assert es.Exact(3) == es.Exact(3)
    assert es.Exact(3) != es.Exact(4)
    assert es.Any() == es.Any()
    assert es.Any() != es.NoStream()
    assert es.NoStream() != es.Any()
    assert es.Exact(1) != es.Any()
    assert es.Exact(1) != 1
    assert {es.Exact(0), es.NoStream(), es.Any()} == {es.NoStream(), es.Any()}
    assert str(es.Any()) == "Any"
    assert str(es.NoStream()) == "NoStream"
    assert str(es.Exact(3)) == "Exact(3)"
    assert es.Exact(7).version == 7
    for bad in (-1, -100):
        with pytest.raises(ValueError, match="0 or more"):
            es.Exact(bad)
    for wrong in ("3", 1.5, True, None):
        with pytest.raises(ValueError, match="int"):
            es.Exact(wrong)  # type: ignore[arg-type]


def test_stream() -> None:
    empty = es.Stream("Banking", "Account", "acc-1", [])
    assert empty.version == 0
    assert empty.is_empty
    assert len(empty) == 0
    assert list(empty) == []
    events = [persisted(1, 10), persisted(2, 12), persisted(3, 15)]
    stream = es.Stream("Banking", "Account", "acc-1", events)
    assert stream.version == 3
    assert not stream.is_empty
    assert len(stream) == 3
    assert list(stream) == events


def test_append_result() -> None:
    result = es.AppendResult([persisted(4, 20), persisted(5, 21)], [20, 21])
    assert result.from_version == 3
    assert result.to_version == 5
    empty = es.AppendResult([], [])
    assert (empty.from_version, empty.to_version) == (0, 0)


def test_validation_accepts_aware_timestamps_in_any_zone() -> None:
    created = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=1)
    event = es.Event("B", "A", "1", "E", b"x", created_at=created)
    assert es.validate_append(es.Any(), [event]) is None
    assert es.validate_append(es.Exact(4), (event,)) == 4
    assert es.validate_append(es.NoStream(), [event]) == 0


def test_validation_rejects_a_string_as_events() -> None:
    with pytest.raises(TypeError, match="sequence"):
        es.validate_append(es.Any(), "events")  # type: ignore[arg-type]
