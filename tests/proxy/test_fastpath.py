"""The proxy port's fast path: which requests it relays, what it relays, and what it hands to aiohttp."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from agentic.app import create_app
from agentic.proxy.app import forwarder_key
from agentic.proxy.fastpath import fast_request
from tests.conftest import make_settings, upload
from tests.proxy.serving import serve_proxy

SID = "0b5c4a4e-0000-4000-8000-000000000000"
PLAIN = f"GET /sessions/{SID} HTTP/1.1\r\nHost: h:8002\r\nx-session-id: {SID}\r\nAccept: */*"


@pytest.mark.parametrize("head", [
    PLAIN,
    PLAIN.replace("GET", "HEAD", 1),
    PLAIN + "\r\nCookie: a=b\r\nConnection: close",
    PLAIN.replace(f"/sessions/{SID}", f"/sessions/{SID}/files/a.txt?x=1"),
])
def test_plain_session_gets_are_fast(head):
    request = fast_request(head.encode())
    assert request is not None and request.session_id == SID and request.host == "h:8002"


@pytest.mark.parametrize("head", [
    PLAIN.replace("GET", "POST", 1),
    PLAIN.replace("HTTP/1.1", "HTTP/1.0"),
    PLAIN.replace(f"x-session-id: {SID}", "X-Other: 1"),  # no session header: the cookie binding decides
    PLAIN + f"\r\nx-session-id: {SID}",
    PLAIN + "\r\nHost: other",
    PLAIN + "\r\nContent-Length: 0",
    PLAIN + "\r\nTransfer-Encoding: chunked",
    PLAIN + "\r\nUpgrade: websocket",
    PLAIN + "\r\nX-Folded: a\r\n b",  # obs-fold
    PLAIN + "\r\nX-Evil: a\nContent-Length: 5",  # a bare LF
    PLAIN + "\r\nX-Nul: a\x00b",
    PLAIN + "\r\nX-Name: caf\u00e9",
    PLAIN + "\r\nBad Name: x",
    PLAIN.replace(f"/sessions/{SID}", "/health"),
    PLAIN.replace(f"/sessions/{SID}", "/sessions"),
    PLAIN.replace(f"/sessions/{SID}", "/ws?session_id=x"),
    PLAIN.replace(f"/sessions/{SID}", "/%73essions"),
    PLAIN.replace(f"/sessions/{SID}", "/x/../sessions"),
    PLAIN.replace(f"/sessions/{SID}", "//sessions"),
    PLAIN.replace(f"/sessions/{SID}", "http://elsewhere/sessions"),
    PLAIN.replace(f"/sessions/{SID}", "/sessions/a\tb"),
])
def test_anything_else_goes_to_aiohttp(head):
    assert fast_request(head.encode("utf-8")) is None


@pytest.fixture
async def backend(aiohttp_server, tmp_path):
    return await aiohttp_server(create_app(make_settings(tmp_path / "main")))


@pytest.fixture
async def proxy(aiohttp_client, backend, tmp_path):
    return await serve_proxy(aiohttp_client, tmp_path, str(backend.make_url("")))


def relayed(proxy) -> int:
    return proxy.server.app[forwarder_key].fast_path_requests


async def new_session(backend_client) -> str:
    async with backend_client.post("/sessions") as resp:
        return (await resp.json())["session_id"]


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split(" ")[1]), headers, body


async def test_a_session_get_is_relayed_as_the_main_server_answers_it(proxy, backend, aiohttp_client):
    direct = await aiohttp_client(backend)
    sid = await new_session(direct)
    before = relayed(proxy)
    got = await proxy.get(f"/sessions/{sid}", headers={"x-session-id": sid})
    want = await direct.get(f"/sessions/{sid}", headers={"x-session-id": sid})
    assert got.status == 200 and (await got.json())["session_id"] == sid
    assert got.headers["Content-Type"] == want.headers["Content-Type"]
    head = await proxy.head(f"/sessions/{sid}", headers={"x-session-id": sid})
    assert head.status == 200 and await head.read() == b""
    missing = await proxy.get(f"/sessions/{SID}", headers={"x-session-id": SID})
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "session_not_found"
    assert relayed(proxy) == before + 3
    assert (await (await proxy.get("/health")).json())["fast_path_requests"] == before + 3


async def test_pipelined_requests_answer_in_order_and_a_post_hands_over_to_aiohttp(proxy, backend, aiohttp_client):
    direct = await aiohttp_client(backend)
    a, b = await new_session(direct), await new_session(direct)
    before = relayed(proxy)
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    body = b'{"title": "made after two GETs"}'
    writer.write(
        f"GET /sessions/{a} HTTP/1.1\r\nHost: localhost\r\nx-session-id: {a}\r\n\r\n".encode()
        + f"GET /sessions/{b} HTTP/1.1\r\nHost: localhost\r\nx-session-id: {b}\r\n\r\n".encode()
        + f"POST /sessions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
        + f"GET /sessions/{a} HTTP/1.1\r\nHost: localhost\r\nx-session-id: {a}\r\n\r\n".encode())
    answers = [await read_answer(reader) for _ in range(4)]
    writer.close()
    assert [json.loads(body)["session_id"] for status, _, body in answers if status == 200] == [a, b, a]
    status, headers, created = answers[2]
    assert status == 201 and "set-cookie" in headers  # aiohttp bound the new session to a cookie
    assert json.loads(created)["title"] == "made after two GETs"
    assert relayed(proxy) == before + 2  # the GET after the POST stays with aiohttp


@pytest.mark.parametrize("evil", [
    "Content-Length: 5\r\nTransfer-Encoding: chunked",
    "X-Nul: a\x00b",
])
async def test_hostile_heads_are_judged_by_aiohttp(proxy, evil):
    before = relayed(proxy)
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(f"GET /sessions/{SID} HTTP/1.1\r\nHost: localhost\r\nx-session-id: {SID}\r\n{evil}\r\n\r\n".encode())
    status, _, _ = await read_answer(reader)
    writer.close()
    assert status == 400 and relayed(proxy) == before


async def test_large_answers_stream_and_a_dropped_reader_leaves_the_proxy_serving(proxy, backend, aiohttp_client):
    direct = await aiohttp_client(backend)
    sid = await new_session(direct)
    assert (await upload(direct, sid, ("big.txt", b"line\n" * 200_000))).status == 201
    headers = {"x-session-id": sid}
    download = await proxy.get(f"/sessions/{sid}/files/big.txt", headers=headers)
    assert download.headers["Content-Length"] == "1000000" and await download.read() == b"line\n" * 200_000

    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(f"GET /sessions/{sid}/files/big.txt HTTP/1.1\r\nHost: localhost\r\nx-session-id: {sid}\r\n\r\n".encode())
    await reader.readexactly(1000)
    writer.close()  # gone mid-answer
    for _ in range(3):
        again = await proxy.get(f"/sessions/{sid}", headers=headers)
        assert again.status == 200


async def test_unsized_answers_go_out_chunked_with_forwarded_headers(aiohttp_client, aiohttp_server, tmp_path):
    async def echo(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(json.dumps(dict(request.headers)).encode())
        await response.write(b"\n--end--")
        return response

    app = web.Application()
    app.router.add_get("/echo", echo)
    upstream = await aiohttp_server(app)
    proxy = await serve_proxy(aiohttp_client, tmp_path, str(upstream.make_url("")))
    resp = await proxy.get("/echo", headers={"x-session-id": SID, "Cookie": "agentic_client_2=secret", "X-Forwarded-Host": "evil", "Connection": "keep-alive"})
    assert resp.headers["Transfer-Encoding"] == "chunked"
    seen, end = (await resp.read()).split(b"\n")
    seen = json.loads(seen)
    assert end == b"--end--" and relayed(proxy) == 1
    assert seen["x-session-id"] == SID and seen["x-client-id"] == "client-2" and seen["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-Host"] == f"{proxy.host}:{proxy.port}" and "Cookie" not in seen


async def test_stopping_closes_idle_fast_connections(aiohttp_client, backend, tmp_path):
    proxy = await serve_proxy(aiohttp_client, tmp_path, str(backend.make_url("")))
    reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
    writer.write(f"GET /sessions/{SID} HTTP/1.1\r\nHost: localhost\r\nx-session-id: {SID}\r\n\r\n".encode())
    status, _, _ = await read_answer(reader)
    assert status == 404 and relayed(proxy) == 1
    await asyncio.wait_for(proxy.close(), 10)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


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
        resp = await proxy.get("/small", headers=headers)  # the fast path
        assert resp.status == 502 and (await resp.json())["error"]["message"].endswith("it dropped its answer")
        reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
        writer.write(f"GET /sm%61ll HTTP/1.1\r\nHost: localhost\r\nx-session-id: {SID}\r\n\r\n".encode())  # percent-encoded: aiohttp's
        status, _, body = await read_answer(reader)
        writer.close()
        assert status == 502 and json.loads(body)["error"]["message"].endswith("it dropped its answer")
        assert relayed(proxy) == 1
        resp = await proxy.get("/big", headers=headers)  # too large to read first: its head is already out
        assert resp.status == 200 and resp.headers["Content-Length"] == "100000"
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
        assert (await proxy.get("/small", headers=headers)).status == 502  # and the proxy still serves
    finally:
        upstream.close()
        await upstream.wait_closed()
