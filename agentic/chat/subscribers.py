"""Watchers of a session's frames. Each has a bounded queue drained by one writer task,
so a slow or stalled reader is cut off instead of slowing the engine or other sessions."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger("agentic.chat")

QUEUE_LIMIT = 2048


class Subscriber:
    """Frames in through `send`, out through `write_frame`, in order, on one task."""

    def __init__(self, write_frame: Callable[[dict[str, Any]], Awaitable[None]], on_broken: Callable[[], Awaitable[None]]) -> None:
        """`on_broken` runs once the reader is cut off: too slow, or its connection failed."""
        self._write_frame = write_frame
        self._on_broken = on_broken
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self._task = asyncio.create_task(self._drain())
        self.closed = False

    def send(self, frame: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.closed = True
            log.warning("reader too slow, disconnecting it")
            self._task.cancel()
            asyncio.create_task(self._on_broken())

    async def _drain(self) -> None:
        while True:
            frame = await self._queue.get()
            if frame is None:
                return
            try:
                await self._write_frame(frame)
            except (ConnectionError, RuntimeError):
                self.closed = True
                await self._on_broken()
                return

    async def finish(self) -> None:
        """Write what is queued, then stop."""
        if not self._task.done():
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def cancel(self) -> None:
        self.closed = True
        self._task.cancel()
