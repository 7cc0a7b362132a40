"""How many prompts go into one step, from the costs the engine measures at start."""

import asyncio

from agentic import keys
from agentic.engine.prefill import PrefillCosts, PrefillPolicy, choose_prompts_per_step
from tests.conftest import new_session
from tests.engine.test_engine import CPU_COSTS, reply, started_app

# A GPU: four prompts in one batch cost hardly more than one.
GPU_COSTS = PrefillCosts(one=0.010, several=0.011, k=4, tokens=32)
# Between the two: a step has a fixed part worth a fifth of one prompt (this CPU measured 7 %).
MIXED_COSTS = PrefillCosts(one=0.100, several=0.340, k=4, tokens=32)


def test_on_a_cpu_prompts_go_one_per_step():
    policy = PrefillPolicy(CPU_COSTS, 16)
    assert [policy.prompts_per_step(n) for n in range(1, 17)] == [1] * 16


def test_on_a_gpu_every_waiting_prompt_goes_in_one_step():
    policy = PrefillPolicy(GPU_COSTS, 16)
    assert [policy.prompts_per_step(n) for n in range(1, 17)] == list(range(1, 17))
    assert policy.prompts_per_step(40) == 16  # never more than the turns that run at once


def test_a_fixed_cost_per_step_makes_small_groups_pay():
    """Eight prompts: one batch 0.66 s for all; four per step 0.34 s for half, 0.68 s for the
    rest (3 % later); two per step 0.72 s for the last (9 %) and one per step 0.80 s: too late."""
    assert CPU_COSTS.fixed == 0 and round(MIXED_COSTS.fixed, 3) == 0.02
    assert choose_prompts_per_step(MIXED_COSTS, 8) == 4
    assert choose_prompts_per_step(MIXED_COSTS, 16) == 4  # 4 steps: 1.36 s against 1.30 s in one
    quiet_cpu = PrefillCosts(one=0.0964, several=0.3652, k=4, tokens=32)  # this CPU, quiet
    assert choose_prompts_per_step(quiet_cpu, 8) == 2
    assert choose_prompts_per_step(quiet_cpu, 7) == 2  # the last step holds one: 0.65 s against 0.63 s in one batch


def test_without_a_measurement_prompts_go_one_per_step():
    assert PrefillPolicy(None, 8).prompts_per_step(8) == 1
    assert PrefillPolicy(GPU_COSTS, 8).prompts_per_step(0) == 0


async def test_the_engine_measures_at_start_and_follows_the_policy(aiohttp_client, tmp_path):
    """The costs come from the real context; with GPU-like costs a burst's prompts share a step."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    costs = scheduler.policy.costs
    assert costs is not None and costs.k >= 2 and 0 < costs.one < costs.several
    scheduler.policy = PrefillPolicy(GPU_COSTS, scheduler.max_active)
    sids = [(await new_session(client, system_prompt=f"You are assistant number {i}.", settings={"temperature": 0}))["session_id"] for i in range(3)]
    await asyncio.gather(*(reply(client, sid, f"Say something about {topic}.", max_tokens=4) for sid, topic in zip(sids, ["owls", "rain", "tea"])))
    assert scheduler.counters.max_prompts_in_step >= 2
