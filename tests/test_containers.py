"""The container files, checked by parsing and by the compose tools' own `config` where they exist.
Real containers: tests/containers/test_containers_e2e.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

CONTAINERS = Path(__file__).resolve().parents[1] / "containers"
VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])((?:[^{}]|\$\{[^}]*\})*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} rules, enough for our files."""
    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value else interpolate(arg, env)
        if op in (":?", "?"):
            if not value:
                raise KeyError(f"{name}: {arg}")
            return value
        return value or ""
    return VAR.sub(one, text)


def load(name: str, env: dict[str, str]) -> dict:
    doc = yaml.safe_load(interpolate((CONTAINERS / name).read_text(), env))
    for service in doc["services"].values():  # compose passes values as strings; a key without one comes from the caller's environment
        service["environment"] = {k: env.get(k, "") if v is None else str(v) for k, v in service.get("environment", {}).items()}
    return doc


def client_env(n: int) -> dict[str, str]:
    # what deploy.sh passes
    return {"CLIENT_NUMBER": str(n), "FRONTEND_PORT": str(8500 + n), "PROXY_PORT": str(8000 + n)}


@pytest.mark.parametrize("n", [2, 3, 10, 42])
def test_client_compose_ports_names_and_env(n):
    doc = load("docker-compose.client-server.yml", client_env(n))
    service = doc["services"]["backend-proxy"]
    assert service["container_name"] == f"agentic-backend-proxy-{n}"
    assert service["ports"] == [f"127.0.0.1:{8500 + n}:{8500 + n}", f"127.0.0.1:{8000 + n}:{8000 + n}"]
    env = service["environment"]
    assert env["CLIENT_ID"] == "" and env["CLIENT_NUMBER"] == str(n)  # empty: the app names it client-N
    assert env["BACKEND_URL"] == "http://agentic-main-server:8000" and env["SESSION_TIMEOUT"] == "60"
    assert service["restart"] == "unless-stopped" and "healthcheck" in service
    assert doc["networks"]["agentic"]["external"] is True
    assert "deploy" not in service  # clients reserve no GPU


def test_client_compose_passes_overrides_through():
    env = {**client_env(2), "BACKEND_URL": "http://10.0.0.5:8000", "CLIENT_ID": "qa", "SESSION_TIMEOUT": "5"}
    service = load("docker-compose.client-server.yml", env)["services"]["backend-proxy"]
    assert service["environment"]["BACKEND_URL"] == "http://10.0.0.5:8000"
    assert service["environment"]["CLIENT_ID"] == "qa" and service["environment"]["SESSION_TIMEOUT"] == "5"


def test_client_compose_refuses_to_run_without_a_number():
    with pytest.raises(KeyError):
        load("docker-compose.client-server.yml", {})


def test_main_compose_gpu_reservation_volume_and_health():
    doc = load("docker-compose.main-server-gpu.yml", {})
    service = doc["services"]["main-server"]
    assert service["ports"] == ["127.0.0.1:8000:8000"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert service["volumes"] == ["agentic-data:/data"] and "agentic-data" in doc["volumes"]
    assert service["environment"]["SESSION_TIMEOUT"] == "60"
    assert "/health" in service["healthcheck"]["test"][-1]
    assert service["container_name"] == "agentic-main-server"
    assert doc["networks"]["agentic"] == {"name": "agentic", "external": True}  # deploy.sh makes it, clients share it
    dockerfile = (CONTAINERS / "Dockerfile.main-gpu").read_text()
    assert "-DGGML_CUDA=on" in dockerfile


def test_cpu_variant_has_no_gpu_reservation():
    service = load("docker-compose.main-server-cpu.yml", {})["services"]["main-server"]
    assert "deploy" not in service and service["volumes"] == ["agentic-data:/data"]


def test_images_run_as_a_user_and_bind_all_interfaces_inside_only():
    for name in ("Dockerfile.main-gpu", "Dockerfile.main-cpu", "Dockerfile.client"):
        text = (CONTAINERS / name).read_text()
        assert "USER agentic" in text and "HOST=0.0.0.0" in text, name


def test_main_port_and_published_address_follow_deploy_sh():
    service = load("docker-compose.main-server-cpu.yml", {"MAIN_PORT": "18000", "PUBLISH_HOST": "0.0.0.0"})["services"]["main-server"]
    assert service["ports"] == ["0.0.0.0:18000:8000"]
    assert service["environment"]["ALLOWED_HOSTS"].split(",")[0] == "agentic-main-server"  # the clients' Host header


@pytest.mark.parametrize("dockerfile", ["Dockerfile.main-cpu", "Dockerfile.main-gpu"])
def test_llama_cpp_layer_comes_before_the_code_and_is_portable(dockerfile):
    lines = (CONTAINERS / dockerfile).read_text().splitlines()
    llama = next(i for i, line in enumerate(lines) if "llama-wheel \"$LLAMA_CPP_VERSION\"" in line)
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY") and ("setup.cfg" in line or "agentic" in line)]
    assert copies and llama < min(copies), "a code or dependency change would recompile llama.cpp"
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "-DGGML_NATIVE=OFF" in text and "march=native" not in text


def test_requirements_split_keeps_the_engine_and_metrics_out_of_the_client():
    from containers.requirements import requirement_name, requirements

    setup_cfg = CONTAINERS.parent / "setup.cfg"
    main = {requirement_name(r) for r in requirements(setup_cfg, "main")}
    client = {requirement_name(r) for r in requirements(setup_cfg, "client")}
    assert "llama-cpp-python" not in main and {"prometheus-client", "aiohttp"} <= main
    assert client and client < main and not client & {"llama-cpp-python", "prometheus-client", "pypdf"}
    with pytest.raises(ValueError):
        requirements(setup_cfg, "gpu")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_files():
    # podman-compose 1.0 has no `config`; the container e2e test runs these files under it
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker compose plugin not installed")
    for name, env in (("docker-compose.main-server-gpu.yml", {}), ("docker-compose.main-server-cpu.yml", {}),
                      ("docker-compose.client-server.yml", client_env(2))):
        result = subprocess.run(["docker", "compose", "-f", str(CONTAINERS / name), "config", "-q"], env={**env, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
