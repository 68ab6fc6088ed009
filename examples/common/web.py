"""What both web examples do the same way around their projection runner.

- A write waits for the read model (read-your-writes), but not for a runner that has
  stopped: that answers at once, with the reason, instead of timing out.
- ``/health`` reports the app's own projection, and its runner's failure at once.
- How the runner treats an event its handler keeps failing on comes from the app's
  options or ``BANK_ON_FAILURE`` (``stop`` or ``park``).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pupsourcing_async import Database
from pupsourcing_async.projection import OnFailure, ProcessorConfig

__all__ = ["ReadModelStopped", "health", "on_failure", "parked", "runner_config", "wait_for"]


class ReadModelStopped(Exception):
    """The projection runner has stopped: a write is stored but cannot be read back."""


def on_failure(value: OnFailure | str | None) -> OnFailure:
    """The failure policy: ``value``, else ``BANK_ON_FAILURE``, else ``OnFailure.STOP``."""
    if isinstance(value, OnFailure):
        return value
    text = value or os.environ.get("BANK_ON_FAILURE") or "stop"
    try:
        return OnFailure(text.lower())
    except ValueError:
        raise ValueError(f"on_failure must be stop or park, got {text!r}") from None


def runner_config(policy: OnFailure) -> ProcessorConfig:
    """How the apps run their projection: woken early by their own appends, and with a
    poison event parked (after three tries) when ``policy`` says so."""
    return ProcessorConfig(max_poll_interval=1.0, on_failure=policy, handler_attempts=3)


async def wait_for(
    db: Database, position: int, projection: str, runner: asyncio.Task[None], *, timeout: float
) -> None:
    """Wait until ``projection`` has processed ``position``.

    Raises:
        TimeoutError: not within ``timeout`` seconds.
        ReadModelStopped: the runner stopped first (or had stopped); says why.
    """
    if not runner.done():
        waiting = asyncio.ensure_future(
            db.wait_for(position, projections=[projection], timeout=timeout)
        )
        try:
            await asyncio.wait([waiting, runner], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not waiting.done():
                waiting.cancel()
                await asyncio.wait([waiting])
        if not waiting.cancelled():
            waiting.result()
            return
    failure = None if runner.cancelled() else runner.exception()
    raise ReadModelStopped(f"the read model is stopped: {failure or 'its runner has ended'}")


async def health(db: Database, projection: str) -> tuple[int, dict[str, Any]]:
    """``/health``: the status code (503 unless ok) and the report, which says why."""
    report = await db.health([projection])
    return (200 if report.ok else 503), report.as_dict()


async def parked(db: Database, projection: str) -> list[dict[str, Any]]:
    """``/parked``: the events ``projection`` stepped over, oldest first."""
    return [event.as_dict() for event in await db.parked_events(projection)]
