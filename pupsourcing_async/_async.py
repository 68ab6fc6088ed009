"""Small asyncio helpers shared by the adapters and the processor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["shielded"]

T = TypeVar("T")


async def shielded(aw: Awaitable[T]) -> T:
    """Run ``aw`` to completion even if the caller is cancelled meanwhile.

    Cleanup such as a rollback must finish, or the connection is left in an unknown
    state. A cancellation that arrives meanwhile is re-raised once ``aw`` is done.
    """
    task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn; the cancel wins
        raise asyncio.CancelledError
    return task.result()
