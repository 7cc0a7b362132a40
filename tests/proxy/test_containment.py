"""What a hostile caller tried against client N (issue 11), against real processes
(`python -m agentic serve`, `python -m agentic client N`) or real servers on sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from typing import AsyncIterator

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from agentic.config import HEAD_TIMEOUT_S, MAX_WS_FRAME_BYTES
from agentic.proxy.limits import HTTP_POOL, SOCKETS_PER_SESSION
from tests.e2e.deployment import ROOT
from tests.proxy.serving import Served, serve_proxy

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
SID = "0b5c4a4e-0000-4000-8000-000000000000"
BOUNDED = aiohttp.ClientTimeout(total=90)  # a hang fails the test instead of blocking it


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A main server (session creation unthrottled for the many sessions below) and client N in front of it."""
    data = tmp_path_factory.mktemp("contained")
    main = Served.main(data / "main", SESSION_CREATE_RATE="100000", SESSION_CREATE_BURST="1000")
    try:
        client = Served.client(data / "client", main.url)
    except BaseException:
        main.stop()
        raise
    yield main, client
    client.stop()
    main.stop()


def ws_url(base: str, session_id: str, prefix: str = "") -> str:
    return f"{base.replace('http', 'ws', 1)}{prefix}/ws?session_id={session_id}"


async def new_sessions(http: aiohttp.ClientSession, main_url: str, count: int) -> list[str]:
    out = []
    for _ in range(count):
        async with http.post(f"{main_url}/sessions") as resp:
            assert resp.status == 201, await resp.text()
            out.append((await resp.json())["session_id"])
    return out


async def proxy_health(http: aiohttp.ClientSession, client: Served) -> dict:
    async with http.get(f"{client.url}/health") as resp:
        return await resp.json()


@pytest.mark.parametrize("prefix", ["", "/api"], ids=["proxy port", "page port"])
async def test_an_expect_header_never_hands_one_caller_another_callers_answer(served, prefix):
    main, client = served
    base = client.url if not prefix else f"http://127.0.0.1:{client.port + 500}{prefix}"
    async with aiohttp.ClientSession(timeout=BOUNDED) as x_caller, aiohttp.ClientSession(timeout=BOUNDED) as v_caller:
        x, v = await new_sessions(x_caller, main.url, 2)
        async with x_caller.get(f"{base}/sessions/{x}", headers={"x-session-id": x, "Expect": "100-continue"}) as resp:
            assert resp.status == 200 and (await resp.json())["session_id"] == x
        for _ in range(4):  # round the proxy's pooled connections
            for caller, sid in ((v_caller, v), (x_caller, x)):
                async with caller.get(f"{base}/sessions/{sid}", headers={"x-session-id": sid}) as resp:
                    body = await resp.json()
                    assert resp.status == 200 and body["session_id"] == sid, body


