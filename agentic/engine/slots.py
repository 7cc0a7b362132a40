"""Sequences of the KV cache and the tokens they hold.

A slot is one llama.cpp sequence, a stream of its own cells; while a session is resident, its
slot's `tokens` are what the cache holds for it. The turn a slot is decoding (`ActiveTurn`)
lives here with it, since each names the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentic.engine.text import TokenText
from agentic.engine.types import TurnRequest


@dataclass
class Slot:
    seq: int
    session_id: str | None = None
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    turn: "ActiveTurn | None" = None
    # Holds a prompt prefix that sessions shared, so it outlives them (no session of its own).
    holder: bool = False
    # A free slot's cells are this session's, left for the next session to reuse what it shares with them.
    former_session: str | None = None
    # Tokens the session's next prompt will hold after what the cache holds (its last reply's end),
    # computed while the engine is idle (see Scheduler._close_out).
    closing: list[int] = field(default_factory=list)

    def extend(self, tokens: list[int]) -> None:
        self.tokens.extend(tokens)

    def truncate(self, keep: int) -> None:
        del self.tokens[keep:]

    def take_session(self, source: "Slot") -> None:
        """Hold `source`'s session, tokens and turn (the cache moved its stream here); `source` is left free."""
        self.session_id, self.tokens, self.last_used, self.turn = source.session_id, source.tokens, source.last_used, source.turn
        self.closing = source.closing
        self.former_session = None
        source.session_id, source.tokens, source.turn, source.former_session, source.closing = None, [], None, None, []
        if self.turn is not None:
            self.turn.slot = self

    def copy_prefix(self, source: "Slot", end: int) -> None:
        """Hold `source`'s first `end` tokens (this slot's own ones, if any, are their start)."""
        self.tokens[:] = source.tokens[:end]


@dataclass
class ActiveTurn:
    req: TurnRequest
    slot: Slot
    prompt: list[int]
    pending: list[int]
    sampler: Any
    usage: dict[str, Any]
    started: float
    next_token: int | None = None
    logit_index: int | None = None
    generated: int = 0
    first_token_at: float | None = None
    text: TokenText = field(default_factory=TokenText)
    # The prompts this turn's second token waits for; decided when it is first due (None: not yet).
    held_behind: list["ActiveTurn"] | None = None
    prefill_started: bool = False

    @property
    def prefilling(self) -> bool:
        return bool(self.pending) and self.slot.turn is self
