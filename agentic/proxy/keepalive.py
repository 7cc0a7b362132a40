"""A lean keep-alive HTTP/1.1 client for the proxy's commonest request: a GET or HEAD without a body.

aiohttp's client spends about 0.3 ms of Python on each request here, as much as the main
server's whole answer, which made every proxied GET cost twice a direct one. For bodyless
requests to the main server, a pooled connection, one write and a header parse do the same
work. Requests with bodies, WebSockets and other schemes keep using aiohttp.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from multidict import CIMultiDict

NO_BODY_STATUSES = frozenset({204, 304})
CHUNK = 64 * 1024
# What reading an Answer's body raises when the main server drops or garbles it.
BROKEN_ANSWER = (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError)


def bodyless(method: str, status: int) -> bool:
    """Whether the answer to `method` with `status` has no body, whatever its headers say."""
    return method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200


class UpstreamFailed(Exception):
    """The main server could not be reached or answered something that is not HTTP/1.1."""


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    checkouts: int = 1

    @property
    def reused(self) -> bool:
        return self.checkouts > 1

    def close(self) -> None:
        self.writer.close()


@dataclass
class Answer:
    status: int
    reason: str
    headers: CIMultiDict[str]
    body: AsyncIterator[bytes]
    length: int | None
    # Closes the connection of an answer whose body was never read (a generator that never
    # started cannot clean up after itself); harmless once the body was read.
    discard: Callable[[], None] = field(default=lambda: None)


class KeepAlivePool:
    def __init__(self, host: str, port: int, max_idle: int = 64, connect_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[Connection] = []

    async def request(self, method: str, path_qs: str, headers: dict[str, str]) -> Answer:
        """Send a bodyless request; a pooled connection the server has meanwhile closed is retried once, fresh."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address
        head = _request_head(method, path_qs, f"{host}:{self.port}", headers)
        while True:
            conn = await self._connection()
            try:
                conn.writer.write(head)
                status, reason, response_headers = await _read_head(conn.reader)
                break
            except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                conn.close()
                if not conn.reused:
                    raise UpstreamFailed(type(exc).__name__) from None
            except BaseException:  # not HTTP, or the caller gave up: this connection's state is unknown
                conn.close()
                raise
        no_body = bodyless(method, status)
        length = 0 if no_body else _content_length(response_headers)
        reusable = response_headers.get("Connection", "").lower() != "close"
        if no_body or length is not None:
            body = self._sized_body(conn, length or 0, reusable)
        elif "chunked" in response_headers.get("Transfer-Encoding", "").lower():
            body = self._chunked_body(conn, reusable)
        else:
            body = self._body_until_close(conn)
        return Answer(status, reason, response_headers, body, length, self._discarder(conn))

    async def _connection(self) -> Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                conn.checkouts += 1
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise UpstreamFailed(type(exc).__name__) from None
        return Connection(reader, writer)

    def _discarder(self, conn: Connection) -> Callable[[], None]:
        checkout = conn.checkouts

        def discard() -> None:
            if conn.checkouts == checkout and conn not in self._idle:
                conn.close()
        return discard

    def _finish(self, conn: Connection, reusable: bool) -> None:
        """Back to the pool when its answer was read to the end, else closed."""
        if reusable and len(self._idle) < self.max_idle and not conn.writer.is_closing():
            self._idle.append(conn)
        else:
            conn.close()

    async def _sized_body(self, conn: Connection, length: int, reusable: bool) -> AsyncIterator[bytes]:
        done = False
        try:
            left = length
            while left:
                piece = await conn.reader.readexactly(min(left, CHUNK))
                left -= len(piece)
                yield piece
            done = True
        finally:
            self._finish(conn, reusable and done)

    async def _chunked_body(self, conn: Connection, reusable: bool) -> AsyncIterator[bytes]:
        done = False
        try:
            while True:
                size = int((await conn.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    while await conn.reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                yield await conn.reader.readexactly(size)
                await conn.reader.readexactly(2)
            done = True
        finally:
            self._finish(conn, reusable and done)

    async def _body_until_close(self, conn: Connection) -> AsyncIterator[bytes]:
        try:
            while piece := await conn.reader.read(CHUNK):
                yield piece
        finally:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _request_head(method: str, path_qs: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path_qs} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, CIMultiDict[str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise UpstreamFailed("the answer's head is too large") from None
    status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise UpstreamFailed(f"not an HTTP/1.1 answer: {status_line[:60]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.add(name.strip(), value.strip())
    return int(code), reason, headers


def _content_length(headers: CIMultiDict[str]) -> int | None:
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        return None
    value = headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None
