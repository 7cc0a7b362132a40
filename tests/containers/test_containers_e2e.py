"""The guide's deployment in real containers: `./deploy.sh --docker main`, `client 2`, `client 3`.

Images are built as deploy.sh builds them (layers cached: only the first run compiles
llama.cpp), from the local Debian base where deploy.sh can make one. Skipped where no container
engine answers; `./deploy.sh test` installs podman where apt and root allow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.e2e.deployment import DEPLOY, free_port, http, port_free
from tests.test_multi_client_sessions import CHECKS, Deployed, bound_session, check_websocket_chat_through_proxy, say

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

CLIENTS = [2, 3]
# a cold build compiles llama.cpp inside the image: give it the time it takes on 2 shared cores
BUILD_TIMEOUT = 3000


def engine() -> list[str] | None:
    """The container engine deploy.sh finds (`podman podman-compose`, `docker docker compose`), or None."""
    result = subprocess.run([DEPLOY, "engine"], capture_output=True, text=True)
    return result.stdout.split() if result.returncode == 0 else None


class Containers:
    def __init__(self, main_port: int) -> None:
        self.main_port = main_port
        self.engine = engine()
        env = {k: v for k, v in os.environ.items() if k not in ("BACKEND_URL", "HOST", "DATA_DIR")}
        self.env = {**env, "PORT": str(main_port), "N_PARALLEL": "4", "CTX_PER_SESSION": "1024", "LOG_FORMAT": "plain"}

    def deploy(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([DEPLOY, "--docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"deploy.sh --docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def engine_cli(self, *args: str) -> str:
        result = subprocess.run([self.engine[0], *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def names(self) -> set[str]:
        return set(self.engine_cli("ps", "-a", "--format", "{{.Names}}", "--filter", "name=agentic").split())


def require_engine_and_client_ports(clients: list[int]) -> None:
    """Skips where no container engine answers; fails where a client's ports are taken."""
    if engine() is None:
        pytest.skip("no container engine answers (docker with its compose plugin, or podman with podman-compose); "
                    "./deploy.sh test installs podman where apt and root allow")
    busy = [p for n in clients for p in (8000 + n, 8500 + n) if not port_free(p)]
    if busy:
        raise AssertionError(f"ports {busy} are in use: stop what uses them (./deploy.sh --docker stop all) before running these tests")


@pytest.fixture(scope="module")
def containers():
    require_engine_and_client_ports(CLIENTS)
    c = Containers(free_port())
    c.deploy("base-image", check=False, timeout=900)  # where mmdebstrap cannot make it, the public base is pulled
    c.deploy("main", timeout=BUILD_TIMEOUT)
    for n in CLIENTS:
        c.deploy("client", str(n), timeout=BUILD_TIMEOUT)
    yield c
    c.deploy("stop", "all", check=False)


@pytest.fixture
def deployed(containers) -> Deployed:
    return Deployed(f"http://127.0.0.1:{containers.main_port}", CLIENTS)


def test_containers_have_the_guides_names_and_become_healthy(containers):
    assert {"agentic-main-server", "agentic-backend-proxy-2", "agentic-backend-proxy-3"} <= containers.names()
    status = containers.deploy("status").stdout
    for name in ("agentic-main-server", "agentic-backend-proxy-2", "agentic-backend-proxy-3"):
        line = next(line for line in status.splitlines() if line.startswith(name))
        assert "healthy" in line and "unhealthy" not in line, status
    assert f"127.0.0.1:{containers.main_port}->8000" in status and "127.0.0.1:8502->8502" in status


@pytest.mark.parametrize("check", CHECKS, ids=[c.__name__ for c in CHECKS])
async def test_isolation_through_published_ports(deployed, check):
    await check(deployed)


def test_client_image_has_no_engine_and_no_metrics(containers):
    probe = "import importlib.util as u; print([m for m in ('llama_cpp', 'prometheus_client', 'numpy') if u.find_spec(m)])"
    assert containers.engine_cli("exec", "agentic-backend-proxy-2", "python", "-c", probe).strip() == "[]"


UNITS = {"B": 1, "kB": 1e3, "KiB": 1024, "MB": 1e6, "MiB": 1024**2, "GB": 1e9, "GiB": 1024**3}


def test_client_container_memory_within_the_guides_budget(containers):
    used = containers.engine_cli("stats", "--no-stream", "--format", "{{.MemUsage}}", "agentic-backend-proxy-2").split("/")[0].strip()
    amount, unit = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]+)", used).groups()
    print(f"client container memory: {used}")
    assert float(amount) * UNITS[unit] < 512 * 1024**2, f"the guide budgets 512 MB per client, the container uses {used}"


def test_logs_per_container_and_through_deploy_sh(containers):
    def output(result: subprocess.CompletedProcess) -> str:
        return result.stdout + result.stderr  # the engines keep the container's stderr on stderr

    assert "client 2" in output(containers.deploy("logs", "client", "2", "--no-follow"))
    assert "serving on" in output(containers.deploy("logs", "main", "--no-follow"))
    # the guide's `docker logs agentic-backend-proxy-2`
    assert "client 2" in output(subprocess.run([containers.engine[0], "logs", "agentic-backend-proxy-2"], capture_output=True, text=True))


async def test_sessions_survive_recreating_the_main_container(containers, deployed):
    import aiohttp

    proxy = deployed.proxy(2)
    async with aiohttp.ClientSession() as browser:
        sid = await bound_session(browser, proxy)
        await say(browser, proxy, sid, "Remember KEEPSAKE42.")
    containers.deploy("stop", "main")
    assert "agentic-main-server" not in containers.names()  # down removes the container; the volume stays
    status, body = http("GET", f"{proxy}/health")
    assert status == 200 and body["backend"]["reachable"] is False
    containers.deploy("main", timeout=BUILD_TIMEOUT)
    status, body = http("GET", f"{proxy}/sessions/{sid}/messages", headers={"x-session-id": sid})
    assert status == 200 and "KEEPSAKE42" in json.dumps(body), body
    await check_websocket_chat_through_proxy(deployed)


def test_stop_all_removes_every_container(containers):
    containers.deploy("stop", "all")
    assert containers.names() == set()
    assert all(port_free(p) for n in CLIENTS for p in (8000 + n, 8500 + n))
    assert "agentic-main_agentic-data" in containers.engine_cli("volume", "ls", "--format", "{{.Name}}").split()
