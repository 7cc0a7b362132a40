"""Real processes, started by deploy.sh exactly as a user starts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = str(ROOT / "deploy.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def http(method: str, url: str, body: object | None = None, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Deployment:
    """A main server (and clients) under one data dir, driven through deploy.sh --native."""

    def __init__(self, data_dir: Path, port: int, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port
        self.env = {**os.environ, "DATA_DIR": str(data_dir), "PORT": str(port), "BACKEND_URL": f"http://127.0.0.1:{port}",
                    "LOG_FORMAT": "plain", "N_PARALLEL": "4", "CTX_PER_SESSION": "1024", **env}

    @classmethod
    def main_with_clients(cls, data_dir: Path, clients: Sequence[int]) -> "Deployment":
        """A main server on a free port and clients N on their own ports (8000+N, 8500+N), which must be free."""
        busy = [p for n in clients for p in (8000 + n, 8500 + n) if not port_free(p)]
        if busy:
            raise AssertionError(f"ports {busy} are in use: stop what uses them (./deploy.sh stop all) before running these tests")
        deployment = cls(data_dir, free_port())
        try:
            deployment.deploy("main")
            for n in clients:
                deployment.deploy("client", str(n))
        except BaseException:  # nothing of a half-started deployment stays running
            deployment.stop_all()
            raise
        return deployment

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        result = subprocess.run([DEPLOY, *args, "--native"], env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"deploy.sh {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def pid(self, name: str = "main") -> int:
        return int((self.data_dir / "run" / f"{name}.pid").read_text())

    def kill9(self, name: str = "main") -> None:
        self.kill(signal.SIGKILL, name)

    def kill(self, sig: int, name: str = "main") -> None:
        """Send a signal and wait (up to 10 s) for the process to be gone."""
        pid = self.pid(name)
        os.kill(pid, sig)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"{name} (pid {pid}) did not exit after signal {sig}")

    def stop_all(self) -> None:
        self.deploy("stop", "all", check=False)
