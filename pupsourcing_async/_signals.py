"""An in-process "something happened" signal that never loses a wake-up."""

from __future__ import annotations

import asyncio

__all__ = ["Signal", "Watch"]


class Watch:
    """A look at a :class:`Signal` taken before checking for work.

    If the signal fires after the watch was taken, :meth:`wait` returns at once, so a
    firing between "found nothing" and "start waiting" is never lost.
    """

    __slots__ = ("_event",)

    def __init__(self, event: asyncio.Event) -> None:
        self._event = event

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; whether the signal fired."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Signal:
    """Fired by whoever makes news; watched by whoever waits for it."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def watch(self) -> Watch:
        """Start watching: take this before checking for work."""
        if self._event is None:
            self._event = asyncio.Event()
        return Watch(self._event)

    def fire(self) -> None:
        """Wake every watch taken so far."""
        event, self._event = self._event, None
        if event is not None:
            event.set()
