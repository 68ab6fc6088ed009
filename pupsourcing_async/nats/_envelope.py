"""How an event becomes a JetStream message and back: subject, headers, body.

The body is the payload, untouched. The envelope travels in headers whose values are
percent-encoded: every byte outside printable ASCII, the space and ``%`` itself become
``%XX`` (upper-case hex), so a value can hold any text or bytes — newlines, non-ASCII,
leading spaces — and NATS neither strips nor rewrites it. Typical values (ids, types,
numbers, timestamps, compact JSON) pass unchanged.

A subject token gets the same escape, plus ``.``, ``*`` and ``>``: a name such as
``"Order.Line"`` or ``"a > b"`` becomes ``Order%2ELine`` / ``a%20%3E%20b``, one token that
matches no wildcard it should not. The escape is one-to-one, so two names never share a
subject; the exact names are in the headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime

from .. import es
from ._errors import MessageFormatError

__all__ = [
    "ENVELOPE_VERSION",
    "HEADERS",
    "check_prefix",
    "check_subject",
    "decode_value",
    "default_subject",
    "encode_value",
    "event_from_message",
    "event_headers",
    "check_filter",
    "headers_size",
    "subject_matches",
    "subject_token",
]

#: The envelope's format, in the ``Pup-Envelope`` header; a reader refuses others.
ENVELOPE_VERSION = "1"

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
_ENVELOPE = "Pup-Envelope"
_BOUNDED_CONTEXT = "Pup-Bounded-Context"
_AGGREGATE_TYPE = "Pup-Aggregate-Type"
_AGGREGATE_ID = "Pup-Aggregate-Id"
_AGGREGATE_VERSION = "Pup-Aggregate-Version"
_GLOBAL_POSITION = "Pup-Global-Position"
_EVENT_TYPE = "Pup-Event-Type"
_EVENT_VERSION = "Pup-Event-Version"
_CREATED_AT = "Pup-Created-At"
_TRACE_ID = "Pup-Trace-Id"
_CORRELATION_ID = "Pup-Correlation-Id"
_CAUSATION_ID = "Pup-Causation-Id"
_METADATA = "Pup-Metadata"

#: Every header an event's message carries (optional ones only when the field is set),
#: with the field it holds.
HEADERS: Mapping[str, str] = {
    MSG_ID: "event_id",
    _ENVELOPE: "envelope format",
    _BOUNDED_CONTEXT: "bounded_context",
    _AGGREGATE_TYPE: "aggregate_type",
    _AGGREGATE_ID: "aggregate_id",
    _AGGREGATE_VERSION: "aggregate_version",
    _GLOBAL_POSITION: "global_position",
    _EVENT_TYPE: "event_type",
    _EVENT_VERSION: "event_version",
    _CREATED_AT: "created_at (ISO 8601, microseconds, with offset)",
    _TRACE_ID: "trace_id (when set)",
    _CORRELATION_ID: "correlation_id (when set)",
    _CAUSATION_ID: "causation_id (when set)",
    _METADATA: "metadata, the bytes as stored (when set)",
}

# Printable ASCII but the space and "%": what a header value keeps as it is.
_VALUE_KEEPS = re.compile(rb"[!-$&-~]*")
# Printable ASCII but "%", ".", "*" and ">": what a subject token keeps as it is.
_TOKEN_KEEPS = re.compile(rb"[!-$&-)+-\-/-=?-~]+")
_ENCODED_VALUE = re.compile(r"(?:[!-$&-~]|%[0-9A-F]{2})*")
# A token of a subject given whole: printable ASCII but ".", "*" and ">".
_SUBJECT_TOKEN = re.compile(r"[!-)+-\-/-=?-~]+")
_VALUE_TABLE = [chr(b) if _VALUE_KEEPS.fullmatch(bytes([b])) else f"%{b:02X}" for b in range(256)]
_TOKEN_TABLE = [chr(b) if _TOKEN_KEEPS.fullmatch(bytes([b])) else f"%{b:02X}" for b in range(256)]
# The longest prefix: with three names of 255 characters, each escaped to at most three
# times its UTF-8 bytes, a subject stays well inside NATS's 4 KiB protocol line.
_MAX_PREFIX = 255


def encode_value(data: bytes) -> str:
    """A header value for ``data``: printable ASCII as it is, every other byte as ``%XX``."""
    if _VALUE_KEEPS.fullmatch(data):
        return data.decode("ascii")
    return "".join([_VALUE_TABLE[b] for b in data])


def decode_value(text: str) -> bytes:
    """The bytes :func:`encode_value` encoded.

    Raises:
        ValueError: ``text`` is not such an encoding (a stray ``%``, a space, non-ASCII).
    """
    if not _ENCODED_VALUE.fullmatch(text):
        raise ValueError("not a percent-encoded header value")
    if "%" not in text:
        return text.encode("ascii")
    out = bytearray()
    parts = text.split("%")
    out += parts[0].encode("ascii")
    for part in parts[1:]:
        out.append(int(part[:2], 16))
        out += part[2:].encode("ascii")
    return bytes(out)


def subject_token(name: str) -> str:
    """``name`` as one subject token: printable ASCII as it is except ``% . * >``, every
    other UTF-8 byte (spaces, control characters, non-ASCII) as ``%XX``.

    >>> subject_token("Order.Line Added")
    'Order%2ELine%20Added'
    """
    data = name.encode("utf-8")
    if not data:
        raise ValueError("a subject token cannot be empty")
    if _TOKEN_KEEPS.fullmatch(data):
        return name
    return "".join([_TOKEN_TABLE[b] for b in data])


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start a subject: dot-separated tokens of printable ASCII
    without ``*`` or ``>``, not starting with ``$`` (the system's subjects).

    Raises:
        ValueError: it cannot; the message says why.
    """
    if not isinstance(prefix, str) or not prefix:
        raise ValueError(f"subject prefix must be a non-empty string, got {prefix!r}")
    if len(prefix) > _MAX_PREFIX:
        raise ValueError(f"subject prefix is longer than {_MAX_PREFIX} characters")
    _check_tokens(prefix, "subject prefix")
    return prefix


