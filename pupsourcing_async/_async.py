"""Small asyncio helpers shared by the adapters and the processor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["acquire_safely", "shielded"]

T = TypeVar("T")


async def shielded(aw: Awaitable[T]) -> T:
    """Run ``aw`` to completion even if the caller is cancelled meanwhile.

    Cleanup such as a rollback must finish, or the connection is left in an unknown
    state. A cancellation that arrives meanwhile is re-raised once ``aw`` is done.

    This stays plain asyncio on purpose: ``anyio.CancelScope(shield=True)`` defers only
    anyio's own cancellation, not ``Task.cancel()``, which is how asyncio applications
    (FastAPI, aiohttp, ``asyncio.timeout``) stop a task.
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


async def acquire_safely(acquire: Awaitable[T], release: Callable[[T], Awaitable[object]]) -> T:
    """Await ``acquire`` (a connection, a lock) without losing a cancellation or the thing.

    Drivers connect through ``asyncio.wait_for``, which on Python 3.11 can swallow a
    cancellation that lands just as the connection is made: the caller would go on as if
    never cancelled. Here the acquisition runs in a task of its own, so a cancellation of
    the caller always raises; whatever the task still obtains is given back.
    """
    task = asyncio.ensure_future(acquire)
    try:
        await asyncio.wait((task,))
    except asyncio.CancelledError:
        task.cancel()
        await shielded(_give_back(task, release))
        raise
    return task.result()


async def _give_back(task: asyncio.Future[T], release: Callable[[T], Awaitable[object]]) -> None:
    try:
        obtained = await task
    except (Exception, asyncio.CancelledError):
        return  # nothing was obtained (the task was cancelled or failed)
    with contextlib.suppress(Exception):
        await release(obtained)
