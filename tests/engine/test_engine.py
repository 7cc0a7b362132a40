"""The engine with the real model: slots, eviction to disk, restore, trimming, limits."""

import asyncio
import sys
from types import SimpleNamespace

import pytest

from agentic import keys
from agentic.app import create_app
from agentic.engine.chat_template import ChatTemplate
from agentic.engine.engine import SWITCH_INTERVAL_S
from agentic.engine import scheduler as scheduler_module
from agentic.engine.prefill import PrefillCosts, PrefillPolicy
from agentic.engine.scheduler import ActiveTurn, Scheduler, common_prefix
from agentic.engine.slots import Slot
from tests.chat.helpers import chat_turn, open_session_socket, receive_until_done
from tests.conftest import make_settings, new_session


# A CPU where a step costs only what its tokens do: prompts go one per step.
CPU_COSTS = PrefillCosts(fixed=0.0, per_token=0.001)


async def started_app(aiohttp_client, tmp_path, park_after_s: float | None = None, **overrides):
    """The main server with the real model; park_after_s=0 parks every idle session at once."""
    app = create_app(make_settings(tmp_path / "data", load_model=True, **overrides))
    client = await aiohttp_client(app)
    await app[keys.engine_key].wait_loaded()
    if park_after_s is not None:
        app[keys.engine_key].scheduler.park_after_s = park_after_s
    return client


async def written(client) -> None:
    """Wait until the KV store has written every state it was given."""
    await asyncio.to_thread(client.app[keys.engine_key].scheduler.kv.flush)


def recording_steps(scheduler) -> list[dict[int, int]]:
    """Wrap the real decode so each step of turns records how many tokens each sequence put in
    it (not the close-outs of finished replies, which run only while no turn does)."""
    batch, real_decode, steps = scheduler._batch, scheduler._batch.decode, []

    def decode(ctx):
        per_seq: dict[int, int] = {}
        for i in range(batch.n):
            seq = batch.raw.seq_id[i][0]
            per_seq[seq] = per_seq.get(seq, 0) + 1
        if scheduler.active:
            steps.append(per_seq)
        return real_decode(ctx)

    batch.decode = decode
    return steps


async def parked(client, *session_ids: str) -> None:
    """Wait until these sessions' states have left the KV cache (park_after_s=0 parks within a loop or two)."""
    scheduler = client.app[keys.engine_key].scheduler
    async with asyncio.timeout(10):
        while any(sid in scheduler.resident for sid in session_ids):
            await asyncio.sleep(0.02)
    await written(client)


