"""The tokens of texts tokenized before: a conversation's prompt is tokenized again at every
turn (its history window may have moved), and its old messages need not be."""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from typing import Callable

# A 2,000-token conversation took 7 ms to tokenize here, on the inference thread, at every turn.
# 4 bytes a token: a million tokens (a few hundred long conversations) is 4 MB.
CACHED_TOKENS = 1 << 20


class TokenCache:
    """Tokens by (text, special), the least recently used dropped past `limit` tokens in all."""

    def __init__(self, limit: int = CACHED_TOKENS) -> None:
        self.limit = limit
        self.size = 0
        self._entries: OrderedDict[tuple[str, bool], array] = OrderedDict()
        self._lock = threading.Lock()

    def tokens(self, text: str, special: bool, tokenize: Callable[[str, bool], list[int]]) -> array:
        key = (text, special)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                return cached
        tokens = array("i", tokenize(text, special))
        with self._lock:
            if key not in self._entries and len(tokens) <= self.limit:
                self._entries[key] = tokens
                self.size += len(tokens)
                while self.size > self.limit:
                    _, dropped = self._entries.popitem(last=False)
                    self.size -= len(dropped)
        return tokens

    def __len__(self) -> int:
        return len(self._entries)
