"""WebSocket chat (api.md): session frame first, then chat/regenerate/edit/stop/ping in, numbered turn frames out."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from agentic import keys
from agentic.api.messages import turn_options
from agentic.api.requests import client_id_header, parse_json
from agentic.chat.subscribers import Subscriber
from agentic.config import MAX_WS_FRAME_BYTES
from agentic.errors import DomainError, Malformed, NotFound
from agentic.ids import parse_session_id
from agentic.logs import session_id_var
from agentic.sessions.models import SessionRecord
from agentic.web.errors import ApiError, http_status
from agentic.web.guard import require_origin

log = logging.getLogger("agentic.ws")
routes = web.RouteTableDef()

CLOSE_BAD_SESSION_ID = 4400
SESSION_GONE_CLOSE_CODE = 4404


def _requested_session(request: web.Request) -> str | None:
    """The id from the query or the header; 403 when both are given and disagree."""
    query = request.query.get("session_id")
    header = request.headers.get("x-session-id")
    if query and header and query.strip().lower() != header.strip().lower():
        raise ApiError(403, "session_mismatch", "x-session-id header does not match session_id")
    return query or header


def _parse_resume(raw: str | None) -> tuple[str, int] | None:
    if not raw:
        return None
    message_id, _, seq = raw.rpartition(":")
    try:
        return message_id, int(seq)
    except ValueError:
        return None


def websocket_subscriber(ws: web.WebSocketResponse) -> Subscriber:
    """A session's frames to this socket; a `session_closed` frame ends it with 4404."""

    async def write(frame: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(frame, ensure_ascii=False))
        if frame.get("type") == "session_closed":
            await ws.close(code=SESSION_GONE_CLOSE_CODE, message=b"session deleted or expired")

    async def broken() -> None:
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"reader too slow")

    return Subscriber(write, broken)


@routes.get("/ws", name="websocket")
async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Every refusal that can be known before the upgrade is an HTTP error; after it, an error
    frame and a close code, never an HTTP answer inside the upgraded stream."""
    settings = request.app[keys.settings_key]
    require_origin(request, settings.allowed_origins)
    requested = _requested_session(request)
    client_id = client_id_header(request)
    if not requested:
        request.app[keys.create_limits_key].check(request, client_id)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_WS_FRAME_BYTES)
    await ws.prepare(request)
    try:
        record = await _open_session(request, ws, requested, client_id)
        if record is not None:
            await _serve(request, ws, record)
    except Exception:
        log.exception("websocket failed")
        await _close_with_error(ws, WSCloseCode.INTERNAL_ERROR, _error("internal_error", "internal server error"))
    return ws


async def _serve(request: web.Request, ws: web.WebSocketResponse, record: SessionRecord) -> None:
    session_id_var.set(record.session_id)
    request.app[keys.engine_key].prefetch(record.session_id)  # its saved model state comes off disk before its first message
    sockets = request.app[keys.websockets_key]
    metrics = request.app[keys.metrics_key]
    chat = request.app[keys.chat_key]
    subscriber = websocket_subscriber(ws)
    sockets.add(ws)
    metrics.websockets.set(len(sockets))
    try:
        resume = _parse_resume(request.query.get("resume"))
        first: dict[str, Any] = {"type": "session", "session": record.to_json(request.app[keys.sessions_key].timeout_s)}
        if resume is not None:
            first["resumed"] = chat.can_resume(record.session_id, resume[0])
        subscriber.send(first)
        chat.subscribe(record.session_id, subscriber, resume)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _handle_frame(request, record, subscriber, msg.data)
            elif msg.type == WSMsgType.BINARY:
                subscriber.send(_error("bad_frame", "frames must be JSON text"))
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        chat.unsubscribe(record.session_id, subscriber)
        await subscriber.finish()
        sockets.discard(ws)
        metrics.websockets.set(len(sockets))


async def _open_session(request: web.Request, ws: web.WebSocketResponse, requested: str | None, client_id: str | None) -> SessionRecord | None:
    manager = request.app[keys.sessions_key]
    if not requested:
        try:
            return await manager.create(client_id)
        except DomainError as exc:
            await _close_with_error(ws, WSCloseCode.TRY_AGAIN_LATER, _error(exc.code, exc.message))
            return None
    try:
        return manager.get_live(parse_session_id(requested.strip()))
    except DomainError as exc:
        code = CLOSE_BAD_SESSION_ID if isinstance(exc, Malformed) else SESSION_GONE_CLOSE_CODE
        await ws.close(code=code, message=exc.code.encode())
        return None


async def _close_with_error(ws: web.WebSocketResponse, code: int, frame: dict[str, Any]) -> None:
    if not ws.closed:
        with contextlib.suppress(ConnectionError):
            await ws.send_json(frame)
            await ws.close(code=code, message=frame["code"].encode())


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **extra}


async def _handle_frame(request: web.Request, record: SessionRecord, subscriber, data: str) -> None:
    chat = request.app[keys.chat_key]
    if len(data) > chat.max_message_chars * 4 + 1024:
        subscriber.send(_error("message_too_large", f"frame is larger than {chat.max_message_chars} characters allow"))
        return
    try:
        frame = parse_json(data)
    except ApiError as exc:
        subscriber.send(_error("bad_frame", exc.message))
        return
    if not isinstance(frame, dict):
        subscriber.send(_error("bad_frame", "frame must be a JSON object"))
        return
    kind = frame.get("type")
    try:
        request.app[keys.sessions_key].get_live(record.session_id)
    except NotFound:
        subscriber.send(_error("session_not_found", "this session was deleted or has expired"))
        return
    if kind == "ping":
        subscriber.send({"type": "pong"})
    elif kind == "stop":
        chat.stop(record.session_id)
    elif kind in ("chat", "regenerate", "edit"):
        await _start_turn(chat, record, subscriber, frame)
    else:
        subscriber.send(_error("unknown_type", f"unknown frame type {kind!r}"))


async def _start_turn(chat, record: SessionRecord, subscriber, frame: dict[str, Any]) -> None:
    """A chat, regenerate or edit frame: the turn's frames go to every socket of the session,
    a refusal to this socket only (an error frame with the HTTP status it would have had)."""
    reply_to = frame.get("id")
    if reply_to is not None and not isinstance(reply_to, (str, int)):
        reply_to = None
    try:
        options = turn_options(frame)
        if frame["type"] == "chat":
            await chat.start_turn(record, frame.get("content"), options, reply_to=reply_to)
        elif frame["type"] == "regenerate":
            await chat.regenerate(record, options, reply_to=reply_to)
        else:
            await chat.edit(record, frame.get("message_id"), frame.get("content"), options, reply_to=reply_to)
    except DomainError as exc:
        subscriber.send(_error(exc.code, exc.message, reply_to=reply_to, status=http_status(exc)))
    except ApiError as exc:
        subscriber.send(_error(exc.code, exc.message, reply_to=reply_to, status=exc.status))
