"""REST chat: one turn answered whole, or streamed as server-sent events of the WebSocket frames."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from agentic import keys
from agentic.web.errors import ApiError
from agentic.api.requests import int_field, live_session, read_json_object
from agentic.chat.subscribers import Subscriber

routes = web.RouteTableDef()


@routes.post("/sessions/{session_id}/messages", name="messages_create")
async def post_message(request: web.Request) -> web.StreamResponse:
    record = live_session(request)
    body = await read_json_object(request, {"content", "max_tokens", "stream"}, required={"content"})
    max_tokens = int_field(body, "max_tokens", 1, 1_000_000)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "invalid_field", "'stream' must be a boolean")
    chat = request.app[keys.chat_key]
    if stream:
        return await _stream_turn(request, record, body["content"], max_tokens)
    turn = await chat.start_turn(record, body["content"], max_tokens, cancel_when_unwatched=False)
    usage = await turn.finished
    done = next((f for f in reversed(turn.frames) if f["type"] in ("done", "error")), None)
    if done is None or done["type"] == "error" or usage is None:
        code = done["code"] if done else "generation_failed"
        message = done["message"] if done else "generation failed"
        raise ApiError(422 if code == "context_overflow" else 503, code, message)
    return web.json_response({"message": done["message"], "usage": usage})


async def _stream_turn(request: web.Request, record, content: Any, max_tokens: int | None) -> web.StreamResponse:
    chat = request.app[keys.chat_key]
    turn = await chat.start_turn(record, content, max_tokens, cancel_when_unwatched=True)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    ended = asyncio.get_running_loop().create_future()

    def end() -> None:
        if not ended.done():
            ended.set_result(None)

    async def write(frame: dict[str, Any]) -> None:
        if frame.get("type") == "session_closed":
            end()
            return
        await response.write(f"event: {frame['type']}\ndata: {json.dumps(frame, ensure_ascii=False)}\n\n".encode())
        if frame.get("type") in ("done", "error") and frame.get("message_id") == turn.message_id:
            end()

    async def broken() -> None:
        end()

    try:
        await response.prepare(request)
    except BaseException:
        turn.cancel()
        raise
    subscriber = Subscriber(write, broken)
    chat.subscribe(record.session_id, subscriber, resume=(turn.message_id, -1))
    try:
        await ended
        await subscriber.finish()
    finally:
        subscriber.cancel()
        chat.unsubscribe(record.session_id, subscriber)
    return response
