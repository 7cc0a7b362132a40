"""The proxy port's fast path: a GET that names its session skips aiohttp's server.

Measured here: aiohttp's server machinery costs about 0.35 ms of Python per request, as much
as the main server's whole answer, which kept a proxied GET at 1.5-2x a direct one even
with nothing else in the way. A request that is a bodyless HTTP/1.1 GET or HEAD, names its
session in `x-session-id` and asks for a route the proxy only forwards is relayed here over
the keep-alive pool. Everything else (cookies instead of a session header, bodies,
WebSockets, the proxy's own routes, anything unusual in the head) hands the connection, with
every byte read so far, to aiohttp for good, so aiohttp's own parser judges it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Iterable, cast

from aiohttp import web

from agentic.web.errors import error_body
from agentic.proxy.app import forwarder_key
from agentic.proxy.forward import HOP_BY_HOP, Forwarder, backend_target, fits_one_write, forwarded_headers, unreachable_message
from agentic.proxy.keepalive import BROKEN_ANSWER, Answer, UpstreamFailed, bodyless

log = logging.getLogger("agentic.proxy")

MAX_HEAD = 16 * 1024
IDLE_TIMEOUT = 75.0  # what aiohttp gives an idle keep-alive connection
OWN_ROUTES = frozenset({"/health", "/sessions", "/ws"})
# A request carrying any of these has a body, wants an upgrade or a 100-continue: aiohttp's.
HANDED_OFF_HEADERS = frozenset({"content-length", "transfer-encoding", "upgrade", "expect"})
REQUEST_LINE = re.compile(r"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.1")
# Every header a token, a colon and visible ASCII: no obs-fold, no stray CR or LF, no NUL.
HEADER_LINES = re.compile(r"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*)*")


@dataclass
class FastRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]
    host: str
    session_id: str
    keep_alive: bool


def fast_request(head: bytes) -> FastRequest | None:
    """The request in `head` (without its blank line) when the fast path may relay it, else None."""
    text = head.decode("latin-1")  # the patterns below let only ASCII through
    line_end = text.find("\r\n")
    line_end = len(text) if line_end < 0 else line_end
    request_line = REQUEST_LINE.fullmatch(text, 0, line_end)
    if request_line is None or not HEADER_LINES.fullmatch(text, line_end) or not _plain_target(request_line[2]):
        return None
    headers = [(name, value.strip(" \t")) for name, _, value in (line.partition(":") for line in text[line_end + 2:].split("\r\n") if line)]
    names = [name.lower() for name, _ in headers]
    if HANDED_OFF_HEADERS.intersection(names) or names.count("host") != 1 or names.count("x-session-id") != 1:
        return None
    found = {name.lower(): value for name, value in headers}
    if not found["x-session-id"]:
        return None
    keep_alive = "close" not in found.get("connection", "").lower()
    return FastRequest(request_line[1], request_line[2], headers, found["host"], found["x-session-id"], keep_alive)


def _plain_target(target: str) -> bool:
    """A target whose path routes the same before and after aiohttp normalises it, and is only forwarded."""
    path = target.split("?", 1)[0]
    if "%" in path or "//" in path or path in OWN_ROUTES:
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


class FastPathServer:
    """aiohttp's server for the proxy port, with a fast path in front of each connection."""

    def __init__(self, wrapped: web.Server, forwarder: Forwarder) -> None:
        self.wrapped = wrapped
        self.forwarder = forwarder
        self.connections: set[FastPathProtocol] = set()

    def __call__(self) -> asyncio.Protocol:
        return FastPathProtocol(self)

    def pre_shutdown(self) -> None:
        self.wrapped.pre_shutdown()
        for conn in list(self.connections):
            conn.close_when_idle()

    async def shutdown(self, timeout: float | None = None) -> None:
        tasks = [conn.task for conn in self.connections if conn.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in list(self.connections):
            conn.abort()
        await self.wrapped.shutdown(timeout)


class FastPathProtocol(asyncio.Protocol):
    """One connection: relays fast requests in order until one is not, then hands over to aiohttp."""

    def __init__(self, server: FastPathServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.buffer = bytearray()
        self._more = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._reading_paused = False
        self._lost = False
        self._idle = True
        self._closing = False

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.server.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_HEAD and not self._reading_paused and self.transport is not None:
            self._reading_paused = True  # a pipelining client waits until we catch up
            self.transport.pause_reading()
        self._more.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        self._more.set()
        self._writable.set()
        if self.task is not None and not self._idle:
            self.task.cancel()  # the answer being relayed has nobody to go to

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- serving -----------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            while not self._lost:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        return self._hand_off()
                    if not await self._wait_for_bytes():
                        return self.abort()
                    continue
                request = fast_request(bytes(self.buffer[:end]))
                if request is None or self.server.forwarder.lean is None:
                    return self._hand_off()
                del self.buffer[:end + 4]
                self._resume_reading()
                self._idle = False
                keep_alive = await self._relay(request)
                self._idle = True
                if not keep_alive or self._closing:
                    return self.abort()
        except asyncio.CancelledError:
            self.abort()
        except Exception:
            log.exception("fast path failed; closing the connection")
            self.abort()

    async def _wait_for_bytes(self) -> bool:
        """False when the connection idled out, was lost or the server is stopping."""
        if self._closing and not self.buffer:
            return False
        self._more.clear()
        had = len(self.buffer)
        # A timer, not asyncio.wait_for: that wraps every wait in a new task (~20 % of a request's cost).
        timer = asyncio.get_running_loop().call_later(IDLE_TIMEOUT, self._more.set)
        await self._more.wait()
        timer.cancel()
        return not self._lost and (len(self.buffer) > had or self._closing)

    def _hand_off(self) -> None:
        assert self.transport is not None
        self.server.connections.discard(self)
        handler = self.server.wrapped()
        self.transport.set_protocol(handler)
        handler.connection_made(self.transport)
        if self.buffer:
            handler.data_received(bytes(self.buffer))
            self.buffer.clear()
        self._resume_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    def close_when_idle(self) -> None:
        self._closing = True
        if self._idle:
            self._more.set()

    def abort(self) -> None:
        self.server.connections.discard(self)
        if self.transport is not None:
            self.transport.close()

    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self._lost:
            raise ConnectionResetError("the client went away")
        self.transport.write(data)
        await self._writable.wait()

    # -- relaying --------------------------------------------------------------------
    async def _relay(self, request: FastRequest) -> bool:
        """Answer `request` from the main server; whether the connection may serve another."""
        forwarder = self.server.forwarder
        assert forwarder.lean is not None and self.transport is not None
        peer = self.transport.get_extra_info("peername") or ("",)
        headers = forwarded_headers(request.headers, str(peer[0]), request.host, "http", request.session_id, forwarder.client_id)
        forwarder.fast_path_requests += 1
        try:
            answer = await forwarder.lean.request(request.method, backend_target(request.target), headers)
        except UpstreamFailed as exc:
            return await self._send_unreachable(str(exc), request.keep_alive)
        try:
            return await self._send_answer(answer, request)
        finally:
            await answer.body.aclose()
            answer.discard()

    async def _send_answer(self, answer: Answer, request: FastRequest) -> bool:
        keep_alive = request.keep_alive
        if bodyless(request.method, answer.status):
            await self.write(_response_head(answer, keep_alive))  # its own headers say what a GET would get
            return keep_alive
        if fits_one_write(answer):
            try:  # read it all first: a backend that drops it still gets a clean 502
                body = b"".join([piece async for piece in answer.body])
            except BROKEN_ANSWER:
                return await self._send_unreachable("it dropped its answer", keep_alive)
            await self.write(_response_head(answer, keep_alive, f"Content-Length: {len(body)}") + body)
            return keep_alive
        chunked = answer.length is None
        await self.write(_response_head(answer, keep_alive, "Transfer-Encoding: chunked" if chunked else f"Content-Length: {answer.length}"))
        try:
            async for piece in answer.body:
                if piece:
                    await self.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
        except BROKEN_ANSWER:
            log.warning("backend dropped a response mid-stream on %s", request.target)
            return False  # the head is out: closing is the only way left to say so
        if chunked:
            await self.write(b"0\r\n\r\n")
        return keep_alive

    async def _send_unreachable(self, detail: str, keep_alive: bool) -> bool:
        body = json.dumps(error_body("backend_unreachable", unreachable_message(detail))).encode()
        headers = [("Content-Type", "application/json; charset=utf-8")]
        await self.write(_head(502, "Bad Gateway", headers, keep_alive, f"Content-Length: {len(body)}") + body)
        return keep_alive


def _response_head(answer: Answer, keep_alive: bool, framing: str | None = None) -> bytes:
    return _head(answer.status, answer.reason, answer.headers.items(), keep_alive, framing)


def _head(status: int, reason: str, headers: Iterable[tuple[str, str]], keep_alive: bool, framing: str | None) -> bytes:
    """A status line and the end-to-end headers; `framing` replaces their own length when given."""
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        lower = name.lower()
        if lower not in HOP_BY_HOP and not (framing and lower == "content-length"):
            lines.append(f"{name}: {value}")
    if framing:
        lines.append(framing)
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class ProxyRunner(web.AppRunner):
    """Runs client N's proxy app with the fast path in front of aiohttp's server."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app has started: its connection pool is open
        return FastPathServer(server, self.app[forwarder_key])  # type: ignore[return-value]
