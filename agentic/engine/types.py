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


@dataclass
class TurnRequest:
    """One assistant turn for one session.

    `messages` is the whole conversation to answer (system prompt first, newest user
    message last). `emit(kind, payload)` is called on the event loop thread.
    """

    session_id: str
    messages: list[dict[str, str]]
    max_tokens: int
    sampling: Sampling
    emit: Callable[[str, Any], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    turn_id: int = 0
    submitted: float = field(default_factory=time.perf_counter)


class EngineBusy(Exception):
    """The waiting queue is full."""


class EngineNotReady(Exception):
    """The model is not loaded (yet, or failed to load)."""
