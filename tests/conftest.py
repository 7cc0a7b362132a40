"""Shared fixtures: apps built with the factory on a temporary data directory."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import AsyncIterator

import pytest
from aiohttp import web

from agentic.app import create_app
from agentic.config import EngineSettings, Settings, bundled_model_path

MODEL = bundled_model_path()


@pytest.fixture
async def served_main(tmp_path) -> AsyncIterator[tuple[str, int]]:
    """The main server (no model) on a real socket, run as `serve` runs it: aiohttp's test
    server cancels a handler whose client left, the real one lets it run."""
    runner = web.AppRunner(create_app(make_settings(tmp_path / "served")))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][:2]
    finally:
        await runner.cleanup()


def make_settings(data_dir: Path, load_model: bool = False, **overrides) -> Settings:
    engine = EngineSettings(model_path=MODEL, threads=2, parallel=4, ctx_per_session=1024, default_max_tokens=16)
    engine_overrides = {k[len("engine_"):]: overrides.pop(k) for k in list(overrides) if k.startswith("engine_")}
    return Settings(data_dir=data_dir, load_model=load_model, log_json=False, engine=replace(engine, **engine_overrides), **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
async def client(aiohttp_client, settings):
    """The main server without a model: every route but chat."""
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def model_client(aiohttp_client, tmp_path):
    """The main server with the real bundled model loaded."""
    app = create_app(make_settings(tmp_path / "data", load_model=True))
    test_client = await aiohttp_client(app)
    from agentic import keys

    await app[keys.engine_key].wait_loaded()
    assert app[keys.engine_key].ready, app[keys.engine_key].error
    return test_client


async def new_session(client, **body) -> dict:
    resp = await client.post("/sessions", json=body or None)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def assert_error(body: dict, code: str | None = None) -> None:
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}
    if code is not None:
        assert body["error"]["code"] == code, body


def form(*files: tuple[str, bytes]) -> tuple[bytes, str]:
    """A raw multipart body, one part per (filename, content): built by hand so tests can send
    names a well-behaved client library refuses (NUL bytes, control characters)."""
    from urllib.parse import quote

    boundary = "agentic-test-boundary"
    body = b""
    for name, content in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''{quote(name, safe='')}\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def upload(client, session_id: str, *files: tuple[str, bytes], headers: dict | None = None):
    body, content_type = form(*files)
    return await client.post(f"/sessions/{session_id}/files", data=body, headers={"Content-Type": content_type, **(headers or {})})


@pytest.fixture
def prompts(monkeypatch) -> dict[str, str]:
    """The text of the prompt each session's latest turn was answered from, recorded around the
    engine's history window (the engine itself keeps no copy of it)."""
    from agentic.engine.window import HistoryWindow

    seen: dict[str, str] = {}
    fit = HistoryWindow.fit

    def recording_fit(window: HistoryWindow, session_id: str, messages, budget: int):
        text, tokens, cut = fit(window, session_id, messages, budget)
        seen[session_id] = text
        return text, tokens, cut

    monkeypatch.setattr(HistoryWindow, "fit", recording_fit)
    return seen
