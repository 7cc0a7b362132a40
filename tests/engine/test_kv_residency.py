"""The real model under a team's load: shared prefixes, parked idle sessions, restores that never stall the streams."""

import asyncio
import threading

import llama_cpp

from agentic import keys
from agentic.config import EngineSettings, bundled_model_path
from agentic.engine.batch import Batch
from agentic.engine.kv_store import KvStore
from agentic.engine.model import LlamaModel
from tests.conftest import new_session
from tests.engine.test_engine import parked, recording_steps, reply, started_app

GREEDY = {"temperature": 0}
PERSONA = ("You are the support assistant of the Northwind lighthouse museum. " * 12).strip()


async def test_a_shared_system_prompt_is_prefilled_once(aiohttp_client, tmp_path):
    """Three sessions with one persona, sent at once: the persona is computed once, the other
    two take its cells; their replies still differ."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    engine = client.app[keys.engine_key]
    questions = ["My name is Ada. What is my name?", "My name is Brutus. What is my name?", "My name is Cleo. What is my name?"]
    sids = [(await new_session(client, system_prompt=PERSONA, settings=GREEDY))["session_id"] for _ in questions]
    before = engine.stats()
    answers = await asyncio.gather(*(reply(client, sid, q, max_tokens=10) for sid, q in zip(sids, questions)))
    after = engine.stats()
    prompt_tokens = sum(a["usage"]["prompt_tokens"] for a in answers)
    shared = sorted(a["usage"].get("shared_tokens", 0) for a in answers)
    assert after["prefix_shares"] - before["prefix_shares"] == 2 and shared[0] == 0 and shared[1] > 150
    assert after["tokens_prefilled"] - before["tokens_prefilled"] == prompt_tokens - sum(shared)
    assert len({a["message"]["content"] for a in answers}) == 3


async def test_sessions_sharing_a_prefix_stay_isolated(aiohttp_client, tmp_path):
    """A session that took another's prefix answers exactly as it does alone, before and after
    the other is cleared. (Greedy tokens depend on how a prompt is split into batches, so the
    session alone runs where the batch size splits its prompt where the shared prefix ends.)"""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    first = (await new_session(client, system_prompt=PERSONA, settings=GREEDY))["session_id"]
    await reply(client, first, "My name is Ada. What is my name?", max_tokens=10)
    second = (await new_session(client, system_prompt=PERSONA, settings=GREEDY))["session_id"]
    shared = await reply(client, second, "My name is Brutus. What is my name?", max_tokens=10)
    n = shared["usage"]["shared_tokens"]
    assert n > 150
    await client.post(f"/sessions/{first}/clear")
    after_clear = await reply(client, second, "And what is the museum?", max_tokens=10)
    assert after_clear["usage"]["cached_tokens"] >= shared["usage"]["prompt_tokens"]

    alone = await started_app(aiohttp_client, tmp_path / "alone", engine_batch_size=n)
    sid = (await new_session(alone, system_prompt=PERSONA, settings=GREEDY))["session_id"]
    expected = await reply(alone, sid, "My name is Brutus. What is my name?", max_tokens=10)
    assert expected["usage"]["cached_tokens"] == 0
    assert shared["message"]["content"] == expected["message"]["content"]
    assert after_clear["message"]["content"] == (await reply(alone, sid, "And what is the museum?", max_tokens=10))["message"]["content"]


async def test_parked_sessions_are_restored_from_ram_and_from_disk(aiohttp_client, tmp_path):
    """Parked between turns (to RAM, or to disk only): each later turn restores the state and
    computes only its new tokens."""
    for ram_mb in (256, 0):
        client = await started_app(aiohttp_client, tmp_path / f"ram{ram_mb}", park_after_s=0, engine_kv_ram_mb=ram_mb)
        sid = (await new_session(client, settings=GREEDY))["session_id"]
        previous = await reply(client, sid, "Tell me about tides.", max_tokens=16)
        for content in ("Why are they higher in spring?", "Thanks. One more fact?"):
            await parked(client, sid)
            assert client.app[keys.engine_key].scheduler.kv.in_ram(sid) == bool(ram_mb)
            later = await reply(client, sid, content, max_tokens=16)
            assert later["usage"]["restored_state"] is True
            assert later["usage"]["cached_tokens"] >= previous["usage"]["prompt_tokens"]
            previous = later


async def test_a_restored_session_continues_with_the_tokens_of_one_never_evicted(aiohttp_client, tmp_path):
    """Greedy, turn by turn: one server keeps the session in its cache, another parks it to disk
    after every turn (out of RAM too) and restores it. Alone in their caches, the state lands in
    the cells it had, so every reply is token for token the same."""
    kept = await started_app(aiohttp_client, tmp_path / "kept", park_after_s=1e9)
    evicted = await started_app(aiohttp_client, tmp_path / "evicted", park_after_s=0, engine_kv_ram_mb=0)
    sessions = [(c, (await new_session(c, settings=GREEDY))["session_id"]) for c in (kept, evicted)]
    for turn, content in enumerate(("Tell me about tides.", "Why are spring tides higher?", "And neap tides?")):
        if turn:
            await parked(evicted, sessions[1][1])
        replies = [await reply(c, sid, content, max_tokens=24) for c, sid in sessions]
        assert replies[1]["usage"]["restored_state"] is bool(turn)
        assert replies[1]["usage"]["cached_tokens"] == replies[0]["usage"]["cached_tokens"]
        assert replies[1]["message"]["content"] == replies[0]["message"]["content"]


def test_a_restored_state_gives_the_logits_of_one_never_evicted(tmp_path):
    """The state taken to RAM, written to disk, read back and loaded into another sequence of a
    cache holding other cells: fed the same tokens, the model's logits match the never-evicted
    sequence's (to float noise: llama.cpp's sums depend a little on where the cells lie) and
    so does every greedy choice that is not a near tie."""
    model = LlamaModel(EngineSettings(model_path=bundled_model_path(), threads=2, parallel=4, ctx_per_session=1024, kv_budget_mb=64))
    store = KvStore(tmp_path, "model", ram_budget_bytes=0)
    batch = Batch(model.n_batch, model.n_seq)
    try:
        prompt = model.tokenize_chat([{"role": "user", "content": "Tell me about tides."}])[1]
        follow = model.tokenize(" They rise and fall twice a day, pulled by the moon and the sun. Why are spring tides higher?")
        decode(model, batch, 0, prompt, 0)
        store.put("s", prompt, model.seq_state(0))
        reference = [decode(model, batch, 0, [token], len(prompt) + i) for i, token in enumerate(follow)]
        model.seq_truncate(0, 0)
        decode(model, batch, 2, model.tokenize("other cells " * 60), 0)  # another session's cells come first
        store.flush()
        loaded = threading.Event()
        store.on_loaded = lambda _sid: loaded.set()
        assert store.ready("s") is False and store.take("s") is None  # on disk only, read back off-thread
        assert loaded.wait(10) and store.ready("s")
        saved = store.take("s")
        assert saved.tokens == prompt and model.load_seq_state(1, saved.state)
        restored = [decode(model, batch, 1, [token], len(prompt) + i) for i, token in enumerate(follow)]
    finally:
        batch.free()
        store.close()
        model.close()
    for ref, got in zip(reference, restored):
        assert max(abs(a - b) for a, b in zip(ref, got)) < 0.05 * (max(ref) - min(ref))
        top, second = sorted(ref, reverse=True)[:2]
        if top - second > 0.5:
            assert ref.index(top) == got.index(max(got))


def test_a_copied_prefix_gives_the_logits_of_one_prefilled_in_place():
    """llama.cpp copies a prefix between sequences when the next decode starts, the decode that
    also carries the source's own next token: the copy then holds what prefilling it would."""
    model = LlamaModel(EngineSettings(model_path=bundled_model_path(), threads=2, parallel=4, ctx_per_session=1024, kv_budget_mb=64))
    batch = Batch(model.n_batch, model.n_seq)
    try:
        persona = model.tokenize_chat([{"role": "system", "content": PERSONA}])[1]
        question = model.tokenize("<|im_start|>user\nWhat is the museum called?<|im_end|>\n<|im_start|>assistant\n", special=True)
        reference = decode(model, batch, 2, persona + question, 0)
        own = model.tokenize("Welcome aboard.")
        decode(model, batch, 0, persona + own, 0)
        model.seq_copy_prefix(0, 1, len(persona))
        batch.clear()
        batch.add(model.tokenize(" Ahoy")[0], len(persona) + len(own), 0, False)
        for i, token in enumerate(question):
            batch.add(token, len(persona) + i, 1, i == len(question) - 1)
        assert batch.decode(model.ctx) == 0
        copied = list(llama_cpp.llama_get_logits_ith(model.ctx, batch.n - 1)[:model.n_vocab])
    finally:
        batch.free()
        model.close()
    assert max(abs(a - b) for a, b in zip(reference, copied)) < 0.05 * (max(reference) - min(reference))
    assert reference.index(max(reference)) == copied.index(max(copied))


