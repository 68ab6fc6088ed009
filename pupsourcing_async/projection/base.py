"""What a projection is: a name and an async handler, optionally scoped."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import es

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    # Bare ``Projection`` means ``Projection[Any]``: a handler that takes any ``tx``.
    TxT_contra = TypeVar("TxT_contra", contravariant=True, default=Any)
else:
    from typing import TypeVar

    TxT_contra = TypeVar("TxT_contra", contravariant=True)


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
class Projection(Protocol[TxT_contra]):
    """Turns events into a read model.

    Any object with a ``name`` and an async ``handle`` satisfies it; no base class needed.
    ``handle`` runs inside the batch's transaction, on the connection ``tx`` that also
    writes the checkpoint, so a read model written through ``tx`` moves in step with it.
    ``TxT_contra`` is the ``tx`` the handler takes: a processor on a ``Database[T]`` runs
    projections whose ``handle`` accepts a ``T`` (see ``pupsourcing_async.connections``).
    A handler written once for every database takes a ``DriverConnection`` and writes
    through ``pupsourcing_async.sqlalchemy.connection(tx)``.

    A projection may also have ``retryable_errors``, a tuple of exception types its
    handler raises for passing troubles; a batch that fails with one of them is retried
    with backoff instead of stopping the projection.

    A projection may also define ``async def handle_batch(tx, events)``. The processor
    then calls it once per batch, with the batch's events in scope and partition in
    position order (never with none), instead of ``handle`` for each: for work that goes
    faster done together, such as publishing with pipelined acknowledgements. It runs
    in the batch's transaction, before the checkpoint is written; raising fails the
    batch as a ``handle`` failure does (rolled back, retried when transient or
    retryable, else a ``ProjectionError`` naming the batch's first event). ``handle``
    must still work for a single event: it is what runs an event on its own, and what
    runs a failed batch event by event under ``OnFailure.PARK`` to find the event to
    park.
    """

    @property
    def name(self) -> str:
        """The checkpoint key; with partitions each worker uses ``"<name>_p<key>"``."""
        ...

    async def handle(self, tx: TxT_contra, event: es.PersistedEvent) -> None:
        """Apply one event. Raising stops the batch and rolls it back."""
        ...


@runtime_checkable
class ScopedProjection(Projection[TxT_contra], Protocol[TxT_contra]):
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
