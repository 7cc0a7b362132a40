"""Client proxies served the way `python -m agentic client N` serves them: fast path first."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from agentic.config import ClientSettings
from agentic.proxy.app import create_client_apps
from agentic.proxy.fastpath import ProxyRunner


class ProxyTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return ProxyRunner(self.app, **kwargs)


def client_settings(tmp_path, backend_url: str, number: int = 2) -> ClientSettings:
    return ClientSettings(number=number, backend_url=backend_url, client_id=f"client-{number}", data_dir=tmp_path / "client")


async def serve_proxy(aiohttp_client, tmp_path, backend_url: str):
    """A test client of client 2's proxy port in front of `backend_url`."""
    proxy_app, _ = create_client_apps(client_settings(tmp_path, backend_url.rstrip("/")))
    return await aiohttp_client(ProxyTestServer(proxy_app))
