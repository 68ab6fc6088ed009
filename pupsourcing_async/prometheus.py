"""Prometheus metrics for the store and its projections (extra ``prometheus``).

```python
from pupsourcing_async import StoreConfig, connect
from pupsourcing_async.prometheus import PrometheusObserver

metrics = PrometheusObserver()                 # registers on prometheus_client's registry
db = await connect(url, store_config=StoreConfig(observers=(metrics,)))
```

Metric names and labels (label values come from bounded contexts, aggregate types,
projection names and partitions, never from aggregate ids, so cardinality stays bounded):

| metric | type | labels |
|---|---|---|
| ``pupsourcing_appends_total`` | counter | bounded_context, aggregate_type |
| ``pupsourcing_events_appended_total`` | counter | bounded_context, aggregate_type |
| ``pupsourcing_append_conflicts_total`` | counter | bounded_context, aggregate_type |
| ``pupsourcing_append_errors_total`` | counter | bounded_context, aggregate_type |
| ``pupsourcing_append_duration_seconds`` | histogram | bounded_context, aggregate_type |
| ``pupsourcing_projection_events_handled_total`` | counter | projection, partition |
| ``pupsourcing_projection_events_read_total`` | counter | projection, partition |
| ``pupsourcing_projection_batch_duration_seconds`` | histogram | projection, partition |
| ``pupsourcing_projection_lag_events`` | gauge | projection, partition |
| ``pupsourcing_projection_lag_seconds`` | gauge | projection, partition |
| ``pupsourcing_projection_lease_held`` | gauge | projection, partition |
| ``pupsourcing_projection_retries_total`` | counter | projection, partition |
| ``pupsourcing_projection_failures_total`` | counter | projection, partition |
| ``pupsourcing_projection_events_parked_total`` | counter | projection, partition |

``lag_events`` is the head of the log minus the projection's checkpoint after each batch;
``lag_seconds`` is the age of the oldest event it had not processed when the batch began
(0 once it is caught up). ``events_parked`` counts the events projections stepped over
(``OnFailure.PARK``); alert on any increase.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from .errors import OptimisticConcurrencyError
from .observe import AppendObservation, BatchObservation, Observer
from .projection.parking import ParkedEvent

__all__ = ["PrometheusObserver"]

_APPEND = ("bounded_context", "aggregate_type")
_PROJECTION = ("projection", "partition")


class PrometheusObserver(Observer):
    """Counts appends and projection batches into Prometheus metrics.

    Args:
        registry: Where the metrics are registered; prometheus_client's default registry
            when omitted. Use one observer per registry.
        namespace: The metric name prefix.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "pupsourcing"
    ) -> None:
        registry = REGISTRY if registry is None else registry

        def counter(name: str, text: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, text, labels, namespace=namespace, registry=registry)

        self.appends = counter("appends", "Appends that stored their events.", _APPEND)
        self.events_appended = counter("events_appended", "Events stored.", _APPEND)
        self.conflicts = counter(
            "append_conflicts", "Appends refused by optimistic concurrency.", _APPEND
        )
        self.append_errors = counter("append_errors", "Appends that failed otherwise.", _APPEND)
        self.append_duration = Histogram(
            "append_duration_seconds",
            "Time an append took, successful or not.",
            _APPEND,
            namespace=namespace,
            registry=registry,
        )
        self.handled = counter(
            "projection_events_handled", "Events handed to projections.", _PROJECTION
        )
        self.read = counter(
            "projection_events_read", "Events read by projections, in scope or not.", _PROJECTION
        )
        self.batch_duration = Histogram(
            "projection_batch_duration_seconds",
            "Time a projection batch took.",
            _PROJECTION,
            namespace=namespace,
            registry=registry,
        )
        self.lag_events = Gauge(
            "projection_lag_events",
            "Positions between the head of the log and the projection's checkpoint.",
            _PROJECTION,
            namespace=namespace,
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "projection_lag_seconds",
            "Age of the oldest event the projection had not processed.",
            _PROJECTION,
            namespace=namespace,
            registry=registry,
        )
        self.lease_held = Gauge(
            "projection_lease_held",
            "1 while a worker in this process holds the partition's lease.",
            _PROJECTION,
            namespace=namespace,
            registry=registry,
        )
        self.retries = counter(
            "projection_retries", "Batches retried after a passing failure.", _PROJECTION
        )
        self.failures = counter("projection_failures", "Projections that stopped.", _PROJECTION)
        self.parked_events = counter(
            "projection_events_parked", "Events projections parked after failing.", _PROJECTION
        )

    @contextmanager
    def observe_append(self, observation: AppendObservation) -> Iterator[None]:
        """Count the append and time it."""
        try:
            yield
        finally:
            self._count_append(observation)

    def _count_append(self, observation: AppendObservation) -> None:
        labels = (observation.bounded_context, observation.aggregate_type)
        self.append_duration.labels(*labels).observe(observation.duration)
        if observation.result is not None:
            self.appends.labels(*labels).inc()
            self.events_appended.labels(*labels).inc(len(observation.result.events))
        elif isinstance(observation.error, OptimisticConcurrencyError):
            self.conflicts.labels(*labels).inc()
        elif observation.error is not None:
            self.append_errors.labels(*labels).inc()

    @contextmanager
    def observe_batch(self, observation: BatchObservation) -> Iterator[None]:
        """Count the batch, time it and update the lag gauges."""
        try:
            yield
        finally:
            self._count_batch(observation)

    def _count_batch(self, observation: BatchObservation) -> None:
        labels = (observation.projection, str(observation.partition_key))
        self.batch_duration.labels(*labels).observe(observation.duration)
        if observation.error is not None:
            return
        self.read.labels(*labels).inc(observation.events_read)
        self.handled.labels(*labels).inc(observation.events_handled)
        self.lag_events.labels(*labels).set(observation.lag)
        oldest = observation.oldest_unprocessed
        age = 0.0 if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        self.lag_seconds.labels(*labels).set(max(age, 0.0))

    def lease(self, projection: str, checkpoint: str, held: bool) -> None:
        """Track whether this process holds the partition's lease."""
        self.lease_held.labels(projection, _partition(projection, checkpoint)).set(int(held))

    def retry(self, projection: str, checkpoint: str, error: BaseException, attempt: int) -> None:
        """Count a retried batch."""
        self.retries.labels(projection, _partition(projection, checkpoint)).inc()

    def failure(self, projection: str, checkpoint: str, error: BaseException) -> None:
        """Count a stopped projection."""
        self.failures.labels(projection, _partition(projection, checkpoint)).inc()

    def parked(self, projection: str, checkpoint: str, event: ParkedEvent) -> None:
        """Count a parked event."""
        self.parked_events.labels(projection, _partition(projection, checkpoint)).inc()


def _partition(projection: str, checkpoint: str) -> str:
    suffix = checkpoint.removeprefix(projection)
    return suffix.removeprefix("_p") if suffix.startswith("_p") else "0"
