"""Sequences of the unified KV cache and the cells they hold.

A slot is one llama.cpp sequence; while a session is resident, its slot's `tokens` are what
the cache holds for it. Sequences that copied a prefix from one another share its cells, so
the cache's use is the number of distinct cells, which the ledger counts. The turn a slot is
decoding (`ActiveTurn`) lives here with it, since each names the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from agentic.engine.text import TokenText
from agentic.engine.types import TurnRequest


class CellLedger:
    """Reference counts of KV cells: a cell is free again when no sequence holds it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._refs: dict[int, int] = {}
        self._next = 0

    @property
    def used(self) -> int:
        return len(self._refs)

    def new(self, count: int) -> list[int]:
        cells = list(range(self._next, self._next + count))
        self._next += count
        self._refs.update(dict.fromkeys(cells, 1))
        return cells

    def hold(self, cells: Iterable[int]) -> None:
        refs = self._refs
        for cell in cells:
            refs[cell] += 1

    def release(self, cells: Iterable[int]) -> None:
        refs = self._refs
        for cell in cells:
            left = refs[cell] - 1
            if left:
                refs[cell] = left
            else:
                del refs[cell]

    def freed_by(self, cells: Iterable[int]) -> int:
        """How many cells would become free if these were released."""
        return sum(1 for cell in cells if self._refs[cell] == 1)


@dataclass
class Slot:
    seq: int
    ledger: CellLedger
    session_id: str | None = None
    tokens: list[int] = field(default_factory=list)
    cells: list[int] = field(default_factory=list)
    last_used: float = 0.0
    turn: "ActiveTurn | None" = None
    # Holds a prompt prefix that sessions shared, so it outlives them (no session of its own).
    holder: bool = False

    def extend(self, tokens: list[int]) -> None:
        self.tokens.extend(tokens)
        self.cells.extend(self.ledger.new(len(tokens)))

    def truncate(self, keep: int) -> None:
        self.ledger.release(self.cells[keep:])
        del self.tokens[keep:]
        del self.cells[keep:]

    def share_from(self, source: "Slot", end: int) -> None:
        """Take `source`'s cells for positions len(self.tokens)..end (this slot's earlier ones match)."""
        start = len(self.tokens)
        shared = source.cells[start:end]
        self.ledger.hold(shared)
        self.tokens.extend(source.tokens[start:end])
        self.cells.extend(shared)

    def only_own_cells(self) -> int:
        return self.ledger.freed_by(self.cells)


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

    @property
    def cells_to_come(self) -> int:
        """Cells this turn may still take: the rest of its prompt and of its reply."""
        return len(self.pending) + self.req.max_tokens - self.generated
