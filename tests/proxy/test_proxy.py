"""Client proxy N in front of a real main server (aiohttp test servers on real sockets)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from agentic import keys
from agentic.app import create_app
from agentic.proxy.app import create_client_apps
from agentic.proxy.run import validate_client_number
from tests.chat.helpers import chat_turn, streamed_text
from tests.conftest import make_settings, upload
from tests.proxy.serving import client_settings, serve_proxy

SID = "0b5c4a4e-0000-4000-8000-000000000000"


@pytest.fixture
async def backend(aiohttp_server, tmp_path):
    app = create_app(make_settings(tmp_path / "main", load_model=True))
    server = await aiohttp_server(app)
    await app[keys.engine_key].wait_loaded()
    return server


@pytest.fixture
async def proxy(aiohttp_client, backend, tmp_path):
    return await serve_proxy(aiohttp_client, tmp_path, str(backend.make_url("")))


async def test_default_session_is_created_recorded_and_kept(proxy, backend):
    first = await (await proxy.get("/sessions")).json()
    sid = first["session_id"]
    assert sid and first["client_id"] == "client-2"
    store = backend.app[keys.store_key]
    assert store.sessions[sid].client_id == "client-2"
    again = await (await proxy.get("/sessions")).json()
    assert again["session_id"] == sid
    assert {s["session_id"] for s in again["sessions"]} == {sid}  # own id in full, nobody else's


async def test_post_sessions_binds_the_cookie(proxy, backend):
    default = (await (await proxy.get("/sessions")).json())["session_id"]
    resp = await proxy.post("/sessions", json={"client_id": "my_client"})
    created = await resp.json()
    assert resp.status == 201 and created["client_id"] == "my_client"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    bound = (await (await proxy.get("/sessions")).json())["session_id"]
    assert bound == created["session_id"] != default
    messages = await proxy.get(f"/sessions/{bound}/messages")  # the bound session needs no header
    assert messages.status == 200


async def test_other_sessions_need_their_header(proxy, backend):
    other = (await (await proxy.post("/sessions", headers={"x-client-id": "x"})).json())["session_id"]
    proxy.session.cookie_jar.clear()
    mine = (await (await proxy.get("/sessions")).json())["session_id"]
    assert mine != other
    resp = await proxy.get(f"/sessions/{other}")
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "session_mismatch"
    resp = await proxy.get(f"/sessions/{other}", headers={"x-session-id": other})
    assert resp.status == 200


async def test_hostile_origin_is_refused(proxy):
    for method, path in (("POST", "/sessions"), ("DELETE", f"/sessions/{SID}")):
        resp = await proxy.request(method, path, headers={"Origin": "http://evil.example"})
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "origin_refused"
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await proxy.ws_connect("/ws", headers={"Origin": "http://evil.example"})
    assert exc.value.status == 403
    own = f"http://{proxy.server.host}:8502"
    resp = await proxy.post("/sessions", headers={"Origin": own})
    assert resp.status == 201


async def test_websocket_chat_through_the_proxy(proxy):
    ws = await proxy.ws_connect("/ws")
    first = await ws.receive_json()
    bound = (await (await proxy.get("/sessions")).json())["session_id"]
    assert first["type"] == "session" and first["session"]["session_id"] == bound
    frames = await chat_turn(ws, "Say hi.", max_tokens=6)
    assert frames[-1]["type"] == "done" and frames[-1]["message"]["content"] == streamed_text(frames)
    await ws.send_json({"type": "ping"})
    assert await ws.receive_json() == {"type": "pong"}
    await ws.close()


async def test_websocket_close_codes_pass_through(proxy):
    ws = await proxy.ws_connect("/ws", params={"session_id": SID})
    await ws.receive()
    assert ws.close_code == 4404


async def test_server_sent_events_stream_through(proxy):
    sid = (await (await proxy.get("/sessions")).json())["session_id"]
    resp = await proxy.post(f"/sessions/{sid}/messages", json={"content": "Count to five.", "max_tokens": 12, "stream": True})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    first = await resp.content.readuntil(b"\n\n")  # arrives before the reply is finished
    assert b'"type": "start"' in first
    rest = await resp.text()
    events = [json.loads(line[6:]) for line in rest.splitlines() if line.startswith("data: ")]
    assert events[-1]["type"] == "done"


async def test_uploads_stream_through(proxy, backend):
    sid = (await (await proxy.get("/sessions")).json())["session_id"]
    resp = await upload(proxy, sid, ("big.txt", b"line\n" * 200_000))
    assert resp.status == 201, await resp.text()
    assert backend.app[keys.store_key].sessions[sid].files["big.txt"].size == 1_000_000
    download = await proxy.get(f"/sessions/{sid}/files/big.txt")
    assert len(await download.read()) == 1_000_000


async def test_small_answers_and_heads_keep_their_length(proxy):
    sid = (await (await proxy.get("/sessions")).json())["session_id"]
    got = await proxy.get(f"/sessions/{sid}", headers={"x-session-id": sid})
    body = await got.read()
    assert got.status == 200 and int(got.headers["Content-Length"]) == len(body) and json.loads(body)["session_id"] == sid
    head = await proxy.head(f"/sessions/{sid}", headers={"x-session-id": sid})
    assert head.status == 200 and await head.read() == b""


async def test_proxy_health_reports_the_backend(proxy):
    body = await (await proxy.get("/health")).json()
    assert body["status"] == "ok" and body["backend"]["reachable"] is True and body["ports"] == {"frontend": 8502, "proxy": 8002}


async def test_backend_down_gives_502_and_the_proxy_recovers(aiohttp_client, unused_tcp_port, tmp_path):
    port = unused_tcp_port
    proxy = await serve_proxy(aiohttp_client, tmp_path, f"http://127.0.0.1:{port}")
    sid = SID
    for path, headers in (("/sessions", {}), (f"/sessions/{sid}/messages", {}), (f"/sessions/{sid}", {"x-session-id": sid})):
        resp = await proxy.get(path, headers=headers)
        assert resp.status == 502 and (await resp.json())["error"]["code"] == "backend_unreachable"
    health = await (await proxy.get("/health")).json()
    assert health["status"] == "ok" and health["backend"]["reachable"] is False

    from aiohttp.test_utils import TestServer

    server = TestServer(create_app(make_settings(tmp_path / "late")), port=port)
    await server.start_server()
    try:
        resp = await proxy.get("/sessions")
        assert resp.status == 200 and (await resp.json())["session_id"]
        sid = (await resp.json())["session_id"]
        resp = await proxy.get(f"/sessions/{sid}", headers={"x-session-id": sid})
        assert resp.status == 200 and (await resp.json())["session_id"] == sid
    finally:
        await server.close()


async def test_errors_the_proxy_makes_on_the_openai_api_are_in_openai_shape(aiohttp_client, unused_tcp_port, tmp_path):
    """An OpenAI client through the proxy reads every error as OpenAI's, the proxy's own too."""
    proxy = await serve_proxy(aiohttp_client, tmp_path, f"http://127.0.0.1:{unused_tcp_port}")  # nothing listens there
    body = {"model": "any", "messages": [{"role": "user", "content": "Hi."}]}
    resp = await proxy.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {SID}"})
    assert resp.status == 502
    assert await resp.json() == {"error": {"message": "the main server cannot be reached: ClientConnectorError", "type": "server_error",
                                           "param": None, "code": "backend_unreachable"}}
    resp = await proxy.post("/v1/chat/completions", json=body, headers={"Origin": "http://evil.example"})
    assert resp.status == 403 and (await resp.json())["error"]["type"] == "permission_error"
    resp = await proxy.get(f"/sessions/{SID}", headers={"x-session-id": SID})  # the rest of the API keeps api.md's shape
    assert resp.status == 502 and await resp.json() == {"error": {"code": "backend_unreachable", "message": "the main server cannot be reached: ClientConnectorError"}}


async def test_frontend_serves_the_page_and_proxies_under_api(aiohttp_client, backend, tmp_path):
    _, frontend_app = create_client_apps(client_settings(tmp_path, str(backend.make_url("")).rstrip("/")))
    frontend = await aiohttp_client(frontend_app)
    page = await frontend.get("/")
    html = await page.text()
    assert page.status == 200 and 'data-api-base="/api"' in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    body = await (await frontend.get("/api/sessions")).json()
    assert body["session_id"]
    ws = await frontend.ws_connect("/api/ws", headers={"Origin": f"http://{frontend.server.host}:{frontend.server.port}"})
    assert (await ws.receive_json())["session"]["session_id"] == body["session_id"]
    await ws.close()


async def test_a_backend_that_drops_its_answer_gives_502_or_a_cut_connection(aiohttp_client, tmp_path):
    async def drop_after_ten_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 100_000 if b" /big" in head.split(b"\r\n")[0] else 100
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n0123456789" % length)
        await writer.drain()
        writer.close()

    upstream = await asyncio.start_server(drop_after_ten_bytes, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]
    try:
        proxy = await serve_proxy(aiohttp_client, tmp_path, f"http://127.0.0.1:{port}")
        headers = {"x-session-id": SID}
        resp = await proxy.get("/small", headers=headers)  # read whole before answering: a clean 502
        assert resp.status == 502 and (await resp.json())["error"]["message"].endswith("it dropped its answer")
        resp = await proxy.get("/big", headers=headers)  # too large to read first: its head is already out
        assert resp.status == 200 and resp.headers["Content-Length"] == "100000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        assert (await proxy.get("/small", headers=headers)).status == 502  # and the proxy still serves
    finally:
        upstream.close()
        await upstream.wait_closed()


@pytest.mark.parametrize("n, ok", [(0, False), (1, True), (2, True), (10, True), (99, True), (100, False), (-3, False)])
def test_client_numbers(n, ok):
    assert (validate_client_number(n) is None) is ok
