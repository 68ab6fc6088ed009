"""The message format, without a server: headers, subjects, stream checks, bad input."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from nats.aio.client import Client
from nats.js import api

from pupsourcing_async import es
from pupsourcing_async import nats as pnats
from pupsourcing_async.nats._envelope import (
    check_filter,
    check_prefix,
    check_subject,
    decode_value,
    default_subject,
    encode_value,
    headers_size,
    subject_matches,
)
from pupsourcing_async.nats._stream import StreamRequirements, check_stream_name

HOSTILE = [
    "plain",
    "with space",
    " leading and trailing ",
    "dots.in.it",
    "wild*card",
    "tail>",
    ">",
    "*",
    "100%",
    "%41",
    "new\nline",
    "cr\r\nlf",
    "tab\there",
    "nul\x00byte",
    "ünïcødé",
    "emoji 🎉",
    "$JS.API",
    "colon: value",
    "\x7f",
]


def persisted(**changes: object) -> es.PersistedEvent:
    fields: dict[str, object] = {
        "bounded_context": "Banking",
        "aggregate_type": "Account",
        "aggregate_id": "acc-1",
        "event_type": "MoneyDeposited",
        "payload": b'{"amount": 10}',
        "event_id": uuid.uuid4(),
        "event_version": 2,
        "metadata": b'{"user": "u-1"}',
        "trace_id": "trace",
        "correlation_id": "corr",
        "causation_id": "cause",
        "created_at": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        "global_position": 42,
        "aggregate_version": 3,
    }
    fields.update(changes)
    return es.PersistedEvent(**fields)  # type: ignore[arg-type]


def test_headers_carry_every_field_back_exactly() -> None:
    event = persisted()
    headers = pnats.event_headers(event)
    assert headers["Nats-Msg-Id"] == str(event.event_id)
    assert headers["Pup-Global-Position"] == "42"
    assert headers["Pup-Created-At"] == "2024-05-06T07:08:09.123456+00:00"
    assert set(headers) == set(pnats.HEADERS)
    assert pnats.event_from_message(headers, event.payload) == event


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_survives_the_headers_and_leaves_them_printable_ascii(text: str) -> None:
    event = persisted(
        bounded_context=text,
        aggregate_type=text,
        aggregate_id=text,
        event_type=text,
        trace_id=text,
        correlation_id=text,
        causation_id=text,
        metadata=('{"note": ' + repr(text) + "}\n").encode(),
        payload=text.encode() + b"\x00\xff",
    )
    headers = pnats.event_headers(event)
    for value in headers.values():
        # What NATS would strip, fold or rewrite never reaches it.
        assert all("!" <= char <= "~" for char in value), value
    rebuilt = pnats.event_from_message(headers, event.payload)
    assert rebuilt == event
    assert rebuilt.metadata == event.metadata


def test_optional_fields_absent_stay_absent() -> None:
    event = persisted(metadata=None, trace_id=None, correlation_id=None, causation_id=None)
    headers = pnats.event_headers(event)
    assert not {"Pup-Metadata", "Pup-Trace-Id", "Pup-Correlation-Id"} & set(headers)
    assert pnats.event_from_message(headers, event.payload) == event


def test_timestamps_keep_their_microseconds_and_offset() -> None:
    plus_two = timezone(timedelta(hours=2))
    for created_at in (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=plus_two),
    ):
        event = persisted(created_at=created_at)
        rebuilt = pnats.event_from_message(pnats.event_headers(event), event.payload)
        assert rebuilt.created_at == created_at
        assert rebuilt.created_at.utcoffset() == created_at.utcoffset()


def test_value_encoding_round_trips_every_byte() -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        encoded = encode_value(data)
        assert decode_value(encoded) == data
        assert " " not in encoded
    assert encode_value(b'{"a":1}') == '{"a":1}'
    assert encode_value(b"a b%") == "a%20b%25"


@pytest.mark.parametrize("bad", ["%", "%4", "%zz", "%4g", "a b", "é", "%41%"])
def test_malformed_values_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="percent-encoded"):
        decode_value(bad)


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("Pup-Envelope", "2", "not '1'"),
        ("Pup-Global-Position", "-1", "whole number"),
        ("Pup-Global-Position", "%D9%A1%D9%A2", "whole number"),
        ("Pup-Aggregate-Version", "x", "whole number"),
        ("Nats-Msg-Id", "not-a-uuid", "UUID"),
        ("Pup-Created-At", "yesterday", "ISO 8601"),
        ("Pup-Created-At", "2024-01-01T00:00:00", "UTC offset"),
        ("Pup-Aggregate-Id", "%FF", "UTF-8"),
        ("Pup-Event-Type", "a b", "percent-encoded"),
    ],
)
def test_a_malformed_message_is_refused_naming_the_header(
    header: str, value: str, reason: str
) -> None:
    headers = pnats.event_headers(persisted())
    headers[header] = value
    with pytest.raises(pnats.MessageFormatError, match=reason) as caught:
        pnats.event_from_message(headers, b"{}", subject="events.x", sequence=9)
    assert caught.value.header == header
    assert caught.value.sequence == 9
    assert "message 9 on events.x" in str(caught.value)


@pytest.mark.parametrize("missing", ["Nats-Msg-Id", "Pup-Event-Type", "Pup-Created-At"])
def test_a_message_missing_a_header_is_refused(missing: str) -> None:
    headers = pnats.event_headers(persisted())
    del headers[missing]
    with pytest.raises(pnats.MessageFormatError, match="is missing"):
        pnats.event_from_message(headers, b"{}")
    with pytest.raises(pnats.MessageFormatError, match="Pup-Envelope"):
        pnats.event_from_message(None, b"{}")


def test_subject_tokens_are_single_valid_tokens_and_never_collide() -> None:
    seen: dict[str, str] = {}
    for name in [*HOSTILE, "Order%2ELine", "Order.Line", "a%20b", "a b"]:
        token = pnats.subject_token(name)
        assert token, name
        assert "." not in token
        assert " " not in token
        assert "*" not in token
        assert ">" not in token
        assert all("!" <= char <= "~" for char in token)
        assert seen.setdefault(token, name) == name, f"{name!r} and {seen[token]!r} collide"
    assert pnats.subject_token("UserCreated") == "UserCreated"
    assert pnats.subject_token("Order.Line Added") == "Order%2ELine%20Added"
    with pytest.raises(ValueError, match="empty"):
        pnats.subject_token("")


def test_the_default_subject_escapes_each_name_into_its_token() -> None:
    subject = default_subject("app.events")(
        persisted(bounded_context="Bank ing", aggregate_type="Acc.ount", event_type=">")
    )
    assert subject == "app.events.Bank%20ing.Acc%2Eount.%3E"
    assert check_subject(subject) == subject


@pytest.mark.parametrize(
    "bad", ["", ".events", "events.", "a..b", "a.*", "a.>", "$JS", "$SYS.x", "a b", "é", "a\n"]
)
def test_bad_prefixes_and_subjects_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="subject"):
        check_prefix(bad)
    with pytest.raises(ValueError, match="subject"):
        check_subject(bad)


def test_filters_take_wildcards_only_where_nats_does() -> None:
    for good in ("a.>", "a.*.c", "*", ">", "a.*.>"):
        assert check_filter(good) == good
    for bad in ("a.>.b", "a*", "a.b*", "a..b", ""):
        with pytest.raises(ValueError, match="filter"):
            check_filter(bad)


@pytest.mark.parametrize(
    ("pattern", "subject", "covered"),
    [
        ("events.>", "events.>", True),
        ("events.>", "events.a.b", True),
        ("events.>", "events", False),
        (">", "events.>", True),
        ("*.>", "events.>", True),
        ("events.*", "events.>", False),
        ("events.*", "events.a", True),
        ("events.a", "events.*", False),
        ("events.*.x", "events.*.x", True),
        ("other.>", "events.>", False),
        ("events", "events", True),
    ],
)
def test_subject_coverage(pattern: str, subject: str, covered: bool) -> None:
    assert subject_matches(pattern, subject) is covered


def test_headers_size_counts_the_wire_bytes() -> None:
    headers = {"A": "1", "Bc": "22"}
    wire = b"NATS/1.0\r\nA: 1\r\nBc: 22\r\n\r\n"
    assert headers_size(headers) == len(wire)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"duplicate_window": 0}, "duplicate_window"),
        ({"retention": "forever"}, "retention"),
        ({"storage": "disk"}, "storage"),
        ({"max_age": 10.0}, "max_age"),
        ({"replicas": 0}, "replicas"),
        ({"subjects": ()}, "subject"),
        ({"subjects": ("a.>.b",)}, "subject filter"),
        ({"name": "A.B"}, "stream name"),
    ],
)
def test_stream_requirements_refuse_bad_settings(options: dict[str, object], message: str) -> None:
    settings: dict[str, object] = {"name": "EVENTS", "subjects": ("e.>",), "duplicate_window": 60}
    settings.update(options)
    with pytest.raises(ValueError, match=message):
        StreamRequirements(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "é", "x" * 256])
def test_bad_stream_names_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="stream name"):
        check_stream_name(bad)


def _config(**changes: object) -> api.StreamConfig:
    config = StreamRequirements(name="EVENTS", subjects=("e.>",), duplicate_window=120).config()
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize(
    ("changes", "setting", "expected", "actual"),
    [
        ({"duplicate_window": 30.0}, "duplicate_window", 120, 30.0),
        ({"subjects": ["other.>"]}, "subjects", ["e.>"], ["other.>"]),
        ({"subjects": ["e.*"]}, "subjects", ["e.>"], ["e.*"]),
        ({"retention": api.RetentionPolicy.WORK_QUEUE}, "retention", "limits", "workqueue"),
        ({"storage": api.StorageType.MEMORY}, "storage", "file", "memory"),
        ({"sealed": True}, "sealed", False, True),
        ({"no_ack": True}, "no_ack", False, True),
    ],
)
def test_a_stream_that_would_lose_or_double_events_is_refused_naming_both_values(
    changes: dict[str, object], setting: str, expected: object, actual: object
) -> None:
    requirements = StreamRequirements(name="EVENTS", subjects=("e.>",), duplicate_window=120)
    with pytest.raises(pnats.StreamSettingsError) as caught:
        requirements.check(_config(**changes))
    err = caught.value
    assert (err.stream, err.setting, err.expected, err.actual) == (
        "EVENTS",
        setting,
        expected,
        actual,
    )
    assert setting in str(err)
    assert repr(actual) in str(err)


def test_a_wider_stream_passes_the_check() -> None:
    requirements = StreamRequirements(name="EVENTS", subjects=("e.>",), duplicate_window=120)
    requirements.check(_config(subjects=[">"], duplicate_window=600.0))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "name"),
        ({"ack_timeout": 0}, "ack_timeout"),
        ({"subject_prefix": "a.>"}, "subject prefix"),
        ({"duplicate_window": -1}, "duplicate_window"),
        ({"stream_subjects": ["a.>.b"]}, "subject filter"),
    ],
)
def test_the_publisher_refuses_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pnats.Publisher(Client(), "EVENTS", **options)  # type: ignore[arg-type]


def test_importing_the_library_imports_no_nats() -> None:
    code = (
        "import sys, pupsourcing_async, pupsourcing_async.cli, pupsourcing_async.projection; "
        "sys.exit(1 if 'nats' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