def decode(model, batch, seq: int, tokens: list[int], start: int) -> list[float]:
    """Decode tokens into a sequence; the logits after the last one."""
    batch.clear()
    for i, token in enumerate(tokens):
        batch.add(token, start + i, seq, i == len(tokens) - 1)
    assert batch.decode(model.ctx) == 0
    return list(llama_cpp.llama_get_logits_ith(model.ctx, batch.n - 1)[:model.n_vocab])


async def test_parking_and_restoring_never_stall_a_running_stream(aiohttp_client, tmp_path, monkeypatch):
    """While a stream runs, other sessions are parked, written to disk, dropped from RAM, read
    back and restored: the stream gets a token in every step, and no disk I/O runs on the
    inference thread."""
    io_threads: list[str] = []
    real_write, real_read = KvStore._write, KvStore.read

    def write(self, *args):
        io_threads.append(threading.current_thread().name)
        return real_write(self, *args)

    def read(self, session_id):
        io_threads.append(threading.current_thread().name)
        return real_read(self, session_id)

    monkeypatch.setattr(KvStore, "_write", write)
    monkeypatch.setattr(KvStore, "read", read)
    client = await started_app(aiohttp_client, tmp_path, park_after_s=0, engine_kv_ram_mb=0)
    scheduler = client.app[keys.engine_key].scheduler
    others = [(await new_session(client, settings=GREEDY))["session_id"] for _ in range(2)]
    for sid in others:
        await reply(client, sid, "Remember the number 42.", max_tokens=4)
    await parked(client, *others)
    assert not any(scheduler.kv.in_ram(sid) for sid in others)  # parked, then on disk only

    stream = (await new_session(client, settings={"ignore_eos": True}))["session_id"]
    running = asyncio.create_task(reply(client, stream, "Tell me a long story.", max_tokens=80))
    while scheduler.counters.tokens_generated < 3 or stream not in scheduler.resident:
        await asyncio.sleep(0.005)
    seq = scheduler._resident_slot(stream).seq
    steps = recording_steps(scheduler)
    restored = [await reply(client, sid, "Which number?", max_tokens=4) for sid in others]  # read from disk, restored, parked again
    assert (await running)["usage"]["completion_tokens"] == 80
    assert all(r["usage"]["restored_state"] for r in restored)

    stream_steps = [i for i, step in enumerate(steps) if seq in step]
    assert stream_steps and stream_steps == list(range(stream_steps[0], stream_steps[-1] + 1))  # no step without it
    assert "inference" not in io_threads and io_threads.count("kv-store-io") >= 4  # 2 reads back, 2+ writes


