"""Which messages a prompt holds once a conversation outgrows the context (one token per word)."""

import pytest

from agentic.engine.window import HistoryWindow, PromptTooLong


def words(messages):
    return " ".join(f"{m['role']}: {m['content']}" for m in messages)


def prompt(messages):
    text = words(messages)
    return text, text.split()


def window():
    return HistoryWindow(prompt)


def conversation(turns, system=True):
    messages = [{"role": "system", "content": "be kind"}] if system else []
    for i in range(turns):
        messages += [{"role": "user", "content": f"question {i} " + "w " * 8}, {"role": "assistant", "content": f"answer {i} " + "w " * 8}]
    return messages


def test_a_conversation_that_fits_is_kept_whole():
    messages = conversation(3) + [{"role": "user", "content": "next"}]
    text, tokens, cut = window().fit("s", messages, budget=200)
    assert cut == 0 and text == words(messages) and len(tokens) == len(words(messages).split())


def test_an_overflow_cuts_whole_turns_down_to_half_the_budget_and_keeps_the_system_prompt():
    messages = conversation(10) + [{"role": "user", "content": "next"}]
    text, tokens, cut = window().fit("s", messages, budget=120)
    assert len(tokens) <= 60 and cut % 2 == 0 and cut > 0
    assert text.startswith("system: be kind user: question") and text.endswith("user: next")


def test_the_cut_stays_put_while_the_conversation_grows_so_the_prefix_is_reused():
    w = window()
    messages = conversation(10) + [{"role": "user", "content": "next"}]
    first_text, _, first_cut = w.fit("s", messages, budget=120)
    messages += [{"role": "assistant", "content": "sure"}, {"role": "user", "content": "and then"}]
    second_text, _, second_cut = w.fit("s", messages, budget=120)
    assert second_cut == first_cut and second_text.startswith(first_text)
    assert w.fit("other", conversation(2) + [{"role": "user", "content": "x"}], budget=120)[2] == 0  # a cut is per session
    for _ in range(10):
        messages += [{"role": "assistant", "content": "w " * 9}, {"role": "user", "content": "w " * 9}]
    _, tokens, later_cut = w.fit("s", messages, budget=120)
    assert later_cut > first_cut and len(tokens) <= 60


def test_a_shorter_history_or_a_forgotten_session_starts_from_the_beginning():
    w = window()
    w.fit("s", conversation(10) + [{"role": "user", "content": "next"}], budget=120)
    short = conversation(1) + [{"role": "user", "content": "again"}]
    assert w.fit("s", short, budget=120)[2] == 0
    w.fit("s", conversation(10) + [{"role": "user", "content": "next"}], budget=120)
    w.forget("s")
    assert w.fit("s", conversation(2) + [{"role": "user", "content": "x"}], budget=120)[2] == 0


def test_a_single_message_larger_than_half_the_budget_still_fits_whole():
    big = [{"role": "user", "content": "w " * 90}]
    _, tokens, cut = window().fit("s", conversation(3, system=False) + big, budget=120)
    assert cut == 6 and 60 < len(tokens) <= 120


def test_a_single_message_larger_than_the_budget_is_refused():
    with pytest.raises(PromptTooLong, match="tokens"):
        window().fit("s", [{"role": "user", "content": "w " * 200}], budget=120)
