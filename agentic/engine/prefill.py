"""How many prompts go into one decode step, decided from what a batch of prompts costs here.

On a CPU a batch of k prompts costs about k times one prompt, so taking them a few per step
gives the first ones their first token early. On a GPU a batch of many prompts costs little
more than one, so taking them together gives every one its first token almost as early as
the first. The engine times both at start (`measure_prefill_costs`) and `PrefillPolicy` picks,
for the number of prompts waiting, the count per step with the earliest mean first token
among those whose last prompt is in no later than P95_SLACK after one step holding them all
(what llama-server does): a burst's p95 as with one batch, its p50 well before.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from agentic.engine.batch import Batch
from agentic.engine.self_check import checked_decode

log = logging.getLogger("agentic.engine")

# How much later than in one batch the last prompt of a burst may get its first token (each
# step beyond the first adds the step's fixed cost, which the engine measures).
P95_SLACK = 0.05

SAMPLE_TEXT = "The lighthouse keeper climbed the stairs at dusk, counting each step as the sea below grew dark and loud. "


@dataclass(frozen=True)
class PrefillCosts:
    """Seconds to decode one prompt of `tokens` tokens alone, and `k` such prompts in one batch."""
    one: float
    several: float
    k: int
    tokens: int

    @property
    def per_prompt(self) -> float:
        return max(0.0, (self.several - self.one) / (self.k - 1))

    @property
    def fixed(self) -> float:
        return max(0.0, self.one - self.per_prompt)

    def step(self, prompts: int) -> float:
        """The modelled cost of a step holding this many prompts."""
        return self.fixed + self.per_prompt * prompts


class PrefillPolicy:
    def __init__(self, costs: PrefillCosts | None, max_prompts: int) -> None:
        self.costs = costs
        self._per_step = [1] + [choose_prompts_per_step(costs, n) if costs else 1 for n in range(1, max_prompts + 1)]

    def prompts_per_step(self, waiting: int) -> int:
        """How many of `waiting` prompts to put in the next step."""
        if waiting <= 0:
            return 0
        return self._per_step[min(waiting, len(self._per_step) - 1)]


def choose_prompts_per_step(costs: PrefillCosts, waiting: int) -> int:
    """The count per step (1..waiting) with the lowest mean time to first token of `waiting`
    prompts sent together, among those whose last prompt finishes within P95_SLACK of one step
    holding them all (each prompt finishes with the step that holds it)."""
    one_step = costs.step(waiting)
    best, best_mean = waiting, one_step
    for m in range(1, waiting):
        finish = _finish_times(costs, waiting, m)
        mean = sum(finish) / waiting
        if finish[-1] <= one_step * (1 + P95_SLACK) and mean < best_mean * 0.999:
            best, best_mean = m, mean
    return best


def _finish_times(costs: PrefillCosts, waiting: int, per_step: int) -> list[float]:
    """When each prompt is in, `per_step` at a time (the last step holds what is left)."""
    finish: list[float] = []
    done_at = 0.0
    for start in range(0, waiting, per_step):
        size = min(per_step, waiting - start)
        done_at += costs.step(size)
        finish += [done_at] * size
    return finish


def measure_prefill_costs(model, tokens: int = 32, k: int = 4, trials: int = 3) -> PrefillCosts | None:
    """Time one prompt alone against k prompts in one batch, on the real context (before serving).
    Takes the fastest of a few trials of each, interleaved, so a busy machine skews both alike."""
    k = min(k, model.n_seq, model.n_batch // tokens)
    if k < 2:
        return None
    prompt = model.tokenize(SAMPLE_TEXT * (tokens // 10 + 1))[:tokens]
    batch = Batch(model.n_batch, model.n_seq)
    try:
        # The fastest of the trials: a first decode that allocates (or meets a new shape) is never it.
        one, several = math.inf, math.inf
        for _ in range(trials):
            one = min(one, _decode_prompts(model, batch, prompt, 1))
            several = min(several, _decode_prompts(model, batch, prompt, k))
    finally:
        batch.free()
    costs = PrefillCosts(one=one, several=several, k=k, tokens=tokens)
    log.info("prefill: %d prompts of %d tokens in one batch cost %.1f ms, one alone %.1f ms", k, tokens, several * 1000, one * 1000)
    return costs


def _decode_prompts(model, batch: Batch, prompt: list[int], count: int) -> float:
    batch.fill(prompt, count)
    try:
        return checked_decode(batch, model, f"{count} prompts of {len(prompt)} tokens (measuring prefill costs)")
    finally:
        for seq in range(count):
            model.seq_truncate(seq, 0)