def check_subject(subject: str) -> str:
    """``subject`` if an event may be published to it (as :func:`check_prefix`).

    Raises:
        ValueError: it may not; the message says why.
    """
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"subject must be a non-empty string, got {subject!r}")
    _check_tokens(subject, "subject")
    return subject


def check_filter(pattern: str) -> str:
    """``pattern`` if it is a subject filter: a subject whose tokens may also be ``*``,
    and whose last token may be ``>``.

    Raises:
        ValueError: it is not; the message says why.
    """
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"subject filter must be a non-empty string, got {pattern!r}")
    _check_tokens(pattern, "subject filter", wildcards=True)
    return pattern


def _check_tokens(text: str, what: str, *, wildcards: bool = False) -> None:
    tokens = text.split(".")
    for index, token in enumerate(tokens):
        if not token:
            raise ValueError(f"{what} {text!r} has an empty token")
        if wildcards and (token == "*" or (token == ">" and index == len(tokens) - 1)):
            continue
        if not _SUBJECT_TOKEN.fullmatch(token):
            raise ValueError(
                f"{what} {text!r}: token {token!r} holds a wildcard, a space, a control or a "
                "non-ASCII character (escape names with subject_token())"
            )
    if text.startswith("$"):
        raise ValueError(f"{what} {text!r} starts with $, which NATS keeps for itself")


def default_subject(prefix: str) -> Callable[[es.PersistedEvent], str]:
    """``<prefix>.<bounded_context>.<aggregate_type>.<event_type>``, each name one token."""
    check_prefix(prefix)
    tokens: dict[str, str] = {}

    def token(name: str) -> str:
        # Names repeat from event to event: escape each once.
        found = tokens.get(name)
        if found is None:
            found = tokens[name] = subject_token(name)
            if len(tokens) > 10_000:
                tokens.clear()
        return found

    def subject(event: es.PersistedEvent) -> str:
        return (
            f"{prefix}.{token(event.bounded_context)}.{token(event.aggregate_type)}"
            f".{token(event.event_type)}"
        )

    return subject


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether the subject filter ``pattern`` (``*`` and ``>`` wildcards) takes every
    subject that ``subject`` (a subject, or itself a filter) stands for."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or given[index] == ">":
            return False
        if token != "*" and token != given[index]:
            return False
    return len(wanted) == len(given)


