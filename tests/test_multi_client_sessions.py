"""Session isolation across client proxies: the usage guide's "Testing Session Isolation".

Under pytest it starts a main server and clients 2 and 3 through deploy.sh. As a script it
checks a live deployment and prints one pass/fail line per check:

    python tests/test_multi_client_sessions.py --clients 2 3 [--main http://localhost:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclass
class Deployed:
    main: str
    clients: list[int]

    def proxy(self, n: int) -> str:
        return f"http://127.0.0.1:{8000 + n}"

    def frontend(self, n: int) -> str:
        return f"http://127.0.0.1:{8500 + n}"


async def bound_session(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/sessions") as resp:
        assert resp.status == 200, await resp.text()
        sid = (await resp.json())["session_id"]
    assert sid, "the proxy did not report the caller's session"
    return sid


async def say(http: aiohttp.ClientSession, base: str, sid: str, content: str) -> dict:
    async with http.post(f"{base}/sessions/{sid}/messages", json={"content": content, "max_tokens": 6}, headers={"x-session-id": sid}) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body


async def check_unique_sessions(d: Deployed) -> str:
    ids = []
    for n in d.clients:
        async with aiohttp.ClientSession() as http:
            ids.append(await bound_session(http, d.proxy(n)))
    assert len(set(ids)) == len(ids), f"clients share a session: {ids}"
    return f"{len(ids)} clients, {len(set(ids))} distinct sessions"


async def check_conversations_are_separate(d: Deployed) -> str:
    words = {}
    async with aiohttp.ClientSession() as http:
        for i, n in enumerate(d.clients):
            sid = await bound_session(http, d.proxy(n))
            words[n] = (sid, f"SECRETWORD{i}X{n}")
            await say(http, d.proxy(n), sid, f"Remember {words[n][1]}.")
        for n, (sid, word) in words.items():
            async with http.get(f"{d.proxy(n)}/sessions/{sid}/messages", headers={"x-session-id": sid}) as resp:
                text = await resp.text()
            assert word in text, f"client {n} lost its own message"
            for other, (_, other_word) in words.items():
                assert other == n or other_word not in text, f"client {n} sees client {other}'s conversation"
    return "each history holds only its own messages"


async def check_files_are_isolated(d: Deployed) -> str:
    a, b = d.clients[:2]
    async with aiohttp.ClientSession() as http:
        sid_a = await bound_session(http, d.proxy(a))
        sid_b = await bound_session(http, d.proxy(b))
        form = aiohttp.FormData()
        form.add_field("file", b"client A private notes", filename="private.txt")
        async with http.post(f"{d.proxy(a)}/sessions/{sid_a}/files", data=form, headers={"x-session-id": sid_a}) as resp:
            assert resp.status == 201, await resp.text()
        async with http.get(f"{d.proxy(b)}/sessions/{sid_b}/files", headers={"x-session-id": sid_b}) as resp:
            names = [f["name"] for f in (await resp.json())["files"]]
        assert "private.txt" not in names, "client B lists client A's file"
        async with http.get(f"{d.proxy(b)}/sessions/{sid_a}/files/private.txt") as resp:
            assert resp.status == 403, f"client B fetched A's file without A's id in its header ({resp.status})"
        async with http.get(f"{d.proxy(b)}/sessions/{sid_b}/files/private.txt", headers={"x-session-id": sid_b}) as resp:
            assert resp.status == 404
    return "uploads stay in their own session"


async def check_guide_curl_calls(d: Deployed) -> str:
    n = d.clients[0]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.proxy(n)}/sessions", json={"client_id": "my_client"}) as resp:
            assert resp.status == 201
            sid = (await resp.json())["session_id"]
        headers = {"x-session-id": sid}
        async with http.get(f"{d.proxy(n)}/sessions/{sid}", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["client_id"] == "my_client"
        async with http.get(f"{d.main}/sessions") as resp:
            listing = await resp.json()
            assert "stats" in listing and sid not in str(listing), "full ids leaked without the admin token"
        await say(http, d.proxy(n), sid, "hello")
        async with http.post(f"{d.proxy(n)}/sessions/{sid}/clear", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["message_count"] == 0
        async with http.delete(f"{d.proxy(n)}/sessions/{sid}", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json()) == {"deleted": sid}
        async with http.get(f"{d.proxy(n)}/sessions/{sid}", headers=headers) as resp:
            assert resp.status == 404
    return "create, get, list, clear, delete"


async def check_websocket_chat_through_proxy(d: Deployed) -> str:
    n = d.clients[0]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{d.proxy(n)}/ws") as ws:
            first = await ws.receive_json(timeout=30)
            assert first["type"] == "session"
            await ws.send_json({"type": "chat", "content": "Say hi.", "max_tokens": 6})
            text = ""
            while True:
                frame = await ws.receive_json(timeout=60)
                if frame["type"] == "token":
                    text += frame["text"]
                if frame["type"] in ("done", "error"):
                    break
            assert frame["type"] == "done" and frame["message"]["content"] == text, frame
    return f"streamed {len(text)} chars, equal to the stored reply"


async def check_hostile_origin_refused(d: Deployed) -> str:
    n = d.clients[0]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{d.proxy(n)}/sessions", headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403, resp.status
        try:
            async with http.ws_connect(f"{d.proxy(n)}/ws", headers={"Origin": "http://evil.example"}):
                raise AssertionError("a foreign page opened the WebSocket")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 403
        async with http.post(f"{d.proxy(n)}/sessions", headers={"Origin": d.frontend(n).replace("127.0.0.1", "localhost")}) as resp:
            pass
    return "foreign origins get 403"


async def check_cookie_binding(d: Deployed) -> str:
    n = d.clients[0]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:  # unsafe: accept cookies from IP hosts
        async with browser.post(f"{d.proxy(n)}/sessions") as resp:
            created = (await resp.json())["session_id"]
            cookie = resp.headers.get("Set-Cookie", "")
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
        for _ in range(3):
            assert await bound_session(browser, d.proxy(n)) == created
    async with aiohttp.ClientSession() as other_browser:
        assert await bound_session(other_browser, d.proxy(n)) != created
    return "a browser keeps its session across requests"


async def check_stats_by_client(d: Deployed) -> str:
    async with aiohttp.ClientSession() as http:
        for n in d.clients:
            await bound_session(http, d.proxy(n))
        async with http.get(f"{d.main}/sessions") as resp:
            by_client = (await resp.json())["stats"]["by_client"]
    missing = [n for n in d.clients if f"client-{n}" not in by_client]
    assert not missing, f"no sessions recorded for clients {missing}: {by_client}"
    return f"by_client: {by_client}"


CHECKS: list[Callable[[Deployed], Awaitable[str]]] = [
    check_unique_sessions, check_conversations_are_separate, check_files_are_isolated, check_guide_curl_calls,
    check_websocket_chat_through_proxy, check_hostile_origin_refused, check_cookie_binding, check_stats_by_client,
]


# -- pytest: real processes started by deploy.sh -------------------------------------------------
try:
    import pytest
except ImportError:  # running as a script on a machine without the dev extras
    pytest = None

if pytest is not None:
    from tests.e2e.deployment import Deployment, http

    @pytest.fixture(scope="module")
    def deployed(tmp_path_factory):
        clients = [2, 3]
        deployment = Deployment.main_with_clients(tmp_path_factory.mktemp("multi") / "data", clients)
        yield deployment, Deployed(deployment.url, clients)
        deployment.stop_all()

    @pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
    async def test_isolation(deployed, check):
        await check(deployed[1])

    async def test_backend_restart_while_clients_run(deployed):
        deployment, d = deployed
        deployment.deploy("stop", "main")
        status, body = http("GET", f"{d.proxy(2)}/health")
        assert status == 200 and body["backend"]["reachable"] is False
        status, body = http("GET", f"{d.proxy(2)}/sessions")
        assert status == 502 and body["error"]["code"] == "backend_unreachable"
        deployment.deploy("main")
        assert await check_unique_sessions(d)
        await check_websocket_chat_through_proxy(d)


# -- script -------------------------------------------------------------------------------------------
async def run_checks(d: Deployed) -> int:
    failures = 0
    for check in CHECKS:
        try:
            detail = await check(d)
            print(f"PASS  {check.__name__[6:]:<36} {detail}")
        except Exception as exc:  # report every check, whatever failed
            failures += 1
            print(f"FAIL  {check.__name__[6:]:<36} {type(exc).__name__}: {exc}")
    print(f"{len(CHECKS) - failures} passed, {failures} failed")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check session isolation on a running deployment.")
    parser.add_argument("--clients", type=int, nargs="+", default=[2, 3], help="client numbers to check (default: 2 3)")
    parser.add_argument("--main", default=os.environ.get("BACKEND_URL", "http://localhost:8000"), help="main server URL")
    args = parser.parse_args(argv)
    if len(args.clients) < 2:
        parser.error("isolation needs at least two clients")
    return asyncio.run(run_checks(Deployed(args.main.rstrip("/"), args.clients)))


if __name__ == "__main__":
    raise SystemExit(main())
