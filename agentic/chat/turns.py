"""One assistant turn as seen by its watchers: numbered frames kept for resuming, and the reply text."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterable

from agentic.engine.stops import StopMatcher
from agentic.engine.types import TurnRequest
from agentic.sessions.models import Message


class Turn:
    """`channel` names whose watchers see the frames: the session's (a turn of its conversation)
    or one of the turn's own (a side turn, seen only by the request that asked for it)."""

    def __init__(self, session_id: str, cancel_when_unwatched: bool, stops: Iterable[str] = (), channel: str | None = None) -> None:
        self.session_id = session_id
        self.channel = channel or session_id
        self.message_id = str(uuid.uuid4())
        self.cancel_when_unwatched = cancel_when_unwatched
        self.frames: list[dict[str, Any]] = []
        self.parts: list[str] = []
        self.stops = StopMatcher(stops)
        self.finished = asyncio.get_running_loop().create_future()
        self.request: TurnRequest | None = None
        self.file_sources: list[dict[str, Any]] = []  # the file parts the prompt holds (usage.files)
        self.files_added: list[dict[str, Any]] = []  # those that came with this turn's question (usage.files_added)
        # A regenerated reply: the one it replaces (put back if this one ends with nothing) and the replies before it.
        self.replaced: Message | None = None
        self.alternatives: tuple[str, ...] = ()

    @property
    def side(self) -> bool:
        return self.channel != self.session_id

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def done(self) -> bool:
        return self.finished.done()

    def frame(self, body: dict[str, Any]) -> dict[str, Any]:
        """Number a frame of this turn and keep it for resuming clients."""
        body["message_id"] = self.message_id
        body["seq"] = len(self.frames)
        self.frames.append(body)
        return body

    def frames_after(self, seq: int) -> list[dict[str, Any]]:
        return self.frames[seq + 1:] if seq >= -1 else list(self.frames)

    def cancel(self) -> None:
        if self.request is not None:
            self.request.cancelled.set()

    def last_outcome(self) -> dict[str, Any] | None:
        """The turn's done or error frame, once it ended."""
        return next((f for f in reversed(self.frames) if f["type"] in ("done", "error")), None)
