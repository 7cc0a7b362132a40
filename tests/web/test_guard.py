"""Host and Origin rules: DNS-rebinding pairs and hostile pages refused on both servers, against
real sockets (the aiohttp test server); malformed values are 4xx, never 500."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from agentic.app import create_app
from agentic.config import ClientSettings
from agentic.proxy.app import create_client_apps
from agentic.web.guard import HostPort, allowed_host_names, host_allowed, parse_host, parse_origin
from tests.conftest import assert_error, make_settings, new_session

REBINDING = [
    ("evil.example:8000", "http://evil.example:8000"),
    ("evil.example", "http://evil.example"),
    ("localhost.evil.example:8000", "http://localhost.evil.example:8000"),
    ("127.0.0.1.evil.example", "http://127.0.0.1.evil.example"),
]
MALFORMED_HOSTS = ["127.0.0.1:8077.evil.example", "[::1", "[::1]x", "local host", "127.0.0.1:99999", "[evil]:80", "a@b"]
MALFORMED_ORIGINS = ["http://127.0.0.1:8077.evil.example", "http://[::1", "null", "file://", "http://", "ws://127.0.0.1", "http://a b"]


@pytest.mark.parametrize("raw, parsed", [
    ("localhost", HostPort("localhost", None)),
    ("LocalHost:8000", HostPort("localhost", 8000)),
    ("[::1]:8501", HostPort("[::1]", 8501)),
    ("example.com.", HostPort("example.com", None)),
    *[(bad, None) for bad in MALFORMED_HOSTS],
])
def test_parse_host(raw, parsed):
    assert parse_host(raw) == parsed


def test_parse_origin():
    assert parse_origin("http://127.0.0.1:8000") == ("http", HostPort("127.0.0.1", 8000))
    assert parse_origin("https://Chat.Example/") == ("https", HostPort("chat.example", None))
    for bad in MALFORMED_ORIGINS:
        assert parse_origin(bad) is None, bad


def test_allowed_names_and_ip_addresses():
    allowed = allowed_host_names("0.0.0.0", ["chat.example.com:8000", " team-box ", ""])
    assert {"localhost", "127.0.0.1", "[::1]", "chat.example.com", "team-box"} <= allowed
    for ok in ("localhost:8000", "chat.example.com", "team-box:8501", "192.168.1.20:8000", "[fe80::1]:8000", None):
        assert host_allowed(ok, allowed), ok
    for refused in ("evil.example", "chat.example.com.evil.example", "team-box.evil", *MALFORMED_HOSTS):
        assert not host_allowed(refused, allowed), refused
    assert "[::1]" in allowed_host_names("::1") and "myhost.lan" in allowed_host_names("myhost.lan")
    assert host_allowed("anything.example", allowed_host_names("127.0.0.1", ["*"]))


@pytest.fixture
async def main(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "data", allowed_hosts=("chat.example",), allowed_origins=("https://app.example",))
    return await aiohttp_client(create_app(settings))


@pytest.mark.parametrize("host, origin", REBINDING)
async def test_rebinding_pairs_are_refused_on_the_main_server(main, host, origin):
    headers = {"Host": host, "Origin": origin}
    for method, path in (("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/health"), ("GET", "/")):
        resp = await main.request(method, path, headers=headers)
        assert resp.status == 421, (method, path)
        assert_error(await resp.json(), "host_not_allowed")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await main.ws_connect("/ws", headers=headers)
    assert refused.value.status == 421
    assert (await (await main.get("/sessions")).json())["stats"]["total_created"] == 0


async def test_allowed_hosts_answer(main):
    for host in ("localhost:1234", "127.0.0.1", "[::1]:8000", "10.1.2.3:8000", "chat.example", "CHAT.example:443"):
        resp = await main.get("/sessions", headers={"Host": host})
        assert resp.status == 200, host


@pytest.mark.parametrize("host", MALFORMED_HOSTS + ["caf\u00e9.example"])
async def test_malformed_host_is_421(main, host):
    resp = await main.get("/health", headers={"Host": host})
    assert resp.status == 421
    assert_error(await resp.json(), "host_not_allowed")


async def test_state_changing_requests_check_origin(main):
    sid = (await new_session(main))["session_id"]
    own = f"http://{main.server.host}:{main.server.port}"
    hostile = ["http://evil.example", "http://localhost:1", *MALFORMED_ORIGINS]
    calls = [("POST", "/sessions"), ("PATCH", f"/sessions/{sid}"), ("POST", f"/sessions/{sid}/clear"), ("DELETE", f"/sessions/{sid}")]
    for origin in hostile:
        for method, path in calls:
            resp = await main.request(method, path, json={"title": "x"} if method == "PATCH" else None, headers={"Origin": origin})
            assert resp.status == 403, (origin, method, path)
            assert_error(await resp.json(), "origin_refused")
        resp = await main.get(f"/sessions/{sid}", headers={"Origin": origin})
        assert resp.status == 200  # reads are the browser's business (no CORS headers are sent)
    assert (await main.get(f"/sessions/{sid}")).status == 200  # nothing was deleted
    for origin in (own, "https://app.example", None):
        resp = await main.patch(f"/sessions/{sid}", json={"title": "ok"}, headers={} if origin is None else {"Origin": origin})
        assert resp.status == 200, origin


async def test_websocket_origin_is_checked_before_the_upgrade(main):
    for origin in ("http://evil.example", "http://127.0.0.1:8077.evil.example", "http://[::1"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await main.ws_connect("/ws", headers={"Origin": origin})
        assert refused.value.status == 403


async def test_proxy_refuses_foreign_hosts(aiohttp_client, aiohttp_server, tmp_path):
    backend = await aiohttp_server(create_app(make_settings(tmp_path / "main")))
    settings = ClientSettings(number=3, backend_url=str(backend.make_url("")).rstrip("/"), data_dir=tmp_path / "client", allowed_hosts=("team-box",))
    proxy_app, frontend_app = create_client_apps(settings)
    for app, path in ((proxy_app, "/health"), (frontend_app, "/")):
        client = await aiohttp_client(TestServer(app))
        for host, _ in REBINDING:
            resp = await client.get(path, headers={"Host": host})
            assert resp.status == 421, (path, host)
            assert_error(await resp.json(), "host_not_allowed")
        for host in ("localhost:8503", "team-box:8503", "127.0.0.1"):
            assert (await client.get(path, headers={"Host": host})).status == 200, (path, host)


async def test_proxy_refuses_malformed_origins_with_403(aiohttp_client, aiohttp_server, tmp_path):
    backend = await aiohttp_server(create_app(make_settings(tmp_path / "main")))
    settings = ClientSettings(number=3, backend_url=str(backend.make_url("")).rstrip("/"), data_dir=tmp_path / "client")
    proxy = await aiohttp_client(TestServer(create_client_apps(settings)[0]))
    for origin in MALFORMED_ORIGINS + ["http://evil.example:8503"]:
        for method, path in (("POST", "/sessions"), ("DELETE", "/sessions/x")):
            resp = await proxy.request(method, path, headers={"Origin": origin})
            assert resp.status == 403, (origin, method)
            assert_error(await resp.json(), "origin_refused")
    own_page = f"http://{proxy.server.host}:8503"  # client 3's frontend port on the same host
    assert (await proxy.post("/sessions", headers={"Origin": own_page})).status == 201
