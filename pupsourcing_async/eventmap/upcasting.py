"""Upcasting: reading an old stored version of an event as its newest version.

An upcaster is a plain function from one version's payload (a ``dict`` of JSON data) to
the next version's. Upcasters go one version at a time; reading version 1 as version 3
runs the 1-to-2 upcaster, then the 2-to-3 one, and decodes the result as the version 3 class.
Stored events are never rewritten.

```python
def upcast_order_created_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "currency": "EUR"}
```
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeAlias

from ..errors import EventMappingError
from ._naming import upcaster_name

__all__ = ["Upcaster", "UpcasterChain", "upcaster_name"]

#: A function from version N's payload to version N+1's payload.
Upcaster: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]


class UpcasterChain:
    """The upcasters of every event type, keyed by the version they read."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def add(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Add the upcaster that turns ``event_type`` version ``from_version`` into the next.

        Raises:
            ValueError: ``from_version`` is below 1, or that step already has an upcaster.
            TypeError: ``upcaster`` is not callable.
        """
        if not isinstance(event_type, str) or not event_type:
            raise ValueError(f"event_type must be a non-empty string, got {event_type!r}")
        if type(from_version) is not int or from_version < 1:
            raise ValueError(f"from_version must be an int of 1 or more, got {from_version!r}")
        if not callable(upcaster):
            raise TypeError(f"an upcaster must be callable, got {type(upcaster).__name__}")
        key = (event_type, from_version)
        if key in self._steps:
            raise ValueError(
                f"{event_type} v{from_version} -> v{from_version + 1} already has an upcaster "
                f"({_name(self._steps[key])})"
            )
        self._steps[key] = upcaster

    def get(self, event_type: str, from_version: int) -> Upcaster | None:
        """The upcaster from ``from_version`` to the next version, if there is one."""
        return self._steps.get((event_type, from_version))

    def missing(self, event_type: str, from_version: int, to_version: int) -> list[int]:
        """The versions in ``[from_version, to_version)`` that have no upcaster to the next."""
        return [
            version
            for version in range(from_version, to_version)
            if (event_type, version) not in self._steps
        ]

    def upcast(
        self, event_type: str, from_version: int, to_version: int, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """Run the upcasters from ``from_version`` up to ``to_version``, one step at a time.

        Raises:
            EventMappingError: a step has no upcaster, an upcaster failed (its exception is
                the ``__cause__``) or returned something other than a dict.
        """
        gaps = self.missing(event_type, from_version, to_version)
        if gaps:
            raise EventMappingError(
                f"{event_type} v{from_version} cannot be read as v{to_version}: no upcaster "
                + ", ".join(
                    f"from v{gap} to v{gap + 1} ({upcaster_name(event_type, gap)})" for gap in gaps
                ),
                event_type=event_type,
                event_version=from_version,
            )
        data = payload
        for version in range(from_version, to_version):
            step = self._steps[(event_type, version)]
            try:
                data = step(data)
            except Exception as err:
                raise EventMappingError(
                    f"upcasting {event_type} v{version} to v{version + 1} with {_name(step)} "
                    f"failed: {type(err).__name__}: {err}",
                    event_type=event_type,
                    event_version=from_version,
                ) from err
            if not isinstance(data, dict):
                raise EventMappingError(
                    f"upcaster {_name(step)} must return a dict, got {type(data).__name__}",
                    event_type=event_type,
                    event_version=from_version,
                )
        return data

    def __iter__(self) -> Iterator[tuple[str, int]]:
        """The ``(event_type, from_version)`` steps that have an upcaster, sorted."""
        return iter(sorted(self._steps))

    def __len__(self) -> int:
        return len(self._steps)


def _name(function: object) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
