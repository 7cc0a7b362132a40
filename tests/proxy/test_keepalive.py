"""The lean keep-alive client against small real servers that answer in the ways HTTP/1.1 allows."""

from __future__ import annotations

import asyncio

import pytest

from agentic.proxy.keepalive import KeepAlivePool, UpstreamFailed


async def serve(answers: list[bytes], close_after_each: bool = False):
    """A server that reads one request head per answer and writes the answers in order."""
    seen: list[bytes] = []
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        try:
            while answers:
                seen.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(answers.pop(0))
                await writer.drain()
                if close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen, connections


async def body_of(answer) -> bytes:
    return b"".join([piece async for piece in answer.body])


async def test_sized_answers_reuse_one_connection_and_send_our_headers():
    server, port, seen, connections = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello"] * 2)
    pool = KeepAlivePool("127.0.0.1", port)
    for _ in range(2):
        answer = await pool.request("GET", "/sessions?x=1", {"x-session-id": "abc"})
        assert (answer.status, answer.reason, answer.headers["X-A"], answer.length) == (200, "OK", "1", 5)
        assert await body_of(answer) == b"hello"
    assert len(connections) == 1
    assert seen[0].startswith(b"GET /sessions?x=1 HTTP/1.1\r\nHost: 127.0.0.1:") and b"x-session-id: abc\r\n" in seen[0]
    pool.close()
    server.close()


async def test_chunked_answers_are_decoded():
    server, port, _, _ = await serve([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"])
    pool = KeepAlivePool("127.0.0.1", port)
    answer = await pool.request("GET", "/", {})
    assert answer.length is None and await body_of(answer) == b"hello world"
    assert len(pool._idle) == 1  # read to its end: back in the pool
    pool.close()
    server.close()


async def test_an_answer_without_length_runs_until_close_and_head_has_no_body():
    server, port, _, _ = await serve([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"], close_after_each=True)
    pool = KeepAlivePool("127.0.0.1", port)
    answer = await pool.request("GET", "/", {})
    assert await body_of(answer) == b"all of it" and pool._idle == []
    server.close()
    server, port, _, _ = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"])
    head = await KeepAlivePool("127.0.0.1", port).request("HEAD", "/", {})
    assert head.length == 0 and await body_of(head) == b""
    server.close()


async def test_a_pooled_connection_the_server_drops_is_retried_fresh():
    seen: list[bytes] = []

    async def handle(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if len(seen) == 1:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            seen.append(await reader.readuntil(b"\r\n\r\n"))  # the next request on this connection...
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()  # ...is dropped unanswered, as a server closing an idle connection would

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = KeepAlivePool("127.0.0.1", server.sockets[0].getsockname()[1])
    assert await body_of(await pool.request("GET", "/a", {})) == b""
    answer = await pool.request("GET", "/b", {})
    assert await body_of(answer) == b"ok"
    assert [head.split(b" ")[1] for head in seen] == [b"/a", b"/b", b"/b"]
    pool.close()
    server.close()


async def test_a_dead_backend_or_a_non_http_answer_is_upstream_failed(unused_tcp_port):
    with pytest.raises(UpstreamFailed):
        await KeepAlivePool("127.0.0.1", unused_tcp_port).request("GET", "/", {})
    server, port, _, _ = await serve([b"SSH-2.0-OpenSSH\r\n\r\n"])
    with pytest.raises(UpstreamFailed, match="not an HTTP"):
        await KeepAlivePool("127.0.0.1", port).request("GET", "/", {})
    server.close()


async def test_an_abandoned_answer_closes_its_connection():
    server, port, _, _ = await serve([b"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000])
    pool = KeepAlivePool("127.0.0.1", port)
    answer = await pool.request("GET", "/", {})
    first = await answer.body.__anext__()
    assert 0 < len(first) < 200000
    await answer.body.aclose()
    assert pool._idle == []  # half-read: never handed to the next request
    server.close()


async def test_an_answer_never_read_closes_its_connection_when_discarded():
    client_gone = asyncio.Event()

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
        await writer.drain()
        if await reader.read() == b"":
            client_gone.set()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    pool = KeepAlivePool("127.0.0.1", server.sockets[0].getsockname()[1])
    answer = await pool.request("GET", "/", {})
    await answer.body.aclose()  # never started: its own cleanup cannot run
    answer.discard()
    await asyncio.wait_for(client_gone.wait(), 2)
    assert pool._idle == []
    server.close()
