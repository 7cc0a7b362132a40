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
        text, tokens = self.prompt(system + history[cut:])
        if len(tokens) > budget:
            text, tokens, cut = self._later_cut(system, history, cut, budget, len(tokens))
        self._cuts[session_id] = cut
        return text, tokens, cut

    def _later_cut(self, system: Messages, history: Messages, cut: int, budget: int, needed: int) -> tuple[str, list[int], int]:
        """The first cut past `cut`, a turn at a time, whose prompt fits `refill` of the budget (the
        last message alone may fill it): a binary search, as each try tokenizes the whole prompt
        and an API request may send thousands of messages."""
        cuts = []
        while len(history) - cut > 1:
            cut += 2 if len(history) - cut > 2 and history[cut]["role"] == "user" else 1
            cuts.append(cut)
        low, high, found = 0, len(cuts) - 1, None
        while low <= high:
            middle = (low + high) // 2
            text, tokens = self.prompt(system + history[cuts[middle]:])
            if len(tokens) <= int(budget * self.refill) or (len(tokens) <= budget and len(history) - cuts[middle] <= 1):
                found, high = (text, tokens, cuts[middle]), middle - 1
            else:
                low, needed = middle + 1, len(tokens)
        if found is None:
            raise PromptTooLong(f"the message needs {needed} tokens; this session's context holds {budget} besides the reply")
        return found

    def forget(self, session_id: str) -> None:
        self._cuts.pop(session_id, None)
