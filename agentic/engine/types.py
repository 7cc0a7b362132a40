"""What the asyncio side hands the inference thread, and what comes back."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    seed: int | None = None
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """The turn waits for the model, `position` turns ahead of it (1: it is next)."""

    position: int


@dataclass(frozen=True, slots=True)
class Token:
    """Reply text, as it is decoded (whole characters)."""

    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The turn ended: `usage` has its token counts, timings and `finish_reason`."""

    usage: dict[str, Any]

    @classmethod
    def before_start(cls) -> "Done":
        """Cancelled while it waited: no prompt was read, no token made."""
        return cls({"finish_reason": "cancelled", "prompt_tokens": 0, "completion_tokens": 0})


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn could not be answered: `code` names why (context_overflow, decode_failed, engine_failed)."""

    code: str
    message: str


TurnEvent = Queued | Token | Done | Failed


@dataclass
class TurnRequest:
    """One assistant turn for one session.

    `messages` is the whole conversation to answer (system prompt first, newest user
    message last). `emit(event)` is called on the event loop thread; a turn's last event is
    `Done` or `Failed`.
    """

    session_id: str
    messages: list[dict[str, str]]
    max_tokens: int
    sampling: Sampling
    emit: Callable[[TurnEvent], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)


class EngineBusy(Exception):
    """The waiting queue is full."""


class EngineNotReady(Exception):
    """The model is not loaded (yet, or failed to load)."""
