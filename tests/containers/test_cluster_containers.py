"""The cluster in containers: `./deploy.sh --docker cluster 2` runs containers/docker-compose.cluster.yml
(PostgreSQL, agentic-main-1 and -2, HAProxy as agentic-main-server) and `--docker client N` puts
client proxies in front, unchanged. Chat with the real model through HAProxy's published port,
history and settings in PostgreSQL, one session's calls on one server (HAProxy's log and each
server's /metrics), a main container killed mid-reply, and the file composed by hand (`up -d
--build`, as its header says). Everything, volumes included, is removed at the end, also on failure.

Images are built as the single-server container tests build them (tests/containers/test_containers_e2e.py).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import time

import aiohttp
import pytest

from tests.cluster.test_cluster import LOG_LINE, counting_session, reply_cut_off_by
from tests.containers.test_containers_e2e import BUILD_TIMEOUT, Containers, require_engine_and_client_ports
from tests.e2e.deployment import ROOT, free_port
from tests.test_multi_client_sessions import CHECKS, Deployed, say

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

CLIENTS = [74, 75]
SERVERS = ("agentic-main-1", "agentic-main-2")
CONTAINERS = {"agentic-postgres", *SERVERS, "agentic-main-server"}
PROJECT = "agentic-cluster"
COMPOSE_FILE = "containers/docker-compose.cluster.yml"
METRIC = re.compile(r"^agentic_turns_total\{[^}]*\} (\S+)$", re.M)


class Cluster(Containers):
    def __init__(self, main_port: int) -> None:
        super().__init__(main_port)
        self.env["AGENTIC_DB_PASSWORD"] = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{main_port}"

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """The file composed by hand, as its header says (podman-compose: -p and BUILDAH_FORMAT)."""
        base = self.engine_cli("images", "-q", "localhost/agentic-base:bookworm").strip()
        env = {**self.env, "MAIN_PORT": str(self.main_port), "BUILDAH_FORMAT": "docker",
               **({"AGENTIC_BASE_IMAGE": "localhost/agentic-base:bookworm"} if base else {})}
        return subprocess.run([*self.engine[1:], "-p", PROJECT, "-f", COMPOSE_FILE, *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def volumes(self) -> set[str]:
        return {v for v in self.engine_cli("volume", "ls", "--format", "{{.Name}}").split() if v.startswith(f"{PROJECT}_")
                or any(v.startswith(f"agentic-client-{n}_") for n in CLIENTS)}

    def logs(self, container: str) -> str:
        result = subprocess.run([self.engine[0], "logs", container], capture_output=True, text=True)
        return result.stdout + result.stderr  # the engines keep the container's stderr on stderr

    def haproxy_log(self) -> list[tuple[str, str, str, str]]:
        """(server, affinity key, method, path) of each request HAProxy has logged so far."""
        return [m.groups() for m in map(LOG_LINE.search, self.logs("agentic-main-server").splitlines()) if m]

    def servers_of(self, sid: str) -> list[str]:
        return [server for server, key, _, _ in self.haproxy_log() if key == sid]

    def turns(self, container: str) -> float:
        """Chat turns this main server finished, from its own /metrics (its port is not published)."""
        text = self.engine_cli("exec", container, "python", "-c",
                               "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/metrics').read().decode())")
        assert f'target_info{{server="{container.removeprefix("agentic-")}"}} 1.0' in text
        return sum(float(v) for v in METRIC.findall(text))

    def psql(self, sql: str) -> str:
        return self.engine_cli("exec", "agentic-postgres", "psql", "-d", "agentic", "-tA", "-c", sql)

    def healthy(self, container: str) -> bool:
        if self.engine[0] == "podman":  # without systemd, podman runs no health check by itself
            return subprocess.run(["podman", "healthcheck", "run", container], capture_output=True).returncode == 0
        return self.engine_cli("inspect", "--format", "{{.State.Health.Status}}", container).strip() == "healthy"

    def wait_healthy(self, container: str, seconds: float = 240) -> None:
        deadline = time.monotonic() + seconds
        while not self.healthy(container):
            assert time.monotonic() < deadline, f"{container} did not become healthy: {self.logs(container)[-3000:]}"
            time.sleep(1)

    def teardown(self) -> None:
        for n in CLIENTS:
            self.deploy("stop", "client", str(n), check=False)
        self.compose("down", "-v")
        for volume in self.volumes():  # the clients' volumes (compose down -v took the cluster's)
            subprocess.run([self.engine[0], "volume", "rm", volume], capture_output=True)


@pytest.fixture(scope="module")
def cluster():
    require_engine_and_client_ports(CLIENTS)
    c = Cluster(free_port())
    assert not CONTAINERS & c.names(), "a cluster runs already: ./deploy.sh --docker stop cluster"
    try:
        c.deploy("base-image", check=False, timeout=900)  # where mmdebstrap cannot make it, the public base is pulled
        c.deploy("cluster", "2", timeout=BUILD_TIMEOUT)
        for n in CLIENTS:
            c.deploy("client", str(n), timeout=BUILD_TIMEOUT)
        yield c
    finally:
        c.teardown()
    assert not CONTAINERS & c.names() and not c.volumes(), "the cluster's containers or volumes were left behind"


def test_the_cluster_becomes_healthy(cluster):
    assert CONTAINERS <= cluster.names()
    for name in CONTAINERS:
        cluster.wait_healthy(name)  # docker runs the first health check only after its interval
    status = cluster.deploy("status").stdout
    for name in CONTAINERS:
        line = next(line for line in status.splitlines() if line.startswith(name))
        assert "healthy" in line and "unhealthy" not in line, status
    assert f"127.0.0.1:{cluster.main_port}->8000" in status
    logs = cluster.deploy("logs", "postgres", "--no-follow")
    assert "database system is ready" in logs.stdout + logs.stderr  # the engines keep a container's stderr on stderr
    # a refused request for the single server's name: the cluster holds agentic-main-server
    assert "stop cluster first" in cluster.deploy("main", check=False).stderr


async def test_chat_through_haproxy_is_stored_in_postgresql(cluster):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{cluster.url}/sessions") as resp:
            assert resp.status == 201
            sid = (await resp.json())["session_id"]
        headers = {"x-session-id": sid}
        async with http.patch(f"{cluster.url}/sessions/{sid}", headers=headers,
                              json={"system_prompt": "You are terse.", "settings": {"temperature": 0.2}}) as resp:
            assert resp.status == 200, await resp.text()
        replies = [(await say(http, cluster.url, sid, f"Question {i}?"))["message"]["content"] for i in (1, 2)]
    rows = cluster.psql(f"SELECT role, content FROM messages WHERE session_id = '{sid}' ORDER BY seq").splitlines()
    assert rows == ["user|Question 1?", f"assistant|{replies[0]}", "user|Question 2?", f"assistant|{replies[1]}"]
    stored = cluster.psql(f"SELECT system_prompt, settings FROM sessions WHERE id = '{sid}'")
    assert stored.startswith("You are terse.|") and '"temperature": 0.2' in stored


async def test_one_sessions_calls_all_reach_one_server(cluster):
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.post(f"{cluster.url}/sessions") as resp:
                sid = (await resp.json())["session_id"]
            before = {s: cluster.turns(s) for s in SERVERS}
            await say(http, cluster.url, sid, "Hello.")
            async with http.get(f"{cluster.url}/sessions/{sid}") as resp:  # the id in the path
                assert resp.status == 200
            async with http.ws_connect(f"{cluster.url}/ws?session_id={sid}") as ws:  # the id in the query
                assert (await ws.receive_json(timeout=30))["type"] == "session"
            await say(http, cluster.url, sid, "Again.")
            await asyncio.sleep(0.5)  # HAProxy logs a WebSocket when it closes
            served = cluster.servers_of(sid)
            assert len(served) >= 4 and len(set(served)) == 1, served
            owner = "agentic-" + served[0]
            grown = {s: cluster.turns(s) - before[s] for s in SERVERS}
            assert grown == {s: (2.0 if s == owner else 0.0) for s in SERVERS}, (owner, grown)


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_client_proxy_containers_work_against_the_cluster(cluster, check):
    await check(Deployed(cluster.url, CLIENTS))


async def test_killing_a_main_container_mid_reply_hands_its_session_over(cluster):
    proxy = Deployed(cluster.url, CLIENTS).proxy(CLIENTS[0])
    async with aiohttp.ClientSession() as http:
        sid = await counting_session(http, proxy)
        headers = {"x-session-id": sid}
        answered = await say(http, proxy, sid, "Remember PINEAPPLE.")
        owner = "agentic-" + cluster.servers_of(sid)[-1]
        marked_down = f"mains/{owner.removeprefix('agentic-')} is DOWN"
        downs_before = cluster.logs("agentic-main-server").count(marked_down)  # also while its model loaded

        await reply_cut_off_by(lambda: cluster.engine_cli("kill", owner), http, proxy, sid)

        # A killed container's address does not refuse connections, it drops them: until HAProxy's
        # health checks mark it down (about 2 s), a request for its sessions waits for the connect
        # timeout and goes to the other server, or fails with 502 if the mark-down cuts it off.
        deadline = time.monotonic() + 30
        while cluster.logs("agentic-main-server").count(marked_down) == downs_before:
            assert time.monotonic() < deadline, "HAProxy did not mark the killed server down"
            await asyncio.sleep(0.5)
        async with http.get(f"{proxy}/sessions/{sid}", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            session = await resp.json()
        assert "agentic-" + cluster.servers_of(sid)[-1] != owner
        assert (session["system_prompt"], session["settings"]["temperature"]) == ("You count.", 0.3)
        async with http.get(f"{proxy}/sessions/{sid}/messages", headers=headers) as resp:
            history = [(m["role"], m["content"]) for m in (await resp.json())["messages"]]
        assert history[-3:] == [("user", "Remember PINEAPPLE."), ("assistant", answered["message"]["content"]),
                                ("user", "Count to five hundred.")]  # the client's session: earlier tests' turns come first
        again = await say(http, proxy, sid, "Count to five hundred.")  # sent again, answered by the other server
        assert again["message"]["content"]

        # The killed container started again comes back on another address: HAProxy resolves it anew
        # and consistent hashing hands the session back to it, which reads what the other wrote.
        cluster.engine_cli("start", owner)
        deadline = time.monotonic() + 240
        while True:
            async with http.get(f"{proxy}/sessions/{sid}/messages", headers=headers) as resp:
                if resp.status == 200 and "agentic-" + cluster.servers_of(sid)[-1] == owner:
                    history = [m["content"] for m in (await resp.json())["messages"]]
                    break
            assert time.monotonic() < deadline, "HAProxy never sent the session back to the restarted server"
            await asyncio.sleep(2)  # also keeps the session from expiring meanwhile
        assert history[-1] == again["message"]["content"]


async def test_composed_by_hand_it_comes_back_with_its_data(cluster):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{cluster.url}/sessions") as resp:
            sid = (await resp.json())["session_id"]
        await say(http, cluster.url, sid, "Remember MANGO.")
    assert "cluster stopped" in cluster.deploy("stop", "cluster").stdout
    assert not CONTAINERS & cluster.names() and cluster.volumes()  # down: containers gone, volumes kept
    result = cluster.compose("up", "-d", "--build", timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in CONTAINERS:
        cluster.wait_healthy(name)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{cluster.url}/sessions/{sid}/messages", headers={"x-session-id": sid}) as resp:
            assert resp.status == 200 and "MANGO" in await resp.text()
