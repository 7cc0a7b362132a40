"""What a client can make the servers write to their log."""

import asyncio
import logging


async def test_a_request_aiohttp_cannot_parse_is_one_info_line(served_main, caplog):
    """Junk a client sends (here a Content-Length that is no number) is answered 400 by aiohttp,
    which logs it as an error with a traceback: anyone could fill the log. One info line instead
    (the app factory installs the filter)."""
    caplog.set_level(logging.INFO)
    host, port = served_main
    for _ in range(3):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: abc\r\n\r\n".encode())
        assert (await reader.readline()).startswith(b"HTTP/1.0 400")
        writer.close()
    assert caplog.text.count("malformed request") == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
