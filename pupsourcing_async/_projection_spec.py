"""Finding projections by ``MODULE:ATTR``, for the command line's ``worker`` and
``projections retry``."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Sequence
from typing import cast

from .projection.base import Projection, check_projection_name

__all__ = ["load_projections"]


def _is_projection(value: object) -> bool:
    return isinstance(getattr(value, "name", None), str) and callable(
        getattr(value, "handle", None)
    )


async def load_projections(spec: str) -> list[Projection]:
    """The projections ``MODULE:ATTR`` names: a projection, a list or tuple of them, or a
    callable (a function, a class) taking no arguments that returns either (awaited if
    it returns an awaitable).

    The current directory is put on ``sys.path`` first, as ``python -m`` would.

    Raises:
        ImportError: the module does not import.
        ValueError: the spec is malformed, the attribute is missing, or it names no
            projection (or two with one name).
    """
    module_name, colon, attribute = spec.partition(":")
    if not module_name or not colon or not attribute:
        raise ValueError(f"expected MODULE:ATTR (such as app.projections:ALL), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ImportError(
            f"cannot import projection module {module_name}: {type(err).__name__}: {err}"
        ) from err
    found: object = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ValueError(f"{module_name} has no attribute {attribute}")
        found = getattr(found, part)
    if not _is_projection(found) and not isinstance(found, (list, tuple)) and callable(found):
        found = found()
        if inspect.isawaitable(found):
            found = await found
    items: Sequence[object] = found if isinstance(found, (list, tuple)) else [found]
    projections: list[Projection] = []
    names: set[str] = set()
    for item in items:
        if not _is_projection(item):
            raise ValueError(
                f"{spec} gives {type(item).__name__} {item!r}, not a projection (an object "
                "with a name and an async handle(tx, event))"
            )
        projection = cast("Projection", item)
        check_projection_name(projection.name)
        if projection.name in names:
            raise ValueError(f"{spec} gives two projections named {projection.name}")
        names.add(projection.name)
        projections.append(projection)
    if not projections:
        raise ValueError(f"{spec} gives no projection")
    return projections
