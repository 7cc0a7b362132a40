"""What a client can make the servers write to their log."""

import asyncio
import logging

from aiohttp import web

from agentic.app import create_app
from tests.conftest import make_settings


async def test_a_request_aiohttp_cannot_parse_is_one_info_line(tmp_path, caplog):
    """Junk a client sends (here a Content-Length that is no number) is answered 400 by aiohttp,
    which logs it as an error with a traceback: anyone could fill the log. One info line instead
    (the app factory installs the filter)."""
    caplog.set_level(logging.INFO)
    runner = web.AppRunner(create_app(make_settings(tmp_path / "d")))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        for _ in range(3):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: abc\r\n\r\n".encode())
            assert (await reader.readline()).startswith(b"HTTP/1.0 400")
            writer.close()
    finally:
        await runner.cleanup()
    assert caplog.text.count("malformed request") == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
