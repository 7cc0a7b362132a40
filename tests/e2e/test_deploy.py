"""deploy.sh itself: client ports, double deploy, stop/status, bad N, busy ports."""

from __future__ import annotations

import socket

import pytest

from tests.e2e.deployment import Deployment, free_port, http, port_free


def test_client_n_ports_status_double_deploy_and_stop(deployment):
    if not (port_free(8010) and port_free(8510)):
        pytest.fail("ports 8010/8510 are in use; stop what uses them")
    deployment.deploy("main")
    out = deployment.deploy("client", "10").stdout
    assert "http://localhost:8510" in out and "http://localhost:8010" in out
    status, body = http("GET", "http://127.0.0.1:8010/health")
    assert status == 200 and body["ports"] == {"frontend": 8510, "proxy": 8010} and body["backend"]["reachable"] is True
    page = http_text("http://127.0.0.1:8510/")
    assert "<html" in page

    again = deployment.deploy("client", "10")
    assert "already running" in again.stdout
    again = deployment.deploy("main")
    assert "already running" in again.stdout

    table = deployment.deploy("status").stdout
    assert "main" in table and "client-10" in table and "8510 page, 8010 proxy" in table and "ok backend up" in table

    logs = deployment.deploy("logs", "client", "10", "--no-follow").stdout
    assert "client 10" in logs

    assert "client-10 stopped" in deployment.deploy("stop", "client", "10").stdout
    assert port_free(8010) and port_free(8510)
    assert "client-10" not in deployment.deploy("status").stdout
    deployment.deploy("stop", "all")
    assert "stopped" in deployment.deploy("status").stdout.splitlines()[1]


def http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


@pytest.mark.parametrize("n", ["0", "100", "abc", "-1", ""])
def test_bad_client_numbers_are_refused(deployment, n):
    result = deployment.deploy("client", n, check=False)
    assert result.returncode != 0
    assert "client" in result.stderr and ("between 1 and 99" in result.stderr or "needs a number" in result.stderr)


def test_client_clashing_with_main_port_is_refused(tmp_path):
    d = Deployment(tmp_path / "data", 8007)
    result = d.deploy("client", "7", check=False)
    assert result.returncode != 0 and "main server's port" in result.stderr


def test_busy_port_is_named(deployment):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", deployment.port))
    blocker.listen()
    try:
        result = deployment.deploy("main", check=False)
    finally:
        blocker.close()
    assert result.returncode != 0 and f"port {deployment.port}" in result.stderr and "in use" in result.stderr


def test_unknown_command_and_help(deployment):
    result = deployment.deploy("frobnicate", check=False)
    assert result.returncode != 0 and "unknown command" in result.stderr
    assert "./deploy.sh main" in deployment.deploy("help").stdout
