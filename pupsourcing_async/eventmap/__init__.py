"""Typed event mapping: domain events as plain dataclasses, never as bytes.

```python
from dataclasses import dataclass
from pupsourcing_async.eventmap import EventRegistry

registry = EventRegistry()

@registry.register                      # event type "OrderPlaced", version 1
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str

events = registry.to_events("Shop", "Order", "o-1", [OrderPlaced("o-1")])
async with db.transaction() as tx:
    await db.store.append(tx, es.NoStream(), events)
    stream = await db.store.read_aggregate_stream(tx, "Shop", "Order", "o-1")
placed = registry.from_events(stream.events)
```

- :class:`EventRegistry` maps classes to ``(event_type, event_version)`` and back, with
  JSON payloads (:mod:`.codec`) and upcasters that read old versions as the newest
  (:mod:`.upcasting`);
- :class:`AggregateRoot` and :class:`AggregateRepository` record, replay and save an
  aggregate's typed events, and :class:`SnapshotAggregate` lets the repository start from
  a snapshot of the state (:mod:`.aggregate`);
- ``pupsourcing-async eventmap-gen`` writes a typed module of mapping functions for a
  package of event dataclasses (:mod:`.generator`), and ``eventmap-check`` tells which
  stored event versions a registry cannot read (:mod:`.cli`).

Unknown event types and versions raise :class:`~pupsourcing_async.errors.EventMappingError`.
"""

from __future__ import annotations

from ..errors import EventMappingError
from .aggregate import AggregateRepository, AggregateRoot, SnapshotAggregate
from .codec import decode_payload, encode_payload
from .registry import DecodeProblem, EventRegistry, EventSpec
from .upcasting import Upcaster, UpcasterChain

__all__ = [
    "AggregateRepository",
    "AggregateRoot",
    "DecodeProblem",
    "EventMappingError",
    "EventRegistry",
    "EventSpec",
    "SnapshotAggregate",
    "Upcaster",
    "UpcasterChain",
    "decode_payload",
    "encode_payload",
]
