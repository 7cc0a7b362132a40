"""Stop strings: the reply ends where one appears, and never shows any part of it.

Reply text arrives in pieces (whole characters, see TokenText) and a stop string may span
several of them, so a piece's tail that could be the start of a stop string is held back
until the next piece says whether it is one. Text that was sent is therefore never taken
back, and the stop string itself is never part of the reply.
"""

from __future__ import annotations

from typing import Iterable


class StopMatcher:
    """Feed reply pieces to `push`; it returns the text that may be shown now. Once a stop
    string appeared, `matched` names it and nothing more is returned. `flush` gives back what
    was held when the reply ends for another reason."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.matched: str | None = None
        self._held = ""

    def push(self, piece: str) -> str:
        if self.matched is not None:
            return ""
        if not self.stops:
            return piece
        text = self._held + piece
        found = [(at, stop) for stop in self.stops if (at := text.find(stop)) >= 0]
        if found:
            at, self.matched = min(found)
            self._held = ""
            return text[:at]
        keep = max(self._partial(text, stop) for stop in self.stops)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held if self.matched is None else ""

    @staticmethod
    def _partial(text: str, stop: str) -> int:
        """The length of the longest end of `text` that is a start of `stop` (shorter than it)."""
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                return size
        return 0
