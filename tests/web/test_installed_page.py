"""The chat page renders from an installed (non-editable) wheel: templates/ and static/ travel
as data files, found under the install's prefix rather than next to a checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path

import pytest

from tests.e2e.deployment import free_port

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("agentic", "templates", "static", "setup.cfg", "pyproject.toml", "README.md")


def build_wheel(into: Path) -> Path:
    """From a copy of the sources, so the build leaves nothing in the checkout."""
    src = into / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(into / "dist"), str(src)], check=True)
    return next((into / "dist").glob("agentic-*.whl"))


def fresh_venv(path: Path) -> Path:
    """A new venv holding nothing of agentic; the project's dependencies (not agentic, whose
    editable finder is a .pth file there, which Python does not read from an added path) come
    from this interpreter's site-packages through a path file."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "project-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
def test_installed_wheel_renders_the_chat_page(tmp_path):
    wheel = build_wheel(tmp_path / "build")
    python = fresh_venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)], check=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([python, "-c", "import agentic.web.templates as t; print(t.__file__); print(t.ROOT)"],
                           cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert where == [str(next((tmp_path / "venv").rglob("agentic/web/templates.py"))), str(tmp_path / "venv" / "share" / "agentic")]

    port = free_port()
    # No model to load: the page needs none, and the server answers while /health says why.
    server = subprocess.Popen([python, "-m", "agentic", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data")],
                              cwd=tmp_path, env={**env, "MODEL_PATH": str(tmp_path / "none.gguf")}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, html = get(f"http://127.0.0.1:{port}/")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read().decode() if server.poll() is not None else "no answer"
                time.sleep(0.2)
        assert status == 200 and '<script src="/static/chat.js"' in html
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):  # the vendored libraries' subfolders too
            assert get(f"http://127.0.0.1:{port}{asset}")[0] == 200, asset
        assert get(f"http://127.0.0.1:{port}/docs")[0] == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
