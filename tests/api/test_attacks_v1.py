"""Attacks on what the OpenAI-compatible API let in: a cheap request must not buy minutes of the
model's thread (which every session shares)."""

import pytest

from agentic.api.openai import parse_completion
from agentic.engine.window import HistoryWindow
from agentic.web.errors import ApiError


def test_thousands_of_one_word_messages_are_cut_in_few_tokenizations():
    # /v1/chat/completions takes any number of messages in one small body; cutting them one turn
    # at a time re-rendered and re-tokenized the whole history per turn (1000 messages held the
    # model for ~40 s, every other session's turn waiting behind it).
    calls = []

    def prompt(messages):
        calls.append(len(messages))
        text = " ".join(f"{m['role']}: {m['content']}" for m in messages)
        return text, text.split()

    messages = [{"role": "user", "content": "x"}] * 10_000
    text, tokens, cut = HistoryWindow(prompt).fit("s", messages, budget=2000)
    assert len(tokens) <= 1000 and cut > 0 and text.endswith("user: x")
    assert len(calls) < 40
    assert sum(calls) < 100_000  # tokenized messages, against ~25 million one turn at a time


@pytest.mark.parametrize("n", [True, 1.5, "1", [1]])
def test_n_that_is_not_the_integer_one_is_refused(n):
    # `True == 1` in Python, so {"n": true} was taken as one choice
    with pytest.raises(ApiError) as caught:
        parse_completion({"n": n, "messages": [{"role": "user", "content": "hi"}]}, 1000)
    assert caught.value.status == 400