async def test_a_new_turn_takes_the_lowest_free_sequence_and_steps_go_in_sequence_order(aiohttp_client, tmp_path):
    """llama.cpp decodes a run of consecutive sequences in one pass: a new session takes the
    sequence a deleted one freed, and a prompt on a lower sequence than a running stream's goes
    into the batch before that stream's token."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    sids = [(await new_session(client, settings={"ignore_eos": True}))["session_id"] for _ in range(3)]
    for sid in sids:
        await reply(client, sid, "Hi.", max_tokens=2)
    assert [scheduler._resident_slot(sid).seq for sid in sids] == [0, 1, 2]
    assert (await client.delete(f"/sessions/{sids[1]}")).status == 200
    newcomer = (await new_session(client, settings={"ignore_eos": True}))["session_id"]
    steps = recording_steps(scheduler)
    running = asyncio.create_task(reply(client, sids[2], "Tell me a long story.", max_tokens=40))
    while not any(2 in step for step in steps):
        await asyncio.sleep(0.005)
    await reply(client, newcomer, "Hello there.", max_tokens=4)
    await running
    assert scheduler._resident_slot(newcomer).seq == 1
    assert any(list(step) == [1, 2] for step in steps)  # the newcomer's prompt beside the stream, in order
    assert all(list(step) == sorted(step) for step in steps)


def test_a_moved_sequence_gives_the_logits_it_had_in_place():
    """A sequence moved to another stream (to close a gap between running turns) decodes its
    next tokens beside another sequence's exactly as it would have where it was."""
    model = LlamaModel(EngineSettings(model_path=bundled_model_path(), threads=2, parallel=4, ctx_per_session=1024, kv_budget_mb=64))
    batch = Batch(model.n_batch, model.n_seq)
    prompt = model.tokenize_chat([{"role": "user", "content": "Tell me about tides."}])[1]
    follow = model.tokenize(" They rise and fall twice a day.")
    try:
        runs = []
        for moved_to in (None, 1):
            for seq in (0, 2):
                decode(model, batch, seq, prompt, 0)
            if moved_to is not None:
                model.seq_move(2, moved_to)
            seq = 2 if moved_to is None else moved_to
            runs.append([decode_beside(model, batch, 0, seq, token, len(prompt) + i) for i, token in enumerate(follow)])
            for s in range(model.n_seq):
                model.seq_truncate(s, 0)
    finally:
        batch.free()
        model.close()
    for in_place, moved in zip(*runs):
        assert max(abs(a - b) for a, b in zip(in_place, moved)) <= 1e-3 * (max(in_place) - min(in_place))


