"""Token bytes to text that is safe to stream."""

from __future__ import annotations

import codecs


class TokenText:
    """UTF-8 pieces of tokens in, whole characters out.

    A character split across tokens (emoji, CJK, accents) waits for its last byte. One still
    unfinished when the reply stops (its token limit fell mid-character) is never flushed, and
    byte sequences that can never form a character (a sampled stray continuation byte) are
    skipped: no U+FFFD of ours ever reaches the streamed text or the stored reply.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("ignore")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)
