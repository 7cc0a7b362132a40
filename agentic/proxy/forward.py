"""Forwarding to the main server: streamed HTTP both ways and a two-task WebSocket relay."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Iterable

import aiohttp
from aiohttp import ClientSession, WSMsgType, web
from aiohttp_session import SESSION_KEY, STORAGE_KEY
from yarl import URL

from agentic.web.errors import ApiError
from agentic.proxy.keepalive import BROKEN_ANSWER, Answer, KeepAlivePool, UpstreamFailed

log = logging.getLogger("agentic.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# The proxy answers for these itself: the browser's cookie and Origin stop here.
NOT_FORWARDED = HOP_BY_HOP | {"host", "cookie", "origin", "x-session-id", "x-client-id"}
# Replaced, never passed on as sent: a caller cannot claim another address, host or scheme.
SET_BY_PROXY = frozenset({"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"})


# Answers up to this size with a known length are sent in one write; larger ones, and
# those without a length (server-sent events), stream through as they come.
SMALL_BODY = 64 * 1024


def fits_one_write(answer: Answer) -> bool:
    return answer.length is not None and answer.length <= SMALL_BODY


def _copy_headers(headers: Any, response: web.StreamResponse, skip: frozenset[str]) -> None:
    for name, value in headers.items():
        if name.lower() not in skip:
            response.headers.add(name, value)


def forwarded_headers(items: Iterable[tuple[str, str]], peer: str, host: str, scheme: str, session_id: str | None, client_id: str) -> dict[str, str]:
    """The request's own headers as the main server should get them, plus who sent it through which client."""
    headers: dict[str, str] = {}
    prior = None
    for name, value in items:
        lower = name.lower()
        if lower == "x-forwarded-for":
            prior = value
        elif lower not in NOT_FORWARDED and lower not in WS_HANDSHAKE and lower not in SET_BY_PROXY:
            headers[name] = value
    if session_id:
        headers["x-session-id"] = session_id
    headers["x-client-id"] = client_id
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-Proto"] = scheme
    return headers


def backend_target(target: str) -> str:
    """A request target as the main server should see it: /api/... is the frontend's prefix for the API."""
    return target[4:] if target.startswith("/api/") else target


def unreachable_message(detail: str) -> str:
    return f"the main server cannot be reached: {detail}"


def backend_unreachable(detail: str) -> ApiError:
    return ApiError(502, "backend_unreachable", unreachable_message(detail))


async def save_cookie_binding(request: web.Request, response: web.StreamResponse) -> None:
    """aiohttp-session saves only plain Responses; streamed ones are saved here, before prepare."""
    session = request.get(SESSION_KEY)
    if session is not None and session._changed:
        await request[STORAGE_KEY].save_session(request, response, session)