def decode_beside(model, batch, other: int, seq: int, token: int, pos: int) -> list[float]:
    """One token for `other` and one for `seq`, decoded together; the logits after `seq`'s."""
    batch.clear()
    batch.add(token, pos, other, False)
    batch.add(token, pos, seq, True)
    assert batch.decode(model.ctx) == 0
    return list(llama_cpp.llama_get_logits_ith(model.ctx, 1)[:model.n_vocab])


async def test_a_turn_moves_down_into_a_gap_and_keeps_its_state(aiohttp_client, tmp_path):
    """Two turns start on sequences 0 and 2 while an idle session holds 1: that session leaves for
    RAM and the turn on 2 moves to 1 before a step, so every step decodes one run of sequences.
    The moved turn answers as it does where no gap ever was, and its next turn finds its cells."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    scheduler = client.app[keys.engine_key].scheduler
    sids = [(await new_session(client, settings={**GREEDY, "ignore_eos": True}))["session_id"] for _ in range(3)]
    for sid in sids:
        await reply(client, sid, "Hi.", max_tokens=2)
    assert [scheduler._resident_slot(sid).seq for sid in sids] == [0, 1, 2]
    steps = recording_steps(scheduler)
    first, moved = await second_turn_once_the_first_decodes(client, steps, sids[0], sids[2])
    assert scheduler.counters.turns_moved == 1
    assert scheduler._resident_slot(sids[2]).seq == 1 and sids[1] not in scheduler.resident and scheduler.kv.in_ram(sids[1])
    assert [0, 1] in [sorted(step) for step in steps]
    assert all(sorted(step) == list(range(min(step), max(step) + 1)) for step in steps)  # one run each
    later = await reply(client, sids[2], "Why?", max_tokens=4)
    assert later["usage"]["cached_tokens"] >= moved["usage"]["prompt_tokens"] and not later["usage"]["restored_state"]
    assert (await reply(client, sids[1], "Hello again.", max_tokens=2))["usage"]["restored_state"]

    reference = await started_app(aiohttp_client, tmp_path / "reference", park_after_s=1e9)
    ref_sids = [(await new_session(reference, settings={**GREEDY, "ignore_eos": True}))["session_id"] for _ in range(2)]
    for sid in ref_sids:
        await reply(reference, sid, "Hi.", max_tokens=2)
    ref_steps = recording_steps(reference.app[keys.engine_key].scheduler)
    _, in_place = await second_turn_once_the_first_decodes(reference, ref_steps, *ref_sids)
    assert moved["message"]["content"] == in_place["message"]["content"]


async def second_turn_once_the_first_decodes(client, steps: list, first_sid: str, second_sid: str) -> tuple[dict, dict]:
    """Two turns, the second sent once the first is decoding, so that the second's prompt is
    split the same way in every run: its first token in a step with the first turn's token, the
    rest after (llama.cpp rounds a token computed within a prompt and one computed alone differently)."""
    first = asyncio.create_task(reply(client, first_sid, "Count to ten.", max_tokens=24))
    async with asyncio.timeout(30):
        while len(steps) < 2:
            await asyncio.sleep(0.005)
    second = await reply(client, second_sid, "Tell me about tides.", max_tokens=24)
    return await first, second


async def test_a_freed_sequence_keeps_its_cells_for_the_next_session(aiohttp_client, tmp_path):
    """A parked session's cells stay in its sequence: the next session there computes only what
    its prompt does not share with them (the chat template's opening, here the default system
    prompt too), as llama-server's slots do, without a copy. A deleted session's cells go with it."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=0)
    scheduler = client.app[keys.engine_key].scheduler
    first = (await new_session(client))["session_id"]
    await reply(client, first, "Hello.", max_tokens=2)
    await parked(client, first)
    assert scheduler.slots[0].former_session == first and scheduler.slots[0].tokens
    second = (await new_session(client))["session_id"]
    usage = (await reply(client, second, "Something else entirely.", max_tokens=2))["usage"]
    assert usage["cached_tokens"] > 10 and not usage["restored_state"] and "shared_tokens" not in usage
    assert scheduler.counters.prefix_shares == 0
    await parked(client, second)
    await client.delete(f"/sessions/{second}")
    assert not scheduler.slots[0].tokens and scheduler.slots[0].former_session is None
    third = (await new_session(client))["session_id"]
    assert (await reply(client, third, "Hi.", max_tokens=2))["usage"]["cached_tokens"] == 0


