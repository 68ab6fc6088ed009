"""OpenTelemetry tracing for the store and its projections (extra ``otel``).

```python
from pupsourcing_async import StoreConfig, connect
from pupsourcing_async.otel import OpenTelemetryObserver

db = await connect(url, store_config=StoreConfig(observers=(OpenTelemetryObserver(),)))
```

- Every append runs in a span ``pupsourcing.append`` and every projection batch in a span
  ``pupsourcing.projection.batch``, with the aggregate or projection as attributes and the
  error recorded when one occurs.
- Every event a projection parks is a span ``pupsourcing.projection.parked`` of its own,
  with status ERROR and the event, its error and attempts as attributes.
- An event appended without a ``trace_id`` gets the current span's trace id (32 hex
  digits), so the trace that caused an event can be found from the event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

from . import es
from .observe import AppendObservation, BatchObservation, Observer
from .projection.parking import ParkedEvent

__all__ = ["OpenTelemetryObserver"]


class OpenTelemetryObserver(Observer):
    """Spans for appends and batches, and trace ids for events that have none.

    Args:
        tracer_provider: Where spans go; the global provider when omitted.
        fill_trace_ids: Give events appended without a ``trace_id`` the current span's.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, fill_trace_ids: bool = True
    ) -> None:
        self._tracer: Tracer = trace.get_tracer(
            "pupsourcing_async", tracer_provider=tracer_provider
        )
        self._fill = fill_trace_ids

    def prepare_events(self, events: Sequence[es.Event]) -> Sequence[es.Event]:
        """Fill in missing trace ids from the current span."""
        if not self._fill:
            return events
        context = trace.get_current_span().get_span_context()
        if not context.is_valid or all(event.trace_id for event in events):
            return events
        trace_id = format(context.trace_id, "032x")
        return [
            event if event.trace_id else dataclasses.replace(event, trace_id=trace_id)
            for event in events
        ]

    @contextmanager
    def observe_append(self, observation: AppendObservation) -> Iterator[None]:
        """Run the append in a ``pupsourcing.append`` span."""
        attributes: dict[str, str | int] = {
            "db.system": observation.dialect,
            "pupsourcing.bounded_context": observation.bounded_context,
            "pupsourcing.aggregate_type": observation.aggregate_type,
            "pupsourcing.aggregate_id": observation.aggregate_id,
            "pupsourcing.expected_version": observation.expected,
            "pupsourcing.events": observation.events,
        }
        with self._tracer.start_as_current_span(
            "pupsourcing.append",
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            finally:
                _finish_append(span, observation)

    @contextmanager
    def observe_batch(self, observation: BatchObservation) -> Iterator[None]:
        """Run the batch in a ``pupsourcing.projection.batch`` span."""
        with self._tracer.start_as_current_span(
            "pupsourcing.projection.batch",
            attributes={
                "pupsourcing.projection": observation.projection,
                "pupsourcing.checkpoint": observation.checkpoint,
                "pupsourcing.partition": observation.partition_key,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            finally:
                _finish_batch(span, observation)

    def parked(self, projection: str, checkpoint: str, event: ParkedEvent) -> None:
        """Record the parked event as a ``pupsourcing.projection.parked`` span."""
        with self._tracer.start_as_current_span(
            "pupsourcing.projection.parked",
            attributes={
                "pupsourcing.projection": projection,
                "pupsourcing.checkpoint": checkpoint,
                "pupsourcing.global_position": event.global_position,
                "pupsourcing.event_id": str(event.event_id),
                "pupsourcing.event_type": event.event_type,
                "pupsourcing.attempts": event.attempts,
                "pupsourcing.error": event.error,
            },
        ) as span:
            span.set_status(Status(StatusCode.ERROR, event.error))


def _finish_append(span: Span, observation: AppendObservation) -> None:
    if observation.result is not None:
        span.set_attribute(
            "pupsourcing.global_positions", list(observation.result.global_positions)
        )
        span.set_attribute("pupsourcing.to_version", observation.result.to_version)
    if observation.error is not None:
        span.record_exception(observation.error)
        span.set_status(Status(StatusCode.ERROR, type(observation.error).__name__))


def _finish_batch(span: Span, observation: BatchObservation) -> None:
    span.set_attribute("pupsourcing.from_position", observation.from_position)
    span.set_attribute("pupsourcing.to_position", observation.to_position)
    span.set_attribute("pupsourcing.events_read", observation.events_read)
    span.set_attribute("pupsourcing.events_handled", observation.events_handled)
    if observation.error is not None:
        span.record_exception(observation.error)
        span.set_status(Status(StatusCode.ERROR, type(observation.error).__name__))
