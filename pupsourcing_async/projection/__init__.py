"""Projections: turn events into read models, one gap-safe batch at a time.

```python
class Balances:
    name = "balances"
    aggregate_types = ("Account",)          # optional scope

    async def handle(self, tx, event):
        ...                                 # write the read model through tx

await db.processor(ProcessorConfig(run_mode=RunMode.ONE_OFF)).run(Balances())
```
"""

from __future__ import annotations

from .base import Projection, ScopedProjection
from .config import OnFailure, ProcessorConfig, RunMode
from .parking import ParkedEvent
from .partitioning import HashPartitionStrategy, PartitionStrategy, fnv1a_32
from .processor import Processor
from .runner import run_projections

__all__ = [
    "HashPartitionStrategy",
    "OnFailure",
    "ParkedEvent",
    "PartitionStrategy",
    "ProcessorConfig",
    "Processor",
    "Projection",
    "RunMode",
    "ScopedProjection",
    "fnv1a_32",
    "run_projections",
]
