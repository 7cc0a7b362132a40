"""Token bytes to text that is safe to stream."""

from __future__ import annotations

import codecs


class TokenText:
    """UTF-8 pieces of tokens in, whole characters out.

    A character split across tokens (emoji, CJK, accents) waits for its last byte. One still
    unfinished when the reply stops (its token limit fell mid-character) is never flushed:
    it is dropped rather than sent as U+FFFD, so the streamed text and the stored reply never
    end in a broken character.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)
