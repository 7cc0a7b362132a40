"""How many prompts go into one step, from the costs the engine measures at start."""

import asyncio

from agentic import keys
from agentic.engine.prefill import PrefillCosts, PrefillPolicy, choose_prompts_per_step
from tests.conftest import new_session
from tests.engine.test_engine import CPU_COSTS, reply, started_app

BATCH = 512
# A GPU: a step costs about the same whatever it holds.
GPU_COSTS = PrefillCosts(fixed=0.010, per_token=0.00001)
# This CPU (2 cores, the bundled model): 5.5-6.0 ms a step plus 2.8-3.0 ms a token.
THIS_CPU = PrefillCosts(fixed=0.0058, per_token=0.0029)


def steps_taken(policy: PrefillPolicy, pending: list[int]) -> list[int]:
    """The prompts each step takes from a burst, as the scheduler asks step by step."""
    taken = []
    while pending:
        count = policy.prompts_per_step(pending)
        taken.append(count)
        pending = pending[count:]
    return taken


def test_without_a_fixed_cost_prompts_go_one_per_step():
    policy = PrefillPolicy(CPU_COSTS, BATCH)
    assert steps_taken(policy, [36] * 16) == [1] * 16


def test_on_a_gpu_every_waiting_prompt_goes_in_one_step():
    policy = PrefillPolicy(GPU_COSTS, BATCH)
    assert [policy.prompts_per_step([36] * n) for n in range(1, 15)] == list(range(1, 15))  # up to 504 tokens
    assert len(steps_taken(policy, [36] * 16)) == 2  # 576 tokens: two passes in any case


def test_this_cpu_takes_a_burst_in_a_few_steps():
    """Eight 36-token prompts: one step of all 841 ms; three per step a mean first token of
    572 ms, the last at 853 ms (1.4 % later); two per step would put the last 2.0 % later."""
    assert steps_taken(PrefillPolicy(THIS_CPU, BATCH), [36] * 8) == [3, 3, 2]
    assert steps_taken(PrefillPolicy(THIS_CPU, BATCH), [36] * 16) == [3, 3, 3, 3, 2, 2]


def test_steps_the_batch_needs_anyway_cost_nothing():
    """Prompts beyond one batch take two passes in one step too: splitting them there is free."""
    costs = PrefillCosts(fixed=0.100, per_token=0.001)  # a large fixed part: all at once, but for the batch
    assert choose_prompts_per_step(costs, [300, 300], BATCH) == 1
    assert choose_prompts_per_step(costs, [200, 200], BATCH) == 2


def test_without_a_measurement_prompts_go_one_per_step():
    assert PrefillPolicy(None, BATCH).prompts_per_step([36] * 8) == 1
    assert PrefillPolicy(GPU_COSTS, BATCH).prompts_per_step([]) == 0


async def test_the_engine_measures_at_start_and_follows_the_policy(aiohttp_client, tmp_path):
    """The costs come from the real context; with GPU-like costs a burst's prompts share a step."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    costs = scheduler.policy.costs
    assert costs is not None and costs.fixed > 0 and costs.per_token > 0
    scheduler.policy = PrefillPolicy(GPU_COSTS, scheduler.model.n_batch)
    sids = [(await new_session(client, system_prompt=f"You are assistant number {i}.", settings={"temperature": 0}))["session_id"] for i in range(3)]
    await asyncio.gather(*(reply(client, sid, f"Say something about {topic}.", max_tokens=4) for sid, topic in zip(sids, ["owls", "rain", "tea"])))
    assert scheduler.counters.max_prompts_in_step >= 2
