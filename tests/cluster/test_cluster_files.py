"""The cluster's container files, checked by parsing (podman-compose 1.0 has no `config`) and by
HAProxy's own check; the native cluster runs for real in test_cluster.py."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.test_containers import CONTAINERS, load

ENV = {"AGENTIC_DB_PASSWORD": "s3cret"}


def test_two_main_servers_share_the_database_and_the_data_volume():
    services = load("docker-compose.cluster.yml", ENV)["services"]
    mains = [services["main-1"], services["main-2"]]
    assert {m["environment"]["DATABASE_URL"] for m in mains} == {"postgresql://agentic:s3cret@agentic-postgres:5432/agentic"}
    assert [m["environment"]["SERVER_ID"] for m in mains] == ["main-1", "main-2"]
    assert all(m["volumes"] == ["agentic-data:/data"] for m in mains)
    assert all("agentic-main-server" in m["environment"]["ALLOWED_HOSTS"].split(",") for m in mains)  # HAProxy passes Host on
    assert services["postgres"]["environment"]["AGENTIC_DB_PASSWORD"] == "s3cret"


def test_haproxy_takes_the_main_servers_place_for_the_clients():
    haproxy = load("docker-compose.cluster.yml", ENV)["services"]["haproxy"]
    assert haproxy["container_name"] == "agentic-main-server"  # the clients' default BACKEND_URL
    assert haproxy["volumes"] == ["./haproxy.cluster.cfg:/etc/agentic/haproxy.cfg:ro"]
    assert haproxy["ports"] == ["127.0.0.1:8000:8000"]


def test_the_database_password_is_required():
    with pytest.raises(KeyError, match="AGENTIC_DB_PASSWORD"):
        load("docker-compose.cluster.yml", {})


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_its_configuration():
    result = subprocess.run(["haproxy", "-c", "-q", "-f", str(CONTAINERS / "haproxy.cluster.cfg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
