"""The OpenAI-compatible API driven by the real `openai` package, against a main server on a
real socket and through a client proxy, with the real bundled model."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from agentic import keys
from agentic.app import create_app
from tests.conftest import make_settings
from tests.proxy.serving import serve_proxy


@pytest.fixture
async def backend(aiohttp_server, tmp_path):
    app = create_app(make_settings(tmp_path / "main", load_model=True, admin_token="admin-secret"))
    server = await aiohttp_server(app)
    await app[keys.engine_key].wait_loaded()
    return server


def api(base_url, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(base_url), api_key=key, max_retries=0, timeout=120)


async def new_session(server, **body) -> str:
    async with aiohttp.ClientSession() as http, http.post(server.make_url("/sessions"), json=body) as resp:
        assert resp.status == 201
        return (await resp.json())["session_id"]


async def stored(server, sid: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(server.make_url(f"/sessions/{sid}/messages")) as resp:
        return (await resp.json())["messages"]


async def test_models_list_names_the_served_model(backend):
    sid = await new_session(backend)
    models = await api(backend.make_url("/v1"), sid).models.list()
    [model] = models.data
    assert model.id == backend.app[keys.engine_key].model_name and model.object == "model"
    assert model.context_length == backend.app[keys.settings_key].engine.ctx_per_session


async def test_a_completion_that_extends_the_conversation_is_the_sessions_next_turn(backend):
    sid = await new_session(backend)
    client = api(backend.make_url("/v1"), sid)
    messages = [{"role": "user", "content": "Say hello."}]
    first = await client.chat.completions.create(model="anything", messages=messages, max_tokens=8)
    assert first.object == "chat.completion" and first.model == "anything"
    reply = first.choices[0].message
    assert reply.role == "assistant" and reply.content and first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert [m["content"] for m in await stored(backend, sid)] == ["Say hello.", reply.content]

    messages += [{"role": "assistant", "content": reply.content}, {"role": "user", "content": [{"type": "text", "text": "Again."}]}]
    second = await client.chat.completions.create(model="anything", messages=messages, max_tokens=8)
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens  # the session's cached prompt
    assert len(await stored(backend, sid)) == 4


async def test_stream_with_usage_matches_the_stored_reply(backend):
    sid = await new_session(backend, settings={"ignore_eos": True})
    client = api(backend.make_url("/v1"), sid)
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Tell me about cats."}],
                                                  max_completion_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert usage_chunks[0].usage.completion_tokens == 12
    model = backend.app[keys.engine_key].model
    assert abs(len(model.tokenize(text)) - 12) <= 2  # the streamed text is those tokens
    assert (await stored(backend, sid))[-1]["content"] == text


async def test_stream_without_include_usage_has_no_usage_chunk(backend):
    sid = await new_session(backend)
    stream = await api(backend.make_url("/v1"), sid).chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices and c.usage is None for c in chunks)


async def test_stop_strings_end_the_reply_without_them(backend):
    prompt = [{"role": "user", "content": "Count from one to twenty in words, separated by commas."}]
    plain = await api(backend.make_url("/v1"), await new_session(backend, settings={"ignore_eos": True})).chat.completions.create(
        model="m", messages=prompt, max_tokens=30, temperature=0)
    text = plain.choices[0].message.content
    stop = text[len(text) // 2:len(text) // 2 + 3]
    client = api(backend.make_url("/v1"), await new_session(backend, settings={"ignore_eos": True}))
    stream = await client.chat.completions.create(model="m", messages=prompt, max_tokens=30, temperature=0, stop=[stop], stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text[:text.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_unsupported_features_and_bad_keys_get_openai_errors(backend):
    sid = await new_session(backend)
    client = api(backend.make_url("/v1"), sid)
    user = [{"role": "user", "content": "Hi"}]
    for extra, word in (({"n": 2}, "'n'"), ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                        ({"response_format": {"type": "json_object"}}, "response_format")):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="m", messages=user, **extra)
        assert word in refused.value.message
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="m", messages=[{"role": "tool", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        await api(backend.make_url("/v1"), "0b5c4a4e-0000-4000-8000-000000000000").models.list()
    with pytest.raises(openai.AuthenticationError):
        await api(backend.make_url("/v1"), "sk-placeholder").chat.completions.create(model="m", messages=user)
    async with aiohttp.ClientSession() as http:
        for method, path, kwargs in (("POST", "/v1/chat/completions", {"data": b"{nope"}), ("GET", "/v1/nothing-here", {}),
                                     ("POST", "/v1/chat/completions", {"json": {"messages": []}}), ("DELETE", "/v1/models", {})):
            async with http.request(method, backend.make_url(path), headers={"Authorization": f"Bearer {sid}"}, **kwargs) as resp:
                body = await resp.json()
                assert resp.status in (400, 404, 405) and set(body["error"]) >= {"message", "type", "code"}, body
        async with http.get(backend.make_url("/v1/models")) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["type"] == "authentication_error"


async def test_concurrent_requests_on_one_session_both_answer(backend):
    sid = await new_session(backend)
    client = api(backend.make_url("/v1"), sid)
    user = [{"role": "user", "content": "Name a colour."}]
    first, second = await asyncio.gather(*(client.chat.completions.create(model="m", messages=user, max_tokens=6) for _ in range(2)))
    assert first.choices[0].message.content and second.choices[0].message.content
    assert len(await stored(backend, sid)) == 2  # one became the session's turn; the other ran beside it, stored nowhere


async def test_a_side_request_leaves_the_stored_conversation_alone(backend):
    sid = await new_session(backend)
    client = api(backend.make_url("/v1"), sid)
    await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hello there."}], max_tokens=6)
    before = await stored(backend, sid)
    title = await client.chat.completions.create(model="m", messages=[{"role": "system", "content": "Give a title."},
                                                                      {"role": "user", "content": "Hello there."}], max_tokens=6)
    assert title.choices[0].message.content
    assert await stored(backend, sid) == before
    again = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hello there."},
                                                                      {"role": "assistant", "content": before[1]["content"]},
                                                                      {"role": "user", "content": "And?"}], max_tokens=6)
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the session's own model state was kept
    assert len(await stored(backend, sid)) == 4


async def test_a_side_request_whose_session_is_deleted_meanwhile_is_not_found(backend):
    """Not a reply cut short and reported as complete."""
    sid = await new_session(backend, settings={"ignore_eos": True})
    engine = backend.app[keys.engine_key]
    generated = engine.stats()["tokens_generated"]
    body = {"model": "m", "messages": [{"role": "system", "content": "Tell long stories."}, {"role": "user", "content": "Go."}], "max_tokens": 300}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {sid}"}) as http:
        pending = asyncio.create_task(http.post(backend.make_url("/v1/chat/completions"), json=body))
        async with asyncio.timeout(30):
            while engine.stats()["tokens_generated"] == generated:
                await asyncio.sleep(0.01)
        async with http.delete(backend.make_url(f"/sessions/{sid}")) as deleted:
            assert deleted.status == 200
        resp = await pending
        assert resp.status == 404, await resp.text()
        assert (await resp.json())["error"]["code"] == "session_not_found"


async def test_the_admin_token_gets_a_session_of_its_own_for_the_request(backend):
    sessions = backend.app[keys.sessions_key]
    before = sessions.count()
    reply = await api(backend.make_url("/v1"), "admin-secret").chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.choices[0].message.content is not None
    assert sessions.count() == before


async def test_a_full_queue_is_429_with_retry_after(aiohttp_server, tmp_path):
    app = create_app(make_settings(tmp_path / "main", load_model=True, engine_max_queue=0))
    server = await aiohttp_server(app)
    await app[keys.engine_key].wait_loaded()
    sid = await new_session(server)
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/v1/chat/completions"), headers={"Authorization": f"Bearer {sid}"},
                             json={"messages": [{"role": "user", "content": "Hi"}]}) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "1"
            assert (await resp.json())["error"]["type"] == "rate_limit_error"


async def test_through_a_client_proxy_the_key_names_the_session(aiohttp_client, backend, tmp_path):
    proxy = await serve_proxy(aiohttp_client, tmp_path, str(backend.make_url("")))
    default = (await (await proxy.get("/sessions")).json())["session_id"]  # the proxy's own session, bound to the cookie
    sid = await new_session(backend)
    client = api(proxy.make_url("/v1"), sid)
    assert (await client.models.list()).data
    stream = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert [m["content"] for m in await stored(backend, sid)] == ["Hi", text]
    assert await stored(backend, default) == []
    # A placeholder key through the proxy: the proxy's session is used.
    reply = await api(proxy.make_url("/v1"), "sk-none").chat.completions.create(model="m", messages=[{"role": "user", "content": "Yo"}], max_tokens=4)
    assert [m["content"] for m in await stored(backend, default)] == ["Yo", reply.choices[0].message.content]
    with pytest.raises(openai.AuthenticationError):
        await api(proxy.make_url("/v1"), "0b5c4a4e-0000-4000-8000-000000000000").models.list()
