"""Hostile input against a real server socket: each is a 4xx JSON error (or an error frame on the
WebSocket), never a 500, and the server keeps answering afterwards."""

from __future__ import annotations

import asyncio
import http.client
import json

from agentic import keys
from tests.conftest import assert_error, new_session

DEEP = b"[" * 100_000
SURROGATE_BODIES = [b'{"title": "\\ud800"}', b'{"system_prompt": "ok \\udfff"}', b'{"settings": {"\\ud83d": 1}}', b'{"client_id": "\\udc80"}']


async def test_deeply_nested_json_is_400(client):
    sid = (await new_session(client))["session_id"]
    for method, path in (("POST", "/sessions"), ("PATCH", f"/sessions/{sid}"), ("POST", f"/sessions/{sid}/messages")):
        for body in (DEEP, b'{"title": ' + DEEP + b"}"):
            resp = await client.request(method, path, data=body)
            assert resp.status == 400, (method, path)
            assert_error(await resp.json(), "invalid_json")


async def test_lone_surrogates_are_refused_before_storage(client):
    sid = (await new_session(client))["session_id"]
    for body in SURROGATE_BODIES:
        for method, path in (("POST", "/sessions"), ("PATCH", f"/sessions/{sid}")):
            resp = await client.request(method, path, data=body)
            assert resp.status == 400, (body, method)
            assert_error(await resp.json(), "invalid_json")
    resp = await client.post(f"/sessions/{sid}/messages", data=b'{"content": "hi \\ud800"}')
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_json")
    assert client.app[keys.store_key].stats.total_created == 1
    assert (await client.get(f"/sessions/{sid}")).status == 200


async def test_websocket_frames_with_deep_nesting_or_surrogates_get_error_frames(client):
    ws = await client.ws_connect("/ws")
    assert (await ws.receive_json())["type"] == "session"
    for frame in ('{"type": "chat", "content": "\\ud800"}', "[" * 100_000, '{"type": "chat", "content": ' + "[" * 5000 + "}"):
        await ws.send_str(frame)
        reply = await ws.receive_json()
        assert reply["type"] == "error" and reply["code"] == "bad_frame", reply
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json())["type"] == "pong"
    await ws.close()


async def test_malformed_multipart_is_400(client):
    sid = (await new_session(client))["session_id"]
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=", 'multipart/form-data; boundary="'):
        resp = await client.post(f"/sessions/{sid}/files", data=b"--x\r\n\r\n--x--\r\n", headers={"Content-Type": content_type})
        assert resp.status == 400, content_type
        assert_error(await resp.json(), "invalid_multipart")
    bodies = [b"no boundary anywhere", b"--b\r\n270--b--\r\n",
              b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.txt"\r\n\r\nhi\r\n--b--\r\n']
    for body in bodies:
        resp = await client.post(f"/sessions/{sid}/files", data=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert resp.status == 400, body
        assert_error(await resp.json(), "invalid_multipart")
    assert (await (await client.get(f"/sessions/{sid}/files")).json()) == {"files": []}


def raw_request(port: int, method: str, path: str, headers: dict[str, bytes], body: bytes = b"") -> tuple[int, dict]:
    """One request through http.client, which sends header bytes as given (aiohttp's client
    refuses bytes that are not text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers)
        for name, value in {**headers, "Content-Length": str(len(body)).encode()}.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


async def test_non_utf8_headers_are_400(client):
    port = client.server.port
    sid = (await new_session(client))["session_id"]
    bad = b"\xff\xfe client \xc3\x28"
    cases = [
        ("POST", "/sessions", {"x-client-id": bad}),
        ("GET", "/sessions", {"x-session-id": bad}),
        ("GET", f"/sessions/{sid}", {"x-session-id": bad}),
        ("GET", "/ws", {"x-client-id": bad, "Connection": b"Upgrade", "Upgrade": b"websocket", "Sec-WebSocket-Version": b"13",
                        "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ=="}),
    ]
    for method, path, headers in cases:
        status, body = await asyncio.to_thread(raw_request, port, method, path, headers)
        assert 400 <= status < 500, (method, path, status, body)
        assert_error(body)
    for origin in (b"http://\xff.example", b"http://127.0.0.1:8077.evil.example", b"http://[::1"):
        status, body = await asyncio.to_thread(raw_request, port, "POST", "/sessions", {"Origin": origin})
        assert status == 403, origin
        assert_error(body, "origin_refused")
    status, body = await asyncio.to_thread(raw_request, port, "GET", "/health", {"Host": b"\xff\xfe"})
    assert status == 421
    assert client.app[keys.store_key].stats.total_created == 1


async def test_an_error_after_the_websocket_upgrade_is_an_error_frame_and_1011(client, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug after the upgrade")

    monkeypatch.setattr(client.app[keys.chat_key], "subscribe", broken)
    ws = await client.ws_connect("/ws")
    frames = [await ws.receive_json(), await ws.receive_json()]
    assert frames[0]["type"] == "session"
    assert frames[1] == {"type": "error", "code": "internal_error", "message": "internal server error"}
    await ws.receive()
    assert ws.close_code == 1011
    assert (await client.get("/health")).status in (200, 503)  # the server goes on