async def reply(client, sid, content, max_tokens=12):
    resp = await client.post(f"/sessions/{sid}/messages", json={"content": content, "max_tokens": max_tokens})
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def test_evicted_sessions_restore_their_own_state(aiohttp_client, tmp_path, prompts):
    """Two sessions with different secrets: each turn's session is parked when the other's starts."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=0, engine_parallel=1)
    engine = client.app[keys.engine_key]
    greedy = {"settings": {"temperature": 0}}
    a = (await new_session(client, system_prompt="The secret is ALPHA-7.", **greedy))["session_id"]
    b = (await new_session(client, system_prompt="The secret is BRAVO-9.", **greedy))["session_id"]
    await reply(client, a, "What is the secret?")
    await reply(client, b, "What is the secret?")
    await written(client)
    assert engine.stats()["evictions"] >= 1 and (tmp_path / "data" / "kv" / f"{a}.kv").exists()
    second_a = await reply(client, a, "Say it again.")
    assert second_a["usage"]["restored_state"] is True
    assert second_a["usage"]["cached_tokens"] > 0
    prompt_a = prompts[a]
    assert "ALPHA-7" in prompt_a and "BRAVO-9" not in prompt_a
    second_b = await reply(client, b, "Say it again.")
    assert second_b["usage"]["restored_state"] is True
    assert "BRAVO-9" in prompts[b] and "ALPHA-7" not in prompts[b]
    assert engine.stats()["restores"] >= 2

    # Continuing from the restored cache gives exactly what a cold computation gives.
    fresh = await started_app(aiohttp_client, tmp_path / "cold", engine_parallel=1)
    c = (await new_session(fresh, system_prompt="The secret is ALPHA-7.", **greedy))["session_id"]
    messages = (await (await client.get(f"/sessions/{a}/messages")).json())["messages"]
    await fresh.app[keys.store_key].add_message(fresh.app[keys.store_key].sessions[c], "user", messages[0]["content"])
    await fresh.app[keys.store_key].add_message(fresh.app[keys.store_key].sessions[c], "assistant", messages[1]["content"])
    cold = await reply(fresh, c, "Say it again.")
    assert cold["usage"]["cached_tokens"] == 0
    assert cold["message"]["content"] == second_a["message"]["content"]


async def test_state_survives_a_restart(aiohttp_client, tmp_path):
    settings_dir = tmp_path
    client = await started_app(aiohttp_client, settings_dir)
    sid = (await new_session(client, settings={"temperature": 0}))["session_id"]
    await reply(client, sid, "Name a fruit.")
    await client.close()  # shutdown saves every slot
    assert (tmp_path / "data" / "kv" / f"{sid}.kv").exists()
    again = await started_app(aiohttp_client, settings_dir)
    second = await reply(again, sid, "Name another.")
    assert second["usage"]["restored_state"] is True and second["usage"]["cached_tokens"] > 0


async def test_state_is_used_only_when_it_matches_the_history(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path, park_after_s=0, engine_parallel=1)
    a = (await new_session(client))["session_id"]
    b = (await new_session(client))["session_id"]
    await reply(client, a, "Hello there.")
    await reply(client, b, "Evict the other one.")
    await written(client)
    kv = tmp_path / "data" / "kv" / f"{a}.kv"
    assert kv.exists()
    # The same session's history changes under the saved state (edited system prompt):
    await client.patch(f"/sessions/{a}", json={"system_prompt": "Completely different instructions."})
    after = await reply(client, a, "Hello again.")
    assert after["usage"]["restored_state"] is False or after["usage"]["cached_tokens"] < 5


async def test_clear_and_delete_drop_model_state(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path, park_after_s=0, engine_parallel=1)
    engine = client.app[keys.engine_key]
    a = (await new_session(client))["session_id"]
    b = (await new_session(client))["session_id"]
    await reply(client, a, "Hello.")
    await reply(client, b, "Hi.")  # a is now parked (and on disk), b in its slot
    await written(client)
    assert (tmp_path / "data" / "kv" / f"{a}.kv").exists()
    await client.post(f"/sessions/{a}/clear")
    await written(client)
    assert not (tmp_path / "data" / "kv" / f"{a}.kv").exists()
    await client.delete(f"/sessions/{b}")
    assert all(slot.session_id != b for slot in engine.scheduler.slots)
    assert b not in engine.scheduler.resident and not engine.scheduler.kv.in_ram(b)
    assert not any({a, b} & {slot.session_id, slot.former_session} for slot in engine.scheduler.slots)
    after = await reply(client, a, "Fresh start.")
    # Only the prefix both sessions shared (the default system prompt) may come back, from the holder.
    assert after["usage"]["cached_tokens"] == after["usage"].get("shared_tokens", 0) and after["usage"]["restored_state"] is False


async def test_history_is_trimmed_when_it_outgrows_the_context(aiohttp_client, tmp_path, prompts):
    client = await started_app(aiohttp_client, tmp_path, engine_ctx_per_session=256)
    sid = (await new_session(client))["session_id"]
    record = client.app[keys.store_key].sessions[sid]
    for i in range(12):
        await client.app[keys.store_key].add_message(record, "user", f"Message {i}: " + "words " * 20)
        await client.app[keys.store_key].add_message(record, "assistant", "Noted. " * 5)
    body = await reply(client, sid, "Summarise.", max_tokens=8)
    assert body["usage"]["trimmed_messages"] > 0
    assert body["usage"]["prompt_tokens"] + 8 <= 256
    assert "Message 0:" not in prompts[sid]
    following = await reply(client, sid, "And one more thing.", max_tokens=8)
    assert following["usage"]["trimmed_messages"] == body["usage"]["trimmed_messages"]  # the cut stayed put...
    assert following["usage"]["cached_tokens"] >= body["usage"]["prompt_tokens"] - 8  # ...so the prefix was reused


async def test_too_long_single_message_is_a_clear_error(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path, engine_ctx_per_session=128, max_message_chars=50_000)
    sid = (await new_session(client))["session_id"]
    resp = await client.post(f"/sessions/{sid}/messages", json={"content": "word " * 2000, "max_tokens": 8})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "context_overflow"
    ok = await reply(client, sid, "Short one.", max_tokens=4)  # the session still works
    assert ok["message"]["role"] == "assistant"


async def test_full_queue_answers_busy(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path, engine_parallel=1, engine_max_queue=1)
    sids = [(await new_session(client))["session_id"] for _ in range(4)]
    results = await asyncio.gather(*(client.post(f"/sessions/{s}/messages", json={"content": "Tell a story.", "max_tokens": 20}) for s in sids))
    statuses = sorted(r.status for r in results)
    assert 429 in statuses and 200 in statuses
    busy = next(r for r in results if r.status == 429)
    assert (await busy.json())["error"]["code"] == "busy"


async def test_queued_turns_are_told_their_position(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path, engine_parallel=1)
    first, _ = await open_session_socket(client)
    second, _ = await open_session_socket(client)
    await first.send_json({"type": "chat", "content": "Tell a long story.", "max_tokens": 40})
    await first.receive_json()
    frames = await chat_turn(second, "Hi", max_tokens=4)
    assert any(f["type"] == "queued" and f["position"] == 1 for f in frames)
    await first.close()
    await second.close()


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_chat_template_renders_system_and_generation_prompt():
    template = ChatTemplate(None)
    text = template.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_is_sandboxed():
    from jinja2.exceptions import SecurityError

    evil = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(SecurityError):
        evil.render([{"role": "user", "content": "x"}])


async def test_ignore_eos_gives_fixed_length_replies(aiohttp_client, tmp_path):
    client = await started_app(aiohttp_client, tmp_path)
    sid = (await new_session(client, settings={"ignore_eos": True}))["session_id"]
    body = await reply(client, sid, "Say yes.", max_tokens=40)
    assert body["usage"]["completion_tokens"] == 40 and body["usage"]["finish_reason"] == "length"


async def test_prompts_go_in_one_per_step_beside_running_streams_and_a_burst_goes_first(aiohttp_client, tmp_path, monkeypatch):
    """A stream already running gets a token every step while two new prompts go in one per
    step; the new turn answered first waits with its second token until the other prompt is in."""
    monkeypatch.setattr(scheduler_module, "BURST_WINDOW_S", 5.0)  # two REST turns on a loaded CI machine: one burst
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    scheduler.policy = PrefillPolicy(CPU_COSTS, scheduler.model.n_batch)
    sids = [(await new_session(client, settings={"ignore_eos": True}))["session_id"] for _ in range(3)]
    running = asyncio.create_task(reply(client, sids[0], "Tell me about rivers.", max_tokens=60))
    while scheduler.counters.tokens_generated < 3:
        await asyncio.sleep(0.005)
    steps = recording_steps(scheduler)
    burst = await asyncio.gather(*(reply(client, sid, f"Tell me about topic {i}.", max_tokens=4) for i, sid in enumerate(sids[1:])))
    assert (await running)["usage"]["completion_tokens"] == 60 and all(r["usage"]["completion_tokens"] == 4 for r in burst)

    seq_of = {slot.session_id: slot.seq for slot in scheduler.slots}
    stream, new = seq_of[sids[0]], {seq_of[sid] for sid in sids[1:]}
    prompt_steps = [i for i, step in enumerate(steps) if any(n > 1 for n in step.values())]
    assert len(prompt_steps) == 2 and all(sum(n > 1 for n in steps[i].values()) == 1 for i in prompt_steps)  # one prompt per step
    assert all(steps[i].get(stream) == 1 for i in range(prompt_steps[-1] + 1))  # the running stream never waited
    first, second = prompt_steps
    (answered_first,) = [seq for seq in new if steps[first].get(seq, 0) > 1]
    assert answered_first not in steps[second]  # its second token came after the other prompt was in
    assert all(answered_first in step for step in steps[second + 1:second + 3])


async def test_a_burst_is_planned_whole_though_its_turns_reach_the_engine_apart(aiohttp_client, tmp_path, monkeypatch):
    """Turns sent together reach the engine some ms apart (each message is stored first): the
    burst's first step waits for the turns announced with it, so a policy that takes every
    waiting prompt at once puts all three in that step."""
    monkeypatch.setattr(scheduler_module, "GATHER_S", 5.0)  # storing may take long on a loaded CI machine
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    scheduler.policy = PrefillPolicy(PrefillCosts(fixed=1.0, per_token=0.0001), scheduler.model.n_batch)
    # Own system prompts: no shared prefix for the later prompts to wait for (see _prefix_coming).
    sids = [(await new_session(client, system_prompt=f"{name} is your name.", settings={"temperature": 0}))["session_id"] for name in ("Ada", "Bo", "Cy")]
    sockets = [(await open_session_socket(client, sid))[0] for sid in sids]
    steps = recording_steps(scheduler)
    for i, ws in enumerate(sockets):
        await ws.send_json({"type": "chat", "content": f"Tell me about topic {i}.", "max_tokens": 4})
    for ws in sockets:
        assert (await receive_until_done(ws))[-1]["type"] == "done"
    assert sum(n > 1 for n in steps[0].values()) == 3


async def test_a_turn_that_fails_before_the_engine_is_not_waited_for(aiohttp_client, tmp_path, monkeypatch):
    """A turn refused while its message is stored (nothing to regenerate) withdraws its
    announcement, so the next burst does not wait for it."""
    monkeypatch.setattr(scheduler_module, "GATHER_S", 5.0)
    client = await started_app(aiohttp_client, tmp_path)
    scheduler = client.app[keys.engine_key].scheduler
    refused, other = [(await new_session(client))["session_id"] for _ in range(2)]
    resp = await client.post(f"/sessions/{refused}/regenerate", json={})
    assert resp.status == 409
    await reply(client, other, "Say yes.", max_tokens=2)
    assert scheduler._announced == {}


def test_a_fresh_stream_waits_only_for_its_own_burst():
    """Prompts sent within the window of this turn hold its second token; later ones, finished
    ones and more than BURST_HOLD_TOKENS of prompts do not."""
    def turn(submitted: float, pending: int) -> ActiveTurn:
        slot = Slot(seq=0)
        active = ActiveTurn(req=SimpleNamespace(submitted=submitted), slot=slot, prompt=[1] * pending, pending=[1] * pending, sampler=None, usage={}, started=0.0)
        slot.turn = active
        return active

    window = scheduler_module.BURST_WINDOW_S
    fresh, same_burst, later, done = turn(10.0, 0), turn(10.0 + window / 2, 40), turn(10.0 + window * 2, 40), turn(10.0, 40)
    done.slot.turn = None  # finished or cancelled
    engine = SimpleNamespace(active=[fresh, same_burst, later, done])
    assert Scheduler._prompts_ahead_of_second_token(engine, fresh) == [same_burst]
    same_burst.pending = [1] * (scheduler_module.BURST_HOLD_TOKENS + 1)
    assert Scheduler._prompts_ahead_of_second_token(engine, fresh) == []


async def test_the_switch_interval_is_the_process_own_again_once_the_engine_stops(aiohttp_client, tmp_path):
    before = sys.getswitchinterval()
    client = await started_app(aiohttp_client, tmp_path)
    assert sys.getswitchinterval() == SWITCH_INTERVAL_S != before
    await client.close()
    assert sys.getswitchinterval() == before
