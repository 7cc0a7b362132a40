"""The token cache: texts tokenized once, bounded by the memory it holds."""

from __future__ import annotations

from array import array

from agentic.engine.token_cache import TokenCache, entry_bytes


class CountingTokenizer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text: str, special: bool) -> list[int]:
        self.calls.append((text, special))
        return [ord(c) + (1000 if special else 0) for c in text]


def test_a_text_is_tokenized_once_per_way_of_reading_it():
    cache, tokenize = TokenCache(), CountingTokenizer()
    assert list(cache.tokens("abc", False, tokenize)) == [97, 98, 99]
    assert list(cache.tokens("abc", False, tokenize)) == [97, 98, 99]
    assert list(cache.tokens("abc", True, tokenize)) == [1097, 1098, 1099]  # never the plain reading's tokens
    assert tokenize.calls == [("abc", False), ("abc", True)]


def test_the_least_recently_used_texts_go_past_the_limit():
    one = entry_bytes("aaaa", array("i", range(4)))
    cache, tokenize = TokenCache(limit=2 * one + 1), CountingTokenizer()
    for text in ("aaaa", "bbbb", "aaaa", "cccc"):  # "aaaa" used again, so "bbbb" is the one to go
        cache.tokens(text, False, tokenize)
    assert cache.size == 2 * one and len(cache) == 2
    cache.tokens("aaaa", False, tokenize)
    cache.tokens("bbbb", False, tokenize)
    assert tokenize.calls.count(("aaaa", False)) == 1 and tokenize.calls.count(("bbbb", False)) == 2


def test_the_limit_counts_the_texts_too():
    """A long text of few tokens takes its room (a million one-token entries would be 4 MB of
    tokens and far more of texts and bookkeeping)."""
    cache = TokenCache(limit=20_000)
    cache.tokens("x" * 15_000, False, lambda text, special: [1])
    cache.tokens("y" * 15_000, False, lambda text, special: [2])
    assert len(cache) == 1 and 15_000 < cache.size <= 20_000


def test_a_text_larger_than_the_whole_cache_is_tokenized_but_not_kept():
    cache, tokenize = TokenCache(limit=300), CountingTokenizer()
    assert len(cache.tokens("abcdef", False, tokenize)) == 6
    assert cache.size == 0 and len(cache) == 0
