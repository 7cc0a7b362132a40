"""Which of a session's messages its prompt holds once the conversation outgrows the context."""

from __future__ import annotations

from typing import Callable

Messages = list[dict[str, str]]


class PromptTooLong(Exception):
    pass


class HistoryWindow:
    """Drops the oldest turns of a conversation that no longer fits, and remembers where it cut.

    Dropping just enough turns would move the prompt's start on every later turn and force a
    prefill of the whole history each time. Instead a cut goes down to `refill` of the budget
    and then stays put, so the turns that follow extend a prompt whose prefix is cached, until
    the conversation outgrows the context again.
    """

    def __init__(self, prompt: Callable[[Messages], tuple[str, list[int]]], refill: float = 0.5) -> None:
        self.prompt = prompt
        self.refill = refill
        self._cuts: dict[str, int] = {}

    def fit(self, session_id: str, messages: Messages, budget: int) -> tuple[str, list[int], int]:
        """The prompt's text, its tokens and how many old messages it leaves out."""
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        history = messages[len(system):]
        cut = self._cuts.get(session_id, 0)
        if cut >= len(history):  # the history is shorter than when we cut it: start over
            cut = 0
        limit = budget
        while True:
            text, tokens = self.prompt(system + history[cut:])
            if len(tokens) <= limit or (len(tokens) <= budget and len(history) - cut <= 1):
                break
            if len(history) - cut <= 1:
                raise PromptTooLong(f"the message needs {len(tokens)} tokens; this session's context holds {budget} besides the reply")
            cut += 2 if len(history) - cut > 2 and history[cut]["role"] == "user" else 1
            limit = int(budget * self.refill)
        self._cuts[session_id] = cut
        return text, tokens, cut

    def forget(self, session_id: str) -> None:
        self._cuts.pop(session_id, None)
