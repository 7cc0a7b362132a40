"""REST chat: one turn answered whole, or streamed as server-sent events of the WebSocket frames.
A new message, a regenerated reply and an edited message are answered alike."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from aiohttp import web

from agentic import keys
from agentic.api.requests import int_field, live_session, read_json_object
from agentic.chat.service import TurnOptions, session_gone_frame
from agentic.chat.subscribers import Subscriber
from agentic.chat.turns import Turn
from agentic.errors import SessionGone
from agentic.sessions.models import SessionRecord, checked_stops
from agentic.web.errors import ApiError

routes = web.RouteTableDef()

# Starts the turn; its argument says whether the turn stops when nobody watches it any more.
TurnStarter = Callable[[bool], Awaitable[Turn]]


@routes.post("/sessions/{session_id}/messages", name="messages_create")
async def post_message(request: web.Request) -> web.StreamResponse:
    record = live_session(request)
    body = await read_json_object(request, {"content", "max_tokens", "stream", "stop"}, required={"content"})
    options = turn_options(body)
    chat = request.app[keys.chat_key]
    return await answer(request, record, body, lambda unwatched: chat.start_turn(record, body["content"], options, cancel_when_unwatched=unwatched))


@routes.post("/sessions/{session_id}/regenerate", name="messages_regenerate")
async def regenerate(request: web.Request) -> web.StreamResponse:
    record = live_session(request)
    body = await read_json_object(request, {"max_tokens", "stream", "stop"}, optional_body=True)
    options = turn_options(body)
    chat = request.app[keys.chat_key]
    return await answer(request, record, body, lambda unwatched: chat.regenerate(record, options, cancel_when_unwatched=unwatched))


@routes.post("/sessions/{session_id}/messages/{message_id}/edit", name="messages_edit")
async def edit(request: web.Request) -> web.StreamResponse:
    record = live_session(request)
    body = await read_json_object(request, {"content", "max_tokens", "stream", "stop"}, required={"content"})
    options = turn_options(body)
    chat = request.app[keys.chat_key]
    message_id = request.match_info["message_id"]
    return await answer(request, record, body, lambda unwatched: chat.edit(record, message_id, body["content"], options, cancel_when_unwatched=unwatched))


def turn_options(body: dict[str, Any]) -> TurnOptions:
    """A chat request's own max_tokens and stop strings (a frame's or a body's)."""
    stop = checked_stops(body["stop"]) if body.get("stop") is not None else None
    return TurnOptions(max_tokens=int_field(body, "max_tokens", 1, 1_000_000), stop=stop)


async def answer(request: web.Request, record: SessionRecord, body: dict[str, Any], start: TurnStarter) -> web.StreamResponse:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(422, "invalid_field", "'stream' must be a boolean")
    if stream:
        return await _stream_turn(request, record, await start(True))
    turn = await start(False)
    usage = await turn.finished
    outcome = turn.last_outcome()
    if outcome is None or outcome["type"] == "error" or usage is None:
        code = outcome["code"] if outcome else "generation_failed"
        message = outcome["message"] if outcome else "generation failed"
        if code == "session_not_found":
            raise SessionGone(message)
        raise ApiError(422 if code == "context_overflow" else 503, code, message)
    if outcome["message"] is None and request.app[keys.sessions_key].find(record.session_id) is None:
        raise SessionGone("the session was deleted during its turn")
    return web.json_response({"message": outcome["message"], "usage": usage})


async def _stream_turn(request: web.Request, record: SessionRecord, turn: Turn) -> web.StreamResponse:
    async def write(response: web.StreamResponse, frame: dict[str, Any]) -> None:
        await response.write(f"event: {frame['type']}\ndata: {json.dumps(frame, ensure_ascii=False)}\n\n".encode())

    return await stream_frames(request, turn, write)


FrameWriter = Callable[[web.StreamResponse, dict[str, Any]], Awaitable[None]]


async def stream_frames(request: web.Request, turn: Turn, write: FrameWriter, headers: dict[str, str] | None = None) -> web.StreamResponse:
    """Send a turn's frames, from its first, as server-sent events (`write` shapes each) until its done or error frame."""
    chat = request.app[keys.chat_key]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
    ended = asyncio.get_running_loop().create_future()

    def end() -> None:
        if not ended.done():
            ended.set_result(None)

    async def send(frame: dict[str, Any]) -> None:
        if ended.done():  # a session_closed queued behind the turn's own last frame
            return
        if frame.get("type") == "session_closed":  # the turn's own frame may never come: say why it ends
            await write(response, {**session_gone_frame(), "message_id": turn.message_id})
            end()
            return
        await write(response, frame)
        if frame.get("type") in ("done", "error") and frame.get("message_id") == turn.message_id:
            end()

    async def broken() -> None:
        end()

    try:
        await response.prepare(request)
    except BaseException:
        turn.cancel()
        raise
    subscriber = Subscriber(send, broken)
    chat.watch(turn, subscriber)
    try:
        await ended
        await subscriber.finish()
    finally:
        subscriber.cancel()
        chat.unsubscribe(turn.channel, subscriber)
    return response
