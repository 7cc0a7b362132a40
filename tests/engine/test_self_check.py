"""A build that cannot run here fails at start; an engine that stops working says so (503, error frames)."""

from __future__ import annotations

import asyncio

import pytest

from agentic import keys
from agentic.app import create_app
from agentic.engine import self_check
from agentic.engine.model import LlamaModel
from agentic.engine.self_check import SelfCheckFailed, run_self_check
from tests.chat.helpers import chat_turn, open_session_socket
from tests.conftest import make_settings, new_session


class UndecodableModel:
    """The real model, but the check's token id is one llama.cpp refuses, so llama_decode really fails."""

    def __init__(self, model: LlamaModel) -> None:
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def tokenize(self, text: str) -> list[int]:
        return [self._model.n_vocab + 1000]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("data"))
    loaded = LlamaModel(settings.engine)
    yield loaded
    loaded.close()


def test_self_check_decodes_a_full_batch_over_several_sequences_and_leaves_them_empty(model, caplog):
    caplog.set_level("INFO", logger="agentic.engine")
    run_self_check(model)
    sequences = min(self_check.CHECK_SEQUENCES, model.n_seq)
    assert f"over {sequences} sequences" in caplog.text and "self-check passed" in caplog.text
    assert sequences > 1
    import llama_cpp

    assert all(llama_cpp.llama_memory_seq_pos_max(model.memory, seq) == -1 for seq in range(sequences))


def test_a_failing_decode_fails_the_self_check_with_the_reason(model):
    with pytest.raises(SelfCheckFailed, match="llama_decode returned -?\\d+ for a batch of"):
        run_self_check(UndecodableModel(model))


async def test_health_is_503_with_the_reason_when_the_self_check_fails(aiohttp_client, tmp_path, monkeypatch):
    original = self_check.run_self_check
    monkeypatch.setattr(self_check, "run_self_check", lambda model: original(UndecodableModel(model)))
    app = create_app(make_settings(tmp_path / "data", load_model=True))
    client = await aiohttp_client(app)
    await app[keys.engine_key].wait_loaded()
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "error" and "self-check failed" in body["error"]
    session = await new_session(client)
    resp = await client.post(f"/sessions/{session['session_id']}/messages", json={"content": "Hi"})
    assert resp.status == 503 and "self-check failed" in (await resp.json())["error"]["message"]


def break_decoding(engine) -> None:
    """Every later llama_decode gets a token id llama.cpp refuses: a real decode failure."""
    batch = engine.scheduler._batch
    decode = batch.decode

    def failing_decode(ctx):
        batch.raw.token[0] = engine.model.n_vocab + 1000
        return decode(ctx)

    batch.decode = failing_decode


async def test_repeated_decode_failures_stop_the_engine_with_error_frames_and_503(aiohttp_client, tmp_path):
    app = create_app(make_settings(tmp_path / "data", load_model=True))
    client = await aiohttp_client(app)
    engine = app[keys.engine_key]
    await engine.wait_loaded()
    ws, _ = await open_session_socket(client)
    assert (await chat_turn(ws, "Hi", max_tokens=2))[-1]["type"] == "done"
    break_decoding(engine)

    codes = []
    for _ in range(3):
        frames = await chat_turn(ws, "Hello again", max_tokens=4)
        assert frames[-1]["type"] == "error", frames
        codes.append(frames[-1]["code"])
    assert codes == ["decode_failed", "decode_failed", "engine_failed"]
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "error" and "llama_decode failed 3 times" in body["error"]
    await ws.send_json({"type": "chat", "content": "Anyone?"})
    refusal = await ws.receive_json()
    assert refusal["type"] == "error" and refusal["code"] == "model_not_ready"
    await ws.close()
    session = await new_session(client)
    resp = await client.delete(f"/sessions/{session['session_id']}")  # no thread left to ask: must not hang
    assert resp.status in (200, 204)


LONG_TEXT = " ".join(f"Line {i}: the quarterly report lists revenue, costs, staffing and the open risks." for i in range(80))


async def test_long_prompts_in_several_sessions_at_once(aiohttp_client, tmp_path):
    """The shapes that crashed on the AMX machine: prompts of over 1,000 tokens, several sessions together."""
    app = create_app(make_settings(tmp_path / "data", load_model=True, engine_ctx_per_session=2048))
    client = await aiohttp_client(app)
    await app[keys.engine_key].wait_loaded()
    sessions = [(await new_session(client))["session_id"] for _ in range(3)]

    async def ask(sid: str) -> dict:
        resp = await client.post(f"/sessions/{sid}/messages", json={"content": LONG_TEXT + "\nSummarise.", "max_tokens": 4})
        body = await resp.json()
        assert resp.status == 200, body
        return body["usage"]

    usages = await asyncio.gather(*(ask(sid) for sid in sessions))
    assert all(u["prompt_tokens"] >= 1000 and u["completion_tokens"] >= 1 for u in usages), usages
