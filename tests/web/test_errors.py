"""The error middleware: every error a JSON body, and nothing written once a response has started."""

from __future__ import annotations

import aiohttp
from aiohttp import WSMsgType, web

from agentic.web.errors import error_middleware
from tests.conftest import assert_error


def failing_app() -> web.Application:
    async def before_any_answer(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def after_upgrade(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        raise RuntimeError("boom after the upgrade")

    async def mid_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"first part\n")
        raise RuntimeError("boom mid-stream")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/plain", before_any_answer)
    app.router.add_get("/ws", after_upgrade)
    app.router.add_get("/stream", mid_stream)
    return app


async def test_an_error_before_the_answer_is_a_json_500(aiohttp_client):
    client = await aiohttp_client(failing_app())
    resp = await client.get("/plain")
    assert resp.status == 500
    assert_error(await resp.json(), "internal_error")
    assert "boom" not in await resp.text()


async def test_no_http_answer_inside_an_upgraded_websocket(aiohttp_client):
    client = await aiohttp_client(failing_app())
    ws = await client.ws_connect("/ws")
    assert (await ws.receive()).data == "hello"
    closing = await ws.receive()
    # An HTTP 500 head written into the stream reads as a protocol error (1002) or garbage frames.
    assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), closing
    assert ws.close_code != 1002


async def test_no_second_answer_inside_a_started_stream(aiohttp_client):
    client = await aiohttp_client(failing_app())
    resp = await client.get("/stream")
    assert resp.status == 200
    try:
        body = await resp.read()
    except aiohttp.ClientPayloadError:
        body = b""  # the connection was cut: that is the only honest answer left
    assert b"HTTP/1.1" not in body and b"internal_error" not in body