class HeldSocket:
    """A WebSocket read all along, as a browser reads it: pings get their pongs (the main
    server's heartbeat closes a socket that stops answering) and frames are kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: asyncio.Queue[dict] = asyncio.Queue()
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == WSMsgType.TEXT:
                self.frames.put_nowait(json.loads(msg.data))

    async def next(self) -> dict:
        return await asyncio.wait_for(self.frames.get(), 60)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reading, return_exceptions=True)


@contextlib.asynccontextmanager
async def held_sockets() -> AsyncIterator[list[HeldSocket]]:
    held: list[HeldSocket] = []
    try:
        yield held
    finally:
        await asyncio.gather(*(socket.close() for socket in held), return_exceptions=True)


async def test_300_websockets_held_leave_posts_and_listings_answering(served):
    main, client = served
    async with aiohttp.ClientSession(timeout=BOUNDED, connector=aiohttp.TCPConnector(limit=0)) as http, held_sockets() as held:
        sessions = await new_sessions(http, main.url, 300 // (SOCKETS_PER_SESSION - 1) + 1)
        targets = [sid for sid in sessions for _ in range(SOCKETS_PER_SESSION - 1)][:300]
        for start in range(0, len(targets), 50):
            async with asyncio.timeout(90):
                held += [HeldSocket(ws) for ws in await asyncio.gather(*(http.ws_connect(ws_url(client.url, sid)) for sid in targets[start:start + 50]))]
        assert {(await socket.next())["type"] for socket in held} == {"session"} and len(held) == 300
        assert (await proxy_health(http, client))["websockets"] == 300

        async with http.post(f"{client.url}/sessions", json={"client_id": "meanwhile"}) as resp:
            assert resp.status == 201, await resp.text()
            created = (await resp.json())["session_id"]
        async with http.get(f"{client.url}/sessions", headers={"x-session-id": created}) as resp:
            assert resp.status == 200 and (await resp.json())["session_id"] == created
        async with http.ws_connect(ws_url(client.url, created)) as ws:
            assert (await ws.receive_json(timeout=60))["session"]["session_id"] == created

        for socket in held:  # and every one of the 300 is still relayed both ways
            await socket.ws.send_json({"type": "ping"})
        assert [await socket.next() for socket in held] == [{"type": "pong"}] * 300


async def test_one_session_gets_a_bounded_number_of_relayed_websockets(served):
    main, client = served
    async with aiohttp.ClientSession(timeout=BOUNDED) as http, held_sockets() as held:
        [sid] = await new_sessions(http, main.url, 1)
        held += [HeldSocket(await http.ws_connect(ws_url(client.url, sid))) for _ in range(SOCKETS_PER_SESSION)]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(ws_url(client.url, sid.upper()))  # another spelling is the same session
        assert refused.value.status == 429
        async with http.get(f"{client.url}/ws", params={"session_id": sid},
                            headers={"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            assert resp.status == 429 and (await resp.json())["error"]["code"] == "too_many_websockets"
        await held.pop().close()
        for _ in range(100):  # the relay lets go of its count once both sides have closed
            if (await proxy_health(http, client))["websockets"] < SOCKETS_PER_SESSION:
                break
            await asyncio.sleep(0.05)
        held.append(HeldSocket(await http.ws_connect(ws_url(client.url, sid))))
        assert (await held[-1].next())["type"] == "session"


async def test_a_300_mb_frame_is_refused_with_1009_and_the_proxy_stays_small(served):
    main, client = served
    async with aiohttp.ClientSession(timeout=BOUNDED) as http:
        [sid] = await new_sessions(http, main.url, 1)
        ws = await http.ws_connect(ws_url(client.url, sid))
        assert (await ws.receive_json(timeout=60))["type"] == "session"
        sending = asyncio.create_task(ws.send_bytes(bytes(300 * MIB)))
        try:
            answer = await ws.receive(timeout=120)
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await ws.close()
        assert answer.type == WSMsgType.CLOSE and answer.data == WSCloseCode.MESSAGE_TOO_BIG, answer
        peak_mb = client.status_kb("VmHWM") / 1024
        assert peak_mb < 200, f"the proxy peaked at {peak_mb:.0f} MB"
        assert client.alive() and (await proxy_health(http, client))["status"] == "ok"
        async with http.ws_connect(ws_url(client.url, sid)) as again:  # a frame at the limit still passes
            await again.receive_json(timeout=60)
            await again.send_str("x" * (MAX_WS_FRAME_BYTES - 1))
            reply = await again.receive_json(timeout=60)
            assert reply["type"] == "error" and reply["code"] == "message_too_large"  # the main server's own answer


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    seen = b""
    while chunk := await reader.read(4096):
        seen += chunk
    return seen


@pytest.mark.parametrize("server", [0, 1], ids=["main", "client"])
async def test_a_slow_head_is_cut_at_the_deadline(served, server):
    reader, writer = await asyncio.open_connection("127.0.0.1", served[server].port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def trickle() -> None:
        while not writer.is_closing():
            writer.write(b"X")  # one byte of a header that never ends
            await asyncio.sleep(0.5)

    trickling = asyncio.create_task(trickle())
    try:
        seen = await asyncio.wait_for(read_until_closed(reader), HEAD_TIMEOUT_S * 4)  # was 75 s, or never
    except ConnectionResetError:
        seen = b""
    finally:
        trickling.cancel()
        writer.close()
    assert seen == b""  # no answer: the head never came


async def test_a_bare_lf_head_gets_a_400_at_once(served):
    _, client = served
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"GET /health HTTP/1.1\nHost: 127.0.0.1\n\n")
    try:
        answer = await asyncio.wait_for(reader.read(200), HEAD_TIMEOUT_S / 2)  # before the head deadline could close it
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0]


async def test_hop_by_hop_and_expect_headers_stop_at_the_proxy(aiohttp_client, aiohttp_server, tmp_path):
    async def echo(request: web.Request) -> web.Response:
        answer = web.json_response(dict(request.headers))
        answer.headers.update({"Connection": "X-Internal", "X-Internal": "1", "Keep-Alive": "timeout=5", "Proxy-Authenticate": "Basic"})
        return answer

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    upstream = await aiohttp_server(app)
    proxy = await serve_proxy(aiohttp_client, tmp_path, str(upstream.make_url("")))
    sent = {"x-session-id": SID, "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Proxy-Authorization": "Basic xyz",
            "TE": "trailers", "Keep-Alive": "timeout=99", "Expect": "100-continue", "X-Kept": "yes"}
    for method, body in (("GET", None), ("POST", b'{"a": 1}')):
        resp = await proxy.request(method, "/echo", headers=sent, data=body)
        seen = {name.lower(): value for name, value in (await resp.json()).items()}
        assert resp.status == 200 and seen["x-kept"] == "yes" and seen["x-session-id"] == SID
        assert not {"x-secret", "proxy-authorization", "te", "keep-alive", "expect"} & set(seen), seen
        assert seen.get("connection", "keep-alive").lower() == "keep-alive"  # aiohttp's own, not the caller's list
        assert not {"X-Internal", "Keep-Alive", "Proxy-Authenticate"} & set(resp.headers), resp.headers


async def test_a_full_pool_answers_503_instead_of_hanging(aiohttp_client, aiohttp_server, tmp_path):
    held, release = [], asyncio.Event()

    async def hold(request: web.Request) -> web.Response:
        held.append(request)
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/hold", hold)
    upstream = await aiohttp_server(app)
    proxy = await serve_proxy(aiohttp_client, tmp_path, str(upstream.make_url("")))
    url = str(proxy.make_url("/hold"))
    async with aiohttp.ClientSession(timeout=BOUNDED, connector=aiohttp.TCPConnector(limit=0)) as http:
        async def get() -> tuple[int, dict]:
            async with http.get(url, headers={"x-session-id": SID}) as resp:
                return resp.status, await resp.json()

        waiting = [asyncio.create_task(get()) for _ in range(HTTP_POOL)]
        while len(held) < HTTP_POOL:
            await asyncio.sleep(0.05)
        status, body = await get()  # no connection comes free in time
        assert status == 503 and body["error"]["code"] == "backend_busy", body
        health = await http.get(str(proxy.make_url("/health")))
        assert health.status == 200  # the proxy itself still answers
        release.set()
        assert {status for status, _ in await asyncio.gather(*waiting)} == {200}


def test_the_proxy_loads_no_engine_chat_uploads_or_metrics():
    banned = ("llama_cpp", "prometheus_client", "agentic.chat", "agentic.uploads", "agentic.engine", "agentic.app", "agentic.api")
    script = ("import json, sys; import agentic.proxy.app, agentic.proxy.run; "
              f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({banned!r}))))")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
