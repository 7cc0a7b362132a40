"""A reusable llama_batch: tokens of several sequences decoded together."""

from __future__ import annotations

from typing import Any

import llama_cpp


class Batch:
    def __init__(self, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, n_seq)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        i = self.n
        b = self.raw
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self.n += 1
        return i

    def fill(self, tokens: list[int], sequences: int) -> None:
        """The same tokens at positions 0.. of sequences 0..sequences-1, logits at each one's last."""
        self.clear()
        for seq in range(sequences):
            for pos, token in enumerate(tokens):
                self.add(token, pos, seq, pos == len(tokens) - 1)

    def decode(self, ctx: Any) -> int:
        self.raw.n_tokens = self.n
        return llama_cpp.llama_decode(ctx, self.raw)

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.raw)