class Forwarder:
    def __init__(self, backend_url: str, client_id: str) -> None:
        self.backend_url = backend_url.rstrip("/")
        self.client_id = client_id
        self.http: ClientSession | None = None
        self.lean: KeepAlivePool | None = None
        self.fast_path_requests = 0  # relayed by agentic/proxy/fastpath.py, reported on /health
        self._users = 0

    async def open(self) -> None:
        """Both apps of a client share this pool; the first to start opens it, the last to stop closes it."""
        self._users += 1
        if self.http is not None:
            return
        connector = aiohttp.TCPConnector(limit=256, limit_per_host=256, keepalive_timeout=30)
        # No total timeout: streams (SSE, long replies) last as long as they last.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        self.http = ClientSession(connector=connector, timeout=timeout, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        backend = URL(self.backend_url)
        if backend.scheme == "http" and backend.host:
            self.lean = KeepAlivePool(backend.host, backend.port or 80)

    async def close(self) -> None:
        self._users -= 1
        if self._users == 0 and self.http is not None:
            await self.http.close()
            self.http = None
            if self.lean is not None:
                self.lean.close()
                self.lean = None

    def url(self, path_qs: str) -> URL:
        return URL(self.backend_url + path_qs, encoded=True)

    def upstream_headers(self, request: web.Request, session_id: str | None) -> dict[str, str]:
        return forwarded_headers(request.headers.items(), request.remote or "", request.host, request.scheme, session_id, self.client_id)

    async def fetch_json(self, request: web.Request, path_qs: str, session_id: str | None) -> tuple[int, Any]:
        """A small JSON exchange that the proxy needs to read (session listing and creation)."""
        assert self.http is not None
        body = await request.read() if request.body_exists else None
        try:
            async with self.http.request(request.method, self.url(path_qs), headers=self.upstream_headers(request, session_id), data=body, allow_redirects=False) as upstream:
                payload = await upstream.read()
                try:
                    return upstream.status, json.loads(payload)
                except ValueError:
                    raise backend_unreachable(f"answered {upstream.status} with a non-JSON body") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise backend_unreachable(type(exc).__name__) from None

    async def forward(self, request: web.Request, path_qs: str, session_id: str | None) -> web.StreamResponse:
        """Stream the request to the backend and its response back, as they come."""
        assert self.http is not None
        if self.lean is not None and request.method in ("GET", "HEAD") and not request.body_exists:
            return await self._forward_bodyless(request, path_qs, session_id)
        data = request.content if request.body_exists else None
        try:
            upstream_cm = self.http.request(request.method, self.url(path_qs), headers=self.upstream_headers(request, session_id), data=data, allow_redirects=False)
            upstream = await upstream_cm.__aenter__()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise backend_unreachable(type(exc).__name__) from None
        try:
            return await self._answer(request, Answer(upstream.status, upstream.reason or "", upstream.headers, upstream.content.iter_any(), upstream.content_length))
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
            log.warning("backend dropped a response mid-stream on %s", request.path)
            raise
        finally:
            await upstream_cm.__aexit__(None, None, None)

    async def _forward_bodyless(self, request: web.Request, path_qs: str, session_id: str | None) -> web.StreamResponse:
        assert self.lean is not None
        try:
            answer = await self.lean.request(request.method, path_qs, self.upstream_headers(request, session_id))
        except UpstreamFailed as exc:
            raise backend_unreachable(str(exc)) from None
        try:
            return await self._answer(request, answer)
        except BROKEN_ANSWER:
            log.warning("backend dropped or garbled a response on %s", request.path)
            raise backend_unreachable("it dropped its answer") from None
        finally:
            await answer.body.aclose()
            answer.discard()

    async def _answer(self, request: web.Request, answer: Answer) -> web.StreamResponse:
        if fits_one_write(answer) and request.method != "HEAD":
            # Most answers are small JSON: one read and one write cost less than a stream.
            response = web.Response(status=answer.status, reason=answer.reason, body=b"".join([piece async for piece in answer.body]))
            _copy_headers(answer.headers, response, HOP_BY_HOP | {"content-length"})  # the Response sets its own
            await save_cookie_binding(request, response)
            return response
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        _copy_headers(answer.headers, response, HOP_BY_HOP)
        await save_cookie_binding(request, response)
        await response.prepare(request)
        async for piece in answer.body:
            await response.write(piece)
        await response.write_eof()
        return response

    async def relay_websocket(self, request: web.Request, path_qs: str, session_id: str | None) -> web.StreamResponse:
        assert self.http is not None
        headers = self.upstream_headers(request, session_id)
        try:
            upstream = await self.http.ws_connect(self.url(path_qs), headers=headers, autoping=False, max_msg_size=0)
        except aiohttp.WSServerHandshakeError as exc:
            raise ApiError(exc.status if exc.status >= 400 else 502, "upstream_refused", f"the main server refused the WebSocket ({exc.status})") from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise backend_unreachable(type(exc).__name__) from None
        browser = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await save_cookie_binding(request, browser)
        await browser.prepare(request)
        to_backend = asyncio.create_task(_pipe(browser, upstream))
        to_browser = asyncio.create_task(_pipe(upstream, browser))
        try:
            await asyncio.wait({to_backend, to_browser}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (to_backend, to_browser):
                task.cancel()
            await asyncio.gather(to_backend, to_browser, return_exceptions=True)
            code = upstream.close_code or browser.close_code or aiohttp.WSCloseCode.GOING_AWAY
            await upstream.close(code=browser.close_code or aiohttp.WSCloseCode.GOING_AWAY)
            await browser.close(code=code)
        return browser


async def _pipe(source: Any, sink: Any) -> None:
    """Copy frames one way until `source` closes; pings and pongs pass through."""
    async for msg in source:
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type == WSMsgType.PING:
            await sink.ping(msg.data)
        elif msg.type == WSMsgType.PONG:
            await sink.pong(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            break
