"""Forwarding to the main server with aiohttp's client: streamed HTTP both ways and a two-task
WebSocket relay, each on its own connection pool, with bounded waits for a connection."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Mapping

import aiohttp
from aiohttp import ClientResponse, ClientSession, WSMsgType, web
from yarl import URL

from agentic.config import MAX_WS_FRAME_BYTES
from agentic.proxy.binding import save_binding, valid_uuid
from agentic.proxy.limits import CONNECT_WAIT_S, EXCHANGE_TIMEOUT, FORWARD_TIMEOUT, HTTP_POOL, SOCKETS_PER_SESSION, WEBSOCKET_POOL
from agentic.web.errors import ApiError

log = logging.getLogger("agentic.proxy")

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
# `Expect` asks the next hop for an interim answer; the proxy's own server gives it, and the
# main server never sees it (it once made an interim 100 pass for the whole answer).
NEVER_FORWARDED = HOP_BY_HOP | {"expect"}
# The proxy answers for these itself: the browser's cookie and Origin stop here.
NOT_FORWARDED = NEVER_FORWARDED | {"host", "cookie", "origin", "x-session-id", "x-client-id"}
# Replaced, never passed on as sent: a caller cannot claim another address, host or scheme.
SET_BY_PROXY = frozenset({"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})
WS_HANDSHAKE = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"})

# Answers up to this size with a known length are read whole and sent in one write (a backend
# that drops one gives a clean 502); larger ones, and those without a length (server-sent
# events), stream through as they come.
SMALL_BODY = 64 * 1024

UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


def connection_listed(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> frozenset[str]:
    """Header names that a `Connection` header marks as this hop's only (RFC 9110 7.6.1)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return frozenset(token.strip().lower() for name, value in items if name.lower() == "connection" for token in value.split(","))


def forwarded_headers(items: Iterable[tuple[str, str]], peer: str, host: str, scheme: str, session_id: str | None, client_id: str) -> dict[str, str]:
    """The request's own headers as the main server should get them, plus who sent it through which client."""
    items = list(items)
    skip = NOT_FORWARDED | WS_HANDSHAKE | SET_BY_PROXY | connection_listed(items)
    headers = {name: value for name, value in items if name.lower() not in skip}
    prior = next((value for name, value in items if name.lower() == "x-forwarded-for"), None)
    if session_id:
        headers["x-session-id"] = session_id
    headers["x-client-id"] = client_id
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-Proto"] = scheme
    return headers


def copy_answer_headers(upstream: ClientResponse, response: web.StreamResponse, also_skip: frozenset[str] = frozenset()) -> None:
    skip = NEVER_FORWARDED | connection_listed(upstream.headers) | also_skip
    for name, value in upstream.headers.items():
        if name.lower() not in skip:
            response.headers.add(name, value)


def backend_target(target: str) -> str:
    """A request target as the main server should see it: /api/... is the frontend's prefix for the API."""
    return target[4:] if target.startswith("/api/") else target


