"""How many prompts go into one decode step, decided from what a step costs here.

A step costs a fixed part (the weights read once, the graph run) plus a part per token it
holds. On a CPU the part per token dominates, so taking a burst's prompts a few per step gives
the first ones their first token early at the price of a fixed part per extra step; on a GPU
the fixed part dominates and every prompt goes in one step. The engine times both at start
(`measure_prefill_costs`), and `PrefillPolicy` picks, for the prompts waiting, the count per
step with the earliest mean first token among those whose last prompt is in no later than
P95_SLACK after the fewest steps that could hold them all (what llama-server does): a burst's
p95 as with one batch, its p50 well before.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from agentic.engine.batch import Batch
from agentic.engine.self_check import checked_decode

log = logging.getLogger("agentic.engine")

# How much later than in the fewest steps the last prompt of a burst may get its first token.
# At 5 % (and a fixed part lost in measurement noise) the engine took a burst of 16 one prompt
# per step, and the last first token came 5-10 % after llama-server's. At 2 % it takes a burst
# of 8 three per step (at 1 % four): a mean first token 32 % before one step's, the last 1.4 % after.
P95_SLACK = 0.02

SAMPLE_TEXT = "The lighthouse keeper climbed the stairs at dusk, counting each step as the sea below grew dark and loud. "


@dataclass(frozen=True)
class PrefillCosts:
    """Seconds a decode step costs whatever it holds, and per token it holds."""
    fixed: float
    per_token: float

    def step(self, tokens: int, batch_tokens: int) -> float:
        """A step of this many prompt tokens (llama.cpp runs more than a batch in several passes)."""
        return self.fixed * max(1, math.ceil(tokens / batch_tokens)) + self.per_token * tokens


class PrefillPolicy:
    def __init__(self, costs: PrefillCosts | None, batch_tokens: int) -> None:
        self.costs = costs
        self.batch_tokens = batch_tokens

    def prompts_per_step(self, pending: list[int]) -> int:
        """How many of the waiting prompts (their tokens still to compute, oldest first) go into
        the next step: one at a time without a measurement."""
        if not pending:
            return 0
        return choose_prompts_per_step(self.costs, pending, self.batch_tokens) if self.costs else 1


def choose_prompts_per_step(costs: PrefillCosts, pending: list[int], batch_tokens: int) -> int:
    """The count per step (1..all) with the lowest mean time to first token of prompts waiting
    together, among those whose last prompt finishes within P95_SLACK of the fewest steps that
    hold them all (each prompt finishes with the step that holds it)."""
    fewest = _finish_times(costs, pending, len(pending), batch_tokens)
    best, best_mean = len(pending), sum(fewest) / len(pending)
    for per_step in range(1, len(pending)):
        finish = _finish_times(costs, pending, per_step, batch_tokens)
        mean = sum(finish) / len(pending)
        if finish[-1] <= fewest[-1] * (1 + P95_SLACK) and mean < best_mean * 0.999:
            best, best_mean = per_step, mean
    return best


def _finish_times(costs: PrefillCosts, pending: list[int], per_step: int, batch_tokens: int) -> list[float]:
    """When each prompt is in, `per_step` at a time (the last step holds what is left)."""
    finish: list[float] = []
    done_at = 0.0
    for start in range(0, len(pending), per_step):
        group = pending[start:start + per_step]
        done_at += costs.step(sum(group), batch_tokens)
        finish += [done_at] * len(group)
    return finish


def measure_prefill_costs(model, tokens: int = 32, k: int = 4, trials: int = 3) -> PrefillCosts | None:
    """Time a step of one token against one of k prompts of `tokens` tokens, on the real context
    (before serving): the difference is what the tokens cost, the rest of the one-token step is
    the fixed part. Takes the fastest of a few trials of each, interleaved, so a busy machine
    skews both alike."""
    k = min(k, model.n_seq, model.n_batch // tokens)
    if k < 1:
        return None
    prompt = model.tokenize(SAMPLE_TEXT * (tokens // 10 + 1))[:tokens]
    batch = Batch(model.n_batch, model.n_seq)
    try:
        # The fastest of the trials: a first decode that allocates (or meets a new shape) is never it.
        single, several = math.inf, math.inf
        for _ in range(trials):
            single = min(single, _decode_prompts(model, batch, prompt[:1], 1))
            several = min(several, _decode_prompts(model, batch, prompt, k))
    finally:
        batch.free()
    per_token = max(0.0, (several - single) / (k * len(prompt) - 1))
    costs = PrefillCosts(fixed=max(0.0, single - per_token), per_token=per_token)
    log.info("prefill: a step costs %.1f ms plus %.2f ms a token (%d prompts of %d tokens: %.1f ms, one token: %.1f ms)",
             costs.fixed * 1000, per_token * 1000, k, len(prompt), several * 1000, single * 1000)
    return costs


def _decode_prompts(model, batch: Batch, prompt: list[int], count: int) -> float:
    batch.fill(prompt, count)
    try:
        return checked_decode(batch, model, f"{count} prompts of {len(prompt)} tokens (measuring prefill costs)")
    finally:
        for seq in range(count):
            model.seq_truncate(seq, 0)
