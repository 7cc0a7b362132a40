"""Health, metrics, docs and the OpenAPI document."""

from aiohttp import WSCloseCode

from tests.conftest import new_session


async def test_health_says_loading_without_a_model(client):
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "loading"
    assert {"model", "gpu_offload", "sessions", "uptime_s"} <= set(body)


async def test_health_ok_with_model(model_client):
    resp = await model_client.get("/health")
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok"
    assert body["gpu_offload"] in (True, False) and "smollm2" in body["model"].lower()


async def test_metrics_are_prometheus_text(client):
    await new_session(client)
    await client.get("/sessions/nope")
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert "agentic_sessions_active 1.0" in text
    assert "agentic_sessions_created_total 1.0" in text
    assert 'agentic_http_requests_total{method="POST",route="/sessions",status="201"} 1.0' in text
    assert 'route="/sessions/{session_id}",status="400"' in text
    assert "agentic_http_request_seconds_bucket" in text
    assert "agentic_websockets_connected" in text


async def test_openapi_lists_every_registered_route(client):
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    registered = set()
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None or info.get("prefix") == "/static":
            continue
        registered.add((path, route.method))
    assert registered - documented == set(), "routes missing from /openapi.json"
    assert documented - registered == set(), "documented routes that do not exist"


async def test_docs_page_is_self_contained(client):
    resp = await client.get("/docs")
    html = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "/sessions/{session_id}/messages" in html and "WebSocket" in html
    assert "http://" not in html.replace('href="/openapi.json"', "") and "https://" not in html  # no CDN
    css = await client.get("/static/docs.css")
    assert css.status == 200


async def test_websockets_are_closed_with_going_away_on_shutdown(aiohttp_client, tmp_path):
    from agentic import keys
    from agentic.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path / "d"))
    client = await aiohttp_client(app)
    ws = await client.ws_connect("/ws")
    first = await ws.receive_json()
    assert first["type"] == "session"
    assert len(app[keys.websockets_key]) == 1
    await client.server.close()
    msg = await ws.receive()
    assert ws.close_code == WSCloseCode.GOING_AWAY or msg.data == WSCloseCode.GOING_AWAY
