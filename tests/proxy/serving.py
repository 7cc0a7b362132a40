"""Client proxies served the way `python -m agentic client N` serves them: in process on real
sockets, or as that very command in front of `python -m agentic serve`."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiohttp.test_utils import TestServer

from agentic.config import ClientSettings
from agentic.proxy.app import create_client_apps
from agentic.proxy.run import runner_options
from tests.e2e.deployment import ROOT, free_port, port_free


def client_settings(tmp_path, backend_url: str, number: int = 2) -> ClientSettings:
    return ClientSettings(number=number, backend_url=backend_url, client_id=f"client-{number}", data_dir=tmp_path / "client")


async def serve_proxy(aiohttp_client, tmp_path, backend_url: str, **options):
    """A test client of client 2's proxy port in front of `backend_url`."""
    proxy_app, _ = create_client_apps(client_settings(tmp_path, backend_url.rstrip("/")))
    return await aiohttp_client(TestServer(proxy_app, **{**runner_options(), **options}))


class Served:
    """A command of this package in its own process, up once its /health answers."""

    def __init__(self, args: list[str], port: int, data_dir: Path, name: str, **env: str) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log = open(data_dir / f"{name}.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "agentic", *args], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "DATA_DIR": str(data_dir), "LOG_FORMAT": "plain", **env})
        self._wait_ready()

    @classmethod
    def main(cls, data_dir: Path, **env: str) -> "Served":
        port = free_port()
        return cls(["serve", "--port", str(port)], port, data_dir, "main", **env)

    @classmethod
    def client(cls, data_dir: Path, backend_url: str, **env: str) -> "Served":
        """Client N on a number whose two ports (8000+N, 8500+N) are free."""
        number = random.choice([n for n in range(20, 100) if port_free(8000 + n) and port_free(8500 + n)])
        return cls(["client", str(number), "--backend-url", backend_url], 8000 + number, data_dir, f"client-{number}", **env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.proc.args} exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"{self.proc.args} did not answer /health within {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def status_kb(self, field: str) -> int:
        """A memory figure of the process from /proc (VmRSS, VmHWM), in kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.proc.pid}/status")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
