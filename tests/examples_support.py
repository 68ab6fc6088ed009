"""Helpers for ``tests/test_examples.py``: child processes and shared-server cleanup."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

import pupsourcing_async

REPO = Path(__file__).resolve().parents[1]


class Child:
    """A ``python -m ...`` child process whose output lines can be waited for."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        """The first new output line ``wanted`` accepts; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"no such line within {timeout}s; output so far:\n" + "\n".join(self.lines)
                ) from None
            if line is None:
                raise AssertionError("the process ended first; output:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if wanted(line):
                return line

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Wait for the process to end; its exit code and whole output."""
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code, "\n".join(self.lines)


def unique_prefix() -> str:
    """A table-name prefix no other run uses."""
    return f"ex{uuid.uuid4().hex[:8]}_"


def drop_prefixed_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with ``prefix`` (PostgreSQL or MySQL)."""

    async def drop() -> None:
        async with pupsourcing_async.connect(url) as db, db.transaction() as tx:
            if isinstance(tx, asyncpg.Connection):
                rows = await tx.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
                for (name,) in rows:
                    if name.startswith(prefix):
                        await tx.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
                return
            async with tx.cursor() as cursor:
                await cursor.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                )
                for (name,) in await cursor.fetchall():
                    if name.startswith(prefix):
                        await cursor.execute(f"DROP TABLE IF EXISTS {name}")

    asyncio.run(drop())
