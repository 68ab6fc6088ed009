"""Argument checks and error building that every adapter shares."""

from __future__ import annotations

import uuid

from .. import es
from ..errors import DuplicateEventError, OptimisticConcurrencyError
from ..log import Logger

__all__ = [
    "check_limit",
    "check_position",
    "check_projection_name",
    "check_stream_args",
    "conflict_error",
]

MAX_BIGINT = 2**63 - 1


def check_position(name: str, value: object) -> None:
    """Raise ``ValueError`` unless ``value`` is a position or version (0 to 2**63-1)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BIGINT:
        raise ValueError(f"{name} must be an int between 0 and 2**63-1, got {value!r}")


def check_limit(limit: object) -> None:
    """Raise ``ValueError`` unless ``limit`` is a positive int."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError(f"limit must be a positive int, got {limit!r}")


def check_projection_name(name: object) -> None:
    """Raise ``ValueError`` unless ``name`` can key a checkpoint row."""
    if not isinstance(name, str) or not name or "\x00" in name or len(name) > es.MAX_TEXT_LENGTH:
        raise ValueError(
            "projection_name must be a non-empty string of at most "
            f"{es.MAX_TEXT_LENGTH} characters, got {name!r}"
        )


def check_stream_args(
    bounded_context: object,
    aggregate_type: object,
    aggregate_id: object,
    from_version: int | None,
    to_version: int | None,
) -> tuple[int, int]:
    """Check ``read_aggregate_stream``'s arguments; return the inclusive version bounds."""
    for name, value in (
        ("bounded_context", bounded_context),
        ("aggregate_type", aggregate_type),
        ("aggregate_id", aggregate_id),
    ):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    low = 0 if from_version is None else from_version
    high = MAX_BIGINT if to_version is None else to_version
    check_position("from_version", low)
    check_position("to_version", high)
    if low > high:
        raise ValueError(f"from_version ({low}) must not be greater than to_version ({high})")
    return low, high


def conflict_error(
    log: Logger,
    expected: es.ExpectedVersion,
    first: es.Event,
    *,
    actual: int | None,
    duplicate: bool = False,
    event_id: uuid.UUID | None = None,
) -> OptimisticConcurrencyError:
    """The error for an append that wrote nothing because of a conflict.

    Args:
        log: Where to log the conflict.
        expected: What the append expected.
        first: The append's first event, naming the aggregate.
        actual: The aggregate's version as found; ``None`` when a concurrent transaction
            won a unique index and the version is unknown.
        duplicate: An event id of the append is already stored.
        event_id: That event id, when known.
    """
    where = f"{first.bounded_context}/{first.aggregate_type}/{first.aggregate_id}"
    if duplicate or event_id is not None:
        shown = event_id or "(unknown)"
        log.info("duplicate event id", aggregate=where, event_id=str(shown))
        return DuplicateEventError(
            f"{where}: event id {shown} is already stored",
            expected=expected,
            actual=actual,
            bounded_context=first.bounded_context,
            aggregate_type=first.aggregate_type,
            aggregate_id=first.aggregate_id,
            event_id=event_id,
        )
    if actual is None:
        found = "a concurrent transaction stored that version first"
    else:
        found = f"the aggregate is at version {actual}"
    log.info(
        "optimistic concurrency conflict", aggregate=where, expected=str(expected), actual=actual
    )
    return OptimisticConcurrencyError(
        f"{where}: expected version {expected}, but {found}",
        expected=expected,
        actual=actual,
        bounded_context=first.bounded_context,
        aggregate_type=first.aggregate_type,
        aggregate_id=first.aggregate_id,
    )
