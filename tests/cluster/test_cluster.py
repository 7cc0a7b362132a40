"""Several main servers behind HAProxy on one PostgreSQL, started by `./deploy.sh cluster 2` as a
user starts them, with two client proxies in front: isolation, session affinity (HAProxy's log
names the server of every request), expiry done once, and failover by kill -9 mid-reply."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import aiohttp
import pytest

from tests.e2e.deployment import Deployment, free_port, port_free
from tests.postgres import pg_bin
from tests.test_multi_client_sessions import CHECKS, Deployed, bound_session, say

pytestmark = pytest.mark.slow

CLIENTS = [71, 72]
SERVERS = ("main-1", "main-2")
# One line per request: ... mains/main-2 ... {<affinity key>} "GET /path HTTP/1.1"
LOG_LINE = re.compile(r"mains/(main-\d+) .*\{([^}]*)\} \"(\w+) (\S+)")


def two_free_ports() -> int:
    for _ in range(100):
        port = free_port()
        if port < 65000 and port_free(port + 1):
            return port
    raise AssertionError("no two free ports in a row")


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("haproxy") is None or pg_bin("initdb") is None:
        pytest.skip("haproxy or PostgreSQL is not installed (./deploy.sh test installs them)")
    busy = [p for n in CLIENTS for p in (8000 + n, 8500 + n) if not port_free(p)]
    assert not busy, f"ports {busy} are in use: stop what uses them before running these tests"
    # Not pytest's tmp_path: its folders are private to root, and PostgreSQL runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="agentic-cluster-"))
    root.chmod(0o755)
    d = Deployment(root / "data", free_port(), PG_PORT=str(free_port()), CLUSTER_BASE_PORT=str(two_free_ports()),
                   SESSION_TIMEOUT="0.5", CLEANUP_INTERVAL="1")
    try:
        d.deploy("cluster", "2")
        for n in CLIENTS:
            d.deploy("client", str(n))
        yield d
    finally:
        d.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def requests_by_server(d: Deployment) -> list[tuple[str, str, str, str]]:
    """(server, affinity key, method, path) of each request HAProxy has logged so far."""
    text = (d.data_dir / "logs" / "haproxy.log").read_text(errors="replace")
    return [m.groups() for m in map(LOG_LINE.search, text.splitlines()) if m]


def servers_of(d: Deployment) -> dict[str, set[str]]:
    served: dict[str, set[str]] = defaultdict(set)
    for server, key, _, _ in requests_by_server(d):
        if key:
            served[key].add(server)
    return served


def last_server_of(d: Deployment, sid: str) -> str:
    return [server for server, key, _, _ in requests_by_server(d) if key == sid][-1]


def proxy(n: int) -> str:
    return f"http://127.0.0.1:{8000 + n}"


async def session_with_file(http: aiohttp.ClientSession, d: Deployment) -> str:
    """A new session (created wherever HAProxy sends it) holding one uploaded file."""
    async with http.post(f"{d.url}/sessions") as resp:
        sid = (await resp.json())["session_id"]
    form = aiohttp.FormData()
    form.add_field("file", b"notes", filename="n.txt")
    async with http.post(f"{d.url}/sessions/{sid}/files", data=form, headers={"x-session-id": sid}) as resp:
        assert resp.status == 201, await resp.text()
    return sid


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_isolation_through_the_balancer(cluster, check):
    await check(Deployed(cluster.url, CLIENTS))


def test_status_and_logs_cover_the_cluster(cluster):
    status = cluster.deploy("status").stdout
    for name in ("main-1", "main-2", "haproxy", "postgres"):
        assert re.search(rf"^{name} +\d+ ", status, re.M), status
    assert "mains/main-" in cluster.deploy("logs", "haproxy", "--no-follow").stdout
    assert "serving on" in cluster.deploy("logs", "main-2", "--no-follow").stdout


async def test_all_of_a_sessions_calls_reach_one_server(cluster):
    sids = []
    async with aiohttp.ClientSession() as http:
        for _ in range(6):
            sid = await session_with_file(http, cluster)
            sids.append(sid)
            headers = {"x-session-id": sid}
            for _ in range(2):
                async with http.get(f"{cluster.url}/sessions/{sid}") as resp:  # the id in the path
                    assert resp.status == 200
                async with http.get(f"{cluster.url}/sessions", headers=headers) as resp:  # the id in the header
                    assert (await resp.json())["session_id"] == sid
                async with http.ws_connect(f"{cluster.url}/ws?session_id={sid}") as ws:  # the id in the query
                    assert (await ws.receive_json(timeout=30))["type"] == "session"
                async with http.get(f"{cluster.url}/v1/models", headers={"Authorization": f"Bearer  {sid.upper()}"}) as resp:  # the API key
                    assert resp.status == 200
    await asyncio.sleep(1)  # HAProxy logs a WebSocket when it closes
    served = servers_of(cluster)
    for sid in sids:
        assert len(served[sid]) == 1, f"session {sid} was served by {served[sid]}"
    api_keys = [key for _, key, _, path in requests_by_server(cluster) if path == "/v1/models"]
    assert len(api_keys) == 12 and set(api_keys) == set(sids)  # hashed on the key, like the session's other calls
    creations = [server for server, _, method, path in requests_by_server(cluster) if method == "POST" and path == "/sessions"]
    assert set(creations[-6:]) == set(SERVERS)  # without a session to follow, requests go round robin


async def test_expiry_runs_everywhere_and_removes_each_session_once(cluster):
    async with aiohttp.ClientSession() as http:
        sids = [await session_with_file(http, cluster) for _ in range(4)]
    folders = [cluster.data_dir / "uploads" / f"session_{sid}" for sid in sids]
    assert all(f.is_dir() for f in folders)
    logs = [cluster.data_dir / "logs" / f"{server}.log" for server in SERVERS]
    deadline = time.monotonic() + 120  # SESSION_TIMEOUT is 30 s, the cleanup runs every second
    while time.monotonic() < deadline:
        text = "".join(log.read_text(errors="replace") for log in logs)
        if all(f"[{sid}] session expired" in text for sid in sids) and not any(f.exists() for f in folders):
            break
        await asyncio.sleep(1)
    for sid in sids:  # each server runs the expiry; each session was removed by one of them, once
        assert text.count(f"[{sid}] session expired") == 1, sid
    assert not any(f.exists() for f in folders)
    async with aiohttp.ClientSession() as http:
        for sid in sids:
            async with http.get(f"{cluster.url}/sessions/{sid}") as resp:
                assert resp.status == 404
        for _ in range(20):  # sessions of the other tests expire meanwhile: read until nothing moved
            before, counted = await expired_stat(http, cluster), 0.0
            for n in range(2):  # /metrics per server, each labelled with its name
                port = int(cluster.env["CLUSTER_BASE_PORT"]) + n
                async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                assert f'target_info{{server="main-{n + 1}"}} 1.0' in text
                counted += float(re.search(r"^agentic_sessions_expired_total (\S+)$", text, re.M).group(1))
            if await expired_stat(http, cluster) == before:
                break
            await asyncio.sleep(0.5)
    assert counted == before >= len(sids)  # the cluster-wide count is the sum of what each server did


async def expired_stat(http: aiohttp.ClientSession, d: Deployment) -> int:
    async with http.get(f"{d.url}/sessions") as resp:
        return (await resp.json())["stats"]["expired"]


async def counting_session(http: aiohttp.ClientSession, base: str) -> str:
    """The client's session, told to count with temperature 0.3 and to ignore end-of-sequence
    (a long reply to cut off); the failover tests check these settings survive."""
    sid = await bound_session(http, base)
    async with http.patch(f"{base}/sessions/{sid}", headers={"x-session-id": sid},
                          json={"system_prompt": "You count.", "settings": {"temperature": 0.3, "ignore_eos": True}}) as resp:
        assert resp.status == 200, await resp.text()
    return sid


async def reply_cut_off_by(kill: Callable[[], object], http: aiohttp.ClientSession, base: str, sid: str) -> None:
    """Asks over the WebSocket for a long reply, runs `kill` at its first token: the reply ends with
    an error frame, never `done`, and the question was acknowledged (`start`: stored) before."""
    acknowledged = []
    async with http.ws_connect(f"{base}/ws?session_id={sid}", headers={"x-session-id": sid}) as ws:
        assert (await ws.receive_json(timeout=30))["type"] == "session"
        await ws.send_json({"type": "chat", "content": "Count to five hundred.", "max_tokens": 500})
        while (frame := await ws.receive_json(timeout=60))["type"] != "token":
            acknowledged.append(frame["type"])
        kill()
        after = [msg.json() async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
    assert "start" in acknowledged
    assert after and after[-1]["type"] == "error" and not any(f["type"] == "done" for f in after), after


async def test_kill_9_mid_reply_hands_the_session_to_another_server_intact(cluster):
    base = proxy(CLIENTS[0])
    async with aiohttp.ClientSession() as http:
        sid = await counting_session(http, base)
        headers = {"x-session-id": sid}
        form = aiohttp.FormData()
        form.add_field("file", b"the code word is PINEAPPLE", filename="notes.txt")
        async with http.post(f"{base}/sessions/{sid}/files", data=form, headers=headers) as resp:
            assert resp.status == 201
        answered = await say(http, base, sid, "Remember PINEAPPLE.")
        owner = last_server_of(cluster, sid)

        await reply_cut_off_by(lambda: cluster.kill9(owner), http, base, sid)

        deadline = time.monotonic() + 15
        while True:  # HAProxy sees the server gone (a refused connection at once, health checks within 2 s)
            async with http.get(f"{base}/sessions/{sid}", headers=headers) as resp:
                if resp.status == 200:
                    session = await resp.json()
                    break
            assert time.monotonic() < deadline, f"no other server took the session ({resp.status})"
            await asyncio.sleep(0.5)
        assert last_server_of(cluster, sid) != owner
        assert (session["system_prompt"], session["settings"]["temperature"]) == ("You count.", 0.3)
        assert [f["name"] for f in session["files"]] == ["notes.txt"]
        async with http.get(f"{base}/sessions/{sid}/files/notes.txt", headers=headers) as resp:
            assert await resp.read() == b"the code word is PINEAPPLE"
        async with http.get(f"{base}/sessions/{sid}/messages", headers=headers) as resp:
            history = [(m["role"], m["content"]) for m in (await resp.json())["messages"]]
        assert history[:2] == [("user", "Remember PINEAPPLE."), ("assistant", answered["message"]["content"])]
        assert history[2] == ("user", "Count to five hundred.")  # acknowledged by "start": kept
        again = await say(http, base, sid, "Count to five hundred.")  # sent again, answered by the new server
        assert again["message"]["content"]

        async def keep_alive() -> None:  # the session must not expire (SESSION_TIMEOUT is 30 s) while the server restarts
            while True:
                await asyncio.sleep(5)
                async with http.get(f"{base}/sessions/{sid}", headers=headers):
                    pass

        pinger = asyncio.create_task(keep_alive())
        try:
            await asyncio.to_thread(cluster.deploy, "cluster", "2")  # the killed server comes back
        finally:
            pinger.cancel()
        deadline, statuses = time.monotonic() + 20, []
        while time.monotonic() < deadline:  # until HAProxy's health checks see it up
            async with http.get(f"{base}/sessions/{sid}/messages", headers=headers) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    history = [m["content"] for m in (await resp.json())["messages"]]
                    if last_server_of(cluster, sid) == owner:
                        break
            await asyncio.sleep(0.5)
        assert last_server_of(cluster, sid) == owner, (statuses, (cluster.data_dir / "logs" / "haproxy.log").read_text()[-3000:])
        assert history[-1] == again["message"]["content"]  # the returning server reads what the other wrote
