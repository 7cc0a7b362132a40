"""Driving the WebSocket chat in tests."""

from __future__ import annotations

import asyncio


async def receive_until_done(ws, timeout: float = 60) -> list[dict]:
    """Frames up to and including this turn's done or error frame."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json()
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


async def chat_turn(ws, content: str, max_tokens: int = 12, **extra) -> list[dict]:
    await ws.send_json({"type": "chat", "content": content, "max_tokens": max_tokens, **extra})
    return await receive_until_done(ws)


def streamed_text(frames: list[dict]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "token")


async def open_session_socket(client, session_id: str | None = None, **query) -> tuple[object, dict]:
    params = {"session_id": session_id, **query} if session_id else query
    ws = await client.ws_connect("/ws", params=params)
    first = await ws.receive_json()
    assert first["type"] == "session", first
    return ws, first["session"]