def event_headers(event: es.PersistedEvent) -> dict[str, str]:
    """The headers that carry ``event``'s envelope (see :data:`HEADERS`)."""
    headers = {
        MSG_ID: str(event.event_id),
        _ENVELOPE: ENVELOPE_VERSION,
        _BOUNDED_CONTEXT: _text(event.bounded_context),
        _AGGREGATE_TYPE: _text(event.aggregate_type),
        _AGGREGATE_ID: _text(event.aggregate_id),
        _AGGREGATE_VERSION: str(event.aggregate_version),
        _GLOBAL_POSITION: str(event.global_position),
        _EVENT_TYPE: _text(event.event_type),
        _EVENT_VERSION: str(event.event_version),
        _CREATED_AT: event.created_at.isoformat(timespec="microseconds"),
    }
    if event.trace_id is not None:
        headers[_TRACE_ID] = _text(event.trace_id)
    if event.correlation_id is not None:
        headers[_CORRELATION_ID] = _text(event.correlation_id)
    if event.causation_id is not None:
        headers[_CAUSATION_ID] = _text(event.causation_id)
    if event.metadata is not None:
        headers[_METADATA] = encode_value(event.metadata)
    return headers


def headers_size(headers: Mapping[str, str]) -> int:
    """The bytes ``headers`` take on the wire (all ASCII once encoded)."""
    # "NATS/1.0\r\n", "Name: value\r\n" each, and the closing "\r\n".
    return 12 + sum(len(name) + len(value) + 4 for name, value in headers.items())


def _text(value: str) -> str:
    return encode_value(value.encode("utf-8"))


def event_from_message(
    headers: Mapping[str, str] | None,
    data: bytes,
    *,
    subject: str = "",
    sequence: int | None = None,
) -> es.PersistedEvent:
    """Rebuild the event a message carries: equal, field by field, to the one published.

    Args:
        headers: The message's headers.
        data: Its body: the payload.
        subject: Its subject, for error messages.
        sequence: Its stream sequence, for error messages.

    Raises:
        MessageFormatError: a header is missing or malformed; it is named.
    """
    found = headers or {}

    def fail(header: str, reason: str) -> MessageFormatError:
        where = f"message {sequence}" if sequence is not None else "a message"
        return MessageFormatError(
            f"{where} on {subject or '?'} is not a published event: {header} {reason}",
            subject=subject,
            sequence=sequence,
            header=header,
        )

    def raw(name: str, optional: bool = False) -> bytes | None:
        value = found.get(name)
        if value is None:
            if optional:
                return None
            raise fail(name, "is missing")
        try:
            return decode_value(value)
        except ValueError:
            raise fail(name, f"is not percent-encoded: {value[:80]!r}") from None

    def text(name: str, optional: bool = False) -> str | None:
        value = raw(name, optional)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise fail(name, "is not UTF-8") from None

    def required(name: str) -> str:
        value = text(name)
        assert value is not None
        return value

    def number(name: str) -> int:
        value = required(name)
        if not value.isascii() or not value.isdigit():
            raise fail(name, f"is not a whole number: {value[:40]!r}")
        return int(value)

    if found.get(_ENVELOPE) != ENVELOPE_VERSION:
        raise fail(_ENVELOPE, f"is {found.get(_ENVELOPE)!r}, not {ENVELOPE_VERSION!r}")
    event_id_text, created_at_text = required(MSG_ID), required(_CREATED_AT)
    try:
        event_id = uuid.UUID(event_id_text)
    except ValueError:
        raise fail(MSG_ID, "is not a UUID") from None
    try:
        created_at = datetime.fromisoformat(created_at_text)
    except ValueError:
        raise fail(_CREATED_AT, "is not an ISO 8601 timestamp") from None
    if created_at.tzinfo is None:
        raise fail(_CREATED_AT, "has no UTC offset")
    return es.PersistedEvent(
        required(_BOUNDED_CONTEXT),
        required(_AGGREGATE_TYPE),
        required(_AGGREGATE_ID),
        required(_EVENT_TYPE),
        bytes(data),
        event_id=event_id,
        event_version=number(_EVENT_VERSION),
        metadata=raw(_METADATA, optional=True),
        trace_id=text(_TRACE_ID, optional=True),
        correlation_id=text(_CORRELATION_ID, optional=True),
        causation_id=text(_CAUSATION_ID, optional=True),
        created_at=created_at,
        global_position=number(_GLOBAL_POSITION),
        aggregate_version=number(_AGGREGATE_VERSION),
    )
