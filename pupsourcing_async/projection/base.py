"""What a projection is: a name and an async handler, optionally scoped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .. import es

__all__ = ["Projection", "ScopedProjection", "check_projection_name"]

# A partition's checkpoint is "<name>_p<key>"; a projection named so would be mistaken for
# a partition of another ("orders_p2" for partition 2 of "orders") by reset and status.
_PARTITION_NAME = re.compile(r".+_p\d+\Z", re.DOTALL)


def check_projection_name(name: str) -> str:
    """Return ``name`` if a projection may have it.

    Raises:
        ValueError: ``name`` ends in ``_p<digits>``, the form of a partition's checkpoint.
    """
    if _PARTITION_NAME.match(name):
        raise ValueError(
            f"projection name {name!r} ends like a partition's checkpoint (<name>_p<key>): "
            "it would be taken for a partition of another projection; choose another name"
        )
    return name


@runtime_checkable
class Projection(Protocol):
    """Turns events into a read model.

    Any object with a ``name`` and an async ``handle`` satisfies it; no base class needed.
    ``handle`` runs inside the batch's transaction, on the connection ``tx`` that also
    writes the checkpoint, so a read model written through ``tx`` moves in step with it.

    A projection may also have ``retryable_errors``, a tuple of exception types its
    handler raises for passing troubles; a batch that fails with one of them is retried
    with backoff instead of stopping the projection.
    """

    @property
    def name(self) -> str:
        """The checkpoint key; with partitions each worker uses ``"<name>_p<key>"``."""
        ...

    async def handle(self, tx: Any, event: es.PersistedEvent) -> None:
        """Apply one event. Raising stops the batch and rolls it back."""
        ...


@runtime_checkable
class ScopedProjection(Projection, Protocol):
    """A projection that only wants some aggregates' events.

    Events outside the scope are skipped, but still advance the checkpoint. An empty
    sequence means no restriction; both filters must match.
    """

    @property
    def aggregate_types(self) -> Sequence[str]:
        """The aggregate types to handle."""
        ...

    @property
    def bounded_contexts(self) -> Sequence[str]:
        """The bounded contexts to handle."""
        ...