async def closed_out(client, count: int) -> None:
    scheduler = client.app[keys.engine_key].scheduler
    async with asyncio.timeout(10):
        while scheduler.counters.close_outs < count:
            await asyncio.sleep(0.02)


async def test_the_end_of_a_reply_is_computed_while_its_author_reads_it(aiohttp_client, tmp_path):
    """Once the engine is idle, a finished reply's last token and the template's opening of the
    next message go into the cache, so the next turn prefills only its own message."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    model = client.app[keys.engine_key].model
    assert model.tokenize("<|im_end|>\n<|im_start|>user\n", special=True) == model.after_reply_tokens
    sid = (await new_session(client, settings={**GREEDY, "ignore_eos": True}))["session_id"]
    first = (await reply(client, sid, "Tell me about tides.", max_tokens=8))["usage"]
    await closed_out(client, 1)
    second = (await reply(client, sid, "And neap tides?", max_tokens=8))["usage"]
    closing = 1 + len(model.after_reply_tokens)  # the reply's last token, never decoded while it ran
    assert second["cached_tokens"] == first["prompt_tokens"] + first["completion_tokens"] - 1 + closing
    assert second["prefill_tokens"] == len(model.tokenize("And neap tides?") + model.tokenize("<|im_end|>\n<|im_start|>assistant\n", special=True))
    assert client.app[keys.engine_key].stats()["tokens_closed_out"] == closing


async def regenerated_after_a_reply(aiohttp_client, tmp_path, close_out: bool) -> tuple[dict, dict]:
    """A greedy reply and its regeneration on a fresh engine, the reply closed out before or not."""
    client = await started_app(aiohttp_client, tmp_path, park_after_s=1e9)
    sid = (await new_session(client, settings={**GREEDY, "ignore_eos": True}))["session_id"]
    first = await reply(client, sid, "Tell me about tides.", max_tokens=8)
    if close_out:
        await closed_out(client, 1)
    resp = await client.post(f"/sessions/{sid}/regenerate", json={"max_tokens": 8})
    assert resp.status == 200, await resp.text()
    again = await resp.json()
    assert client.app[keys.engine_key].scheduler.counters.close_outs == int(close_out)
    await client.close()
    return first, again


async def test_a_closed_out_reply_that_the_next_prompt_does_not_hold_is_cut_back(aiohttp_client, tmp_path, monkeypatch):
    """Regenerating a reply drops it from the conversation: the closing tokens computed after it
    are cut back, and the regenerated reply is the one an engine that never closed it out gives.
    (Not necessarily the first reply: that one's last prompt token was computed within its
    prompt, the regeneration's alone, and llama.cpp's attention kernels for the two shapes round
    differently.)"""
    first, again = await regenerated_after_a_reply(aiohttp_client, tmp_path / "a", close_out=True)
    assert again["usage"]["cached_tokens"] == first["usage"]["prompt_tokens"] - 1
    monkeypatch.setattr("agentic.engine.scheduler.CLOSE_OUT_AFTER_S", 1e9)
    _, never_closed_out = await regenerated_after_a_reply(aiohttp_client, tmp_path / "b", close_out=False)
    assert again["message"]["content"] == never_closed_out["message"]["content"]