def upstream_failure(exc: BaseException) -> ApiError:
    """503 when no connection to the main server came free in time, else 502."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ApiError(503, "backend_busy", f"no connection to the main server within {CONNECT_WAIT_S:g} s; try again")
    return backend_unreachable(type(exc).__name__)


def backend_unreachable(detail: str) -> ApiError:
    return ApiError(502, "backend_unreachable", f"the main server cannot be reached: {detail}")


class SocketCap:
    """At most `per_session` relayed WebSockets of one session at once."""

    def __init__(self, per_session: int) -> None:
        self.per_session = per_session
        self._open: Counter[str] = Counter()

    @contextmanager
    def hold(self, session_id: str | None) -> Iterator[None]:
        key = valid_uuid(session_id) or ""  # one spelling per session, so case or spaces cannot widen the cap
        if self._open[key] >= self.per_session:
            raise ApiError(429, "too_many_websockets", f"this session already has {self.per_session} WebSockets open through this client; close one first")
        self._open[key] += 1
        try:
            yield
        finally:
            self._open[key] -= 1
            if not self._open[key]:
                del self._open[key]

    def open_count(self) -> int:
        return sum(self._open.values())


class Forwarder:
    def __init__(self, backend_url: str, client_id: str, sockets_per_session: int = SOCKETS_PER_SESSION) -> None:
        self.backend_url = backend_url.rstrip("/")
        self.client_id = client_id
        self.sockets = SocketCap(sockets_per_session)
        self.http: ClientSession | None = None
        self.websockets: ClientSession | None = None
        self._users = 0

    async def open(self) -> None:
        """Both apps of a client share these pools; the first to start opens them, the last to stop closes them."""
        self._users += 1
        if self.http is not None:
            return
        self.http = self._session(aiohttp.TCPConnector(limit=HTTP_POOL, limit_per_host=HTTP_POOL, keepalive_timeout=30))
        # A relayed socket holds its connection for its whole life: a pool of its own, never reused.
        self.websockets = self._session(aiohttp.TCPConnector(limit=WEBSOCKET_POOL, limit_per_host=WEBSOCKET_POOL, force_close=True))

    @staticmethod
    def _session(connector: aiohttp.TCPConnector) -> ClientSession:
        return ClientSession(connector=connector, timeout=FORWARD_TIMEOUT, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        self._users -= 1
        if self._users == 0 and self.http is not None and self.websockets is not None:
            await self.http.close()
            await self.websockets.close()
            self.http = self.websockets = None

    def url(self, path_qs: str) -> URL:
        return URL(self.backend_url + path_qs, encoded=True)

    def upstream_headers(self, request: web.Request, session_id: str | None) -> dict[str, str]:
        return forwarded_headers(request.headers.items(), request.remote or "", request.host, request.scheme, session_id, self.client_id)

    async def _send(self, request: web.Request, path_qs: str, session_id: str | None, data: Any, timeout: aiohttp.ClientTimeout = FORWARD_TIMEOUT) -> ClientResponse:
        """The main server's answer head; its body is read by the caller."""
        assert self.http is not None
        try:
            return await self.http.request(request.method, self.url(path_qs), headers=self.upstream_headers(request, session_id),
                                           data=data, allow_redirects=False, timeout=timeout)
        except UPSTREAM_ERRORS as exc:
            raise upstream_failure(exc) from None

    async def fetch_json(self, request: web.Request, path_qs: str, session_id: str | None) -> tuple[int, Any]:
        """A small JSON exchange that the proxy needs to read (session listing and creation)."""
        body = await request.read() if request.body_exists else None
        async with await self._send(request, path_qs, session_id, body, EXCHANGE_TIMEOUT) as upstream:
            try:
                payload = await upstream.read()
            except UPSTREAM_ERRORS as exc:
                raise upstream_failure(exc) from None
        try:
            return upstream.status, json.loads(payload)
        except ValueError:
            raise backend_unreachable(f"answered {upstream.status} with a non-JSON body") from None

    async def forward(self, request: web.Request, path_qs: str, session_id: str | None) -> web.StreamResponse:
        """Stream the request to the backend and its response back, as they come."""
        data = request.content if request.body_exists else None
        async with await self._send(request, path_qs, session_id, data) as upstream:
            if upstream.content_length is not None and upstream.content_length <= SMALL_BODY and request.method != "HEAD":
                return await _answer_whole(request, upstream)
            return await _answer_streamed(request, upstream)

    async def relay_websocket(self, request: web.Request, path_qs: str, session_id: str | None) -> web.StreamResponse:
        assert self.websockets is not None
        with self.sockets.hold(session_id):
            try:
                # The main server's frames are its own and unbounded here; the browser's are bounded below.
                upstream = await self.websockets.ws_connect(self.url(path_qs), headers=self.upstream_headers(request, session_id), autoping=False, max_msg_size=0)
            except aiohttp.WSServerHandshakeError as exc:
                raise ApiError(exc.status if exc.status >= 400 else 502, "upstream_refused", f"the main server refused the WebSocket ({exc.status})") from None
            except UPSTREAM_ERRORS as exc:
                raise upstream_failure(exc) from None
            browser = web.WebSocketResponse(autoping=False, max_msg_size=MAX_WS_FRAME_BYTES)
            await save_binding(request, browser)
            await browser.prepare(request)
            await _relay(browser, upstream)
            return browser


async def _answer_whole(request: web.Request, upstream: ClientResponse) -> web.Response:
    # Most answers are small JSON: one read and one write cost less than a stream.
    try:
        body = await upstream.read()
    except UPSTREAM_ERRORS:
        log.warning("backend dropped its answer on %s", request.path)
        raise backend_unreachable("it dropped its answer") from None
    response = web.Response(status=upstream.status, reason=upstream.reason, body=body)
    copy_answer_headers(upstream, response, frozenset({"content-length"}))  # the Response sets its own
    return response


async def _answer_streamed(request: web.Request, upstream: ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    copy_answer_headers(upstream, response)
    await save_binding(request, response)
    await response.prepare(request)
    try:
        async for piece in upstream.content.iter_any():
            await response.write(piece)
    except UPSTREAM_ERRORS:
        # The head is out: the caller can only learn of it from a cut connection.
        log.warning("backend dropped a response mid-stream on %s", request.path)
        raise ConnectionResetError("the main server dropped its answer mid-stream") from None
    await response.write_eof()
    return response


async def _relay(browser: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until either side closes; each side gets the other's close code."""
    to_backend = asyncio.create_task(_pipe(browser, upstream))
    to_browser = asyncio.create_task(_pipe(upstream, browser))
    try:
        await asyncio.wait({to_backend, to_browser}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_backend, to_browser):
            task.cancel()
        await asyncio.gather(to_backend, to_browser, return_exceptions=True)
        if upstream.close_code in (None, aiohttp.WSCloseCode.ABNORMAL_CLOSURE) and not browser.closed:
            # The main server died (or its balancer dropped it): a reply being generated ends
            # here, and the page learns so; behind a balancer, another server takes the session.
            await _send_quietly(browser, {"type": "error", "code": "backend_unreachable",
                                          "message": "the main server went away; reconnect and send the message again"})
        code = upstream.close_code or browser.close_code or aiohttp.WSCloseCode.GOING_AWAY
        await upstream.close(code=browser.close_code or aiohttp.WSCloseCode.GOING_AWAY)
        await browser.close(code=code)


async def _send_quietly(browser: web.WebSocketResponse, frame: dict[str, Any]) -> None:
    try:
        await browser.send_json(frame)
    except ConnectionError:
        pass


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
