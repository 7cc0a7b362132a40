"""The token cache: texts tokenized once, bounded by the tokens it holds."""

from __future__ import annotations

from agentic.engine.token_cache import TokenCache


class CountingTokenizer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, text: str, special: bool) -> list[int]:
        self.calls.append((text, special))
        return [ord(c) + (1000 if special else 0) for c in text]


def test_a_text_is_tokenized_once_per_way_of_reading_it():
    cache, tokenize = TokenCache(limit=100), CountingTokenizer()
    assert list(cache.tokens("abc", False, tokenize)) == [97, 98, 99]
    assert list(cache.tokens("abc", False, tokenize)) == [97, 98, 99]
    assert list(cache.tokens("abc", True, tokenize)) == [1097, 1098, 1099]  # never the plain reading's tokens
    assert tokenize.calls == [("abc", False), ("abc", True)]


def test_the_least_recently_used_texts_go_past_the_limit():
    cache, tokenize = TokenCache(limit=10), CountingTokenizer()
    for text in ("aaaa", "bbbb", "aaaa", "cccc"):  # "aaaa" used again, so "bbbb" is the one to go
        cache.tokens(text, False, tokenize)
    assert cache.size == 8 and len(cache) == 2
    cache.tokens("aaaa", False, tokenize)
    cache.tokens("bbbb", False, tokenize)
    assert tokenize.calls.count(("aaaa", False)) == 1 and tokenize.calls.count(("bbbb", False)) == 2


def test_a_text_longer_than_the_whole_cache_is_tokenized_but_not_kept():
    cache, tokenize = TokenCache(limit=4), CountingTokenizer()
    assert len(cache.tokens("abcdef", False, tokenize)) == 6
    assert cache.size == 0 and len(cache) == 0
