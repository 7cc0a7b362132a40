"""A decode of the shapes chat uses, run once before the server says it is ready.

A llama.cpp build that cannot run on this machine (an instruction the CPU lacks, a kernel
that crashes on some batch size) then fails at start, where the operator sees it, instead
of at a person's first message. The kernels differ by batch shape, so it decodes one full
batch of prompt tokens spread over several sequences, then a few one-token steps of each.
"""

from __future__ import annotations

import logging
import time

from agentic.engine.batch import Batch

log = logging.getLogger("agentic.engine")

CHECK_SEQUENCES = 4
DECODE_STEPS = 3


class SelfCheckFailed(RuntimeError):
    """llama.cpp could not decode the check batches on this machine."""


def run_self_check(model) -> None:
    sequences = min(CHECK_SEQUENCES, model.n_seq)
    per_sequence = min(model.n_batch // sequences, model.n_ctx_seq - DECODE_STEPS - 1)
    token = model.tokenize("check")[-1]
    started = time.perf_counter()
    batch = Batch(model.n_batch, model.n_seq)
    try:
        batch.fill([token] * per_sequence, sequences)
        checked_decode(batch, model, f"a batch of {batch.n} prompt tokens over {sequences} sequences")
        for step in range(DECODE_STEPS):
            batch.clear()
            for seq in range(sequences):
                batch.add(token, per_sequence + step, seq, True)
            checked_decode(batch, model, f"decode step {step + 1} of {sequences} sequences")
    finally:
        batch.free()
        for seq in range(sequences):
            model.seq_truncate(seq, 0)
    log.info("self-check passed: %d prompt tokens over %d sequences and %d decode steps in %.0f ms",
             per_sequence * sequences, sequences, DECODE_STEPS, (time.perf_counter() - started) * 1000)


def checked_decode(batch: Batch, model, what: str) -> float:
    """Decode the batch; the seconds it took, or SelfCheckFailed saying what failed."""
    start = time.perf_counter()
    rc = batch.decode(model.ctx)
    if rc != 0:
        raise SelfCheckFailed(f"llama.cpp self-check failed: llama_decode returned {rc} for {what}")
    return time.perf_counter() - start
