"""The OpenAI-compatible API: `GET /v1/models` and `POST /v1/chat/completions`, one session per key.

The API key is a session id (`Authorization: Bearer <id>`, else `x-session-id`). A request whose
messages are the session's stored conversation plus one new user message is the session's next
turn (stored, streamed to its open tabs too); any other is a side turn that stores nothing (see
ChatService.complete). With ADMIN_TOKEN set, the admin token with no session gets a session of
its own for the one request. Every error under /v1/ has OpenAI's shape.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentic import keys
from agentic.api.messages import FrameWriter, stream_frames
from agentic.api.requests import is_admin, parse_json
from agentic.chat.service import TurnOptions
from agentic.chat.turns import Turn
from agentic.errors import Busy, DomainError, NotFound
from agentic.ids import valid_session_id
from agentic.logs import session_id_var
from agentic.sessions.models import ChatSettings, SessionRecord, checked_stops
from agentic.web.errors import ApiError, Handler
from agentic.web.openai_errors import error_response, openai_errors_middleware

routes = web.RouteTableDef()

RETRY_AFTER_S = 1
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
openai_errors = openai_errors_middleware(lambda request: request.path.startswith("/v1/"))


# -- which session ---------------------------------------------------------------------------
def bearer_key(request: web.Request) -> str:
    """The API key of `Authorization: Bearer <key>` ("" without one)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def _named_session(request: web.Request) -> SessionRecord | None:
    """The session the key (else x-session-id) names; None for the admin token without one; 401 otherwise."""
    key = bearer_key(request)
    header = request.headers.get("x-session-id", "").strip()
    session_id = valid_session_id(key) or valid_session_id(header)
    if session_id is None:
        if key and is_admin(request) and not header:
            return None
        raise ApiError(401, "invalid_api_key", "give a session id as the API key (Authorization: Bearer <session id>) or in x-session-id")
    session_id_var.set(session_id)
    try:
        return request.app[keys.sessions_key].get_live(session_id)
    except NotFound:
        raise ApiError(401, "invalid_api_key", "no live session has this id (unknown, deleted or expired)") from None


# -- the request -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    messages: list[dict[str, str]]
    options: TurnOptions
    stream: bool
    include_usage: bool
    model: str | None


def _invalid(message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, code, message)


def parse_completion(body: Any, max_chars: int) -> Completion:
    """The fields this server honours; features it lacks are refused, saying so."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object", "invalid_json")
    if body.get("n") not in (None, 1) or isinstance(body.get("n"), bool):
        raise _invalid("'n' other than 1 is not supported: one choice per request", "unsupported_parameter")
    for name in ("tools", "functions"):
        if body.get(name):
            raise _invalid(f"'{name}' (function calling) is not supported", "unsupported_parameter")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise _invalid("'response_format' is not supported: replies are plain text", "unsupported_parameter")
    if body.get("logprobs"):
        raise _invalid("'logprobs' is not supported", "unsupported_parameter")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _invalid("'model' must be a string")
    stream = _typed(body, "stream", bool, False)
    stream_options = _typed(body, "stream_options", dict, {})
    return Completion(_messages(body.get("messages"), max_chars), _options(body), stream,
                      _typed(stream_options, "include_usage", bool, False), model)


def _typed(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise _invalid(f"'{name}' must be a {'boolean' if kind is bool else 'JSON object'}")
    return value


def _messages(raw: Any, max_chars: int) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise _invalid("'messages' must be a non-empty list")
    return [_message(item, max_chars) for item in raw]


def _message(item: Any, max_chars: int) -> dict[str, str]:
    if not isinstance(item, dict) or item.get("role") not in ROLES:
        if isinstance(item, dict) and item.get("role") in ("tool", "function"):
            raise _invalid("tool messages are not supported", "unsupported_parameter")
        raise _invalid(f"each message needs a 'role', one of {', '.join(ROLES)}")
    if item.get("tool_calls"):
        raise _invalid("tool calls are not supported", "unsupported_parameter")
    content = _text(item.get("content"))
    if len(content) > max_chars:
        raise ApiError(413, "message_too_large", f"a message is longer than {max_chars} characters")
    return {"role": ROLES[item["role"]], "content": content}


def _text(content: Any) -> str:
    """A message's content: a string, or a list of text parts (joined by newlines)."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    raise _invalid("'content' must be a string or a list of text parts (other parts are not supported)")


def _number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _invalid(f"'{name}' must be a number between {low:g} and {high:g}")
    return value


def _options(body: dict[str, Any]) -> TurnOptions:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("'max_tokens' (or 'max_completion_tokens') must be a positive integer")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _invalid("'seed' must be an integer")
    try:
        stop = checked_stops(body.get("stop")) if body.get("stop") is not None else None
    except DomainError as exc:
        raise _invalid(exc.message) from None
    temperature_range, top_p_range = ChatSettings.LIMITS["temperature"], ChatSettings.LIMITS["top_p"]
    return TurnOptions(
        max_tokens=max_tokens, temperature=_number(body, "temperature", *temperature_range), top_p=_number(body, "top_p", *top_p_range),
        seed=None if seed is None else seed % (2**32 - 1),  # any integer; the sampler takes 32 bits, and 2**32-1 means random
        stop=stop,
    )


# -- views -------------------------------------------------------------------------------------
@routes.get("/v1/models", name="openai_models")
async def list_models(request: web.Request) -> web.Response:
    _named_session(request)
    engine = request.app[keys.engine_key]
    model = {"id": engine.model_name, "object": "model", "created": int(time.time() - (time.monotonic() - request.app[keys.started_at_key])),
             "owned_by": "agentic", "context_length": engine.settings.ctx_per_session}
    return web.json_response({"object": "list", "data": [model]})


@routes.post("/v1/chat/completions", name="openai_chat_completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    named = _named_session(request)
    chat = request.app[keys.chat_key]
    completion = parse_completion(parse_json(await request.read() or b"null"), chat.max_message_chars)
    manager = request.app[keys.sessions_key]
    record = named or await _own_session(request)
    try:
        turn = await _start(request, record, completion)
        model = completion.model or request.app[keys.engine_key].model_name
        if completion.stream:
            return await stream_frames(request, turn, _chunk_writer(turn, model, completion.include_usage))
        return web.json_response(await _whole(turn, model))
    finally:
        if named is None:
            await manager.remove(record.session_id)


async def _own_session(request: web.Request) -> SessionRecord:
    try:
        return await request.app[keys.sessions_key].create("admin", title="OpenAI request")
    except Busy as exc:
        raise ApiError(429, exc.code, exc.message, {"Retry-After": str(RETRY_AFTER_S)}) from None


async def _start(request: web.Request, record: SessionRecord, completion: Completion) -> Turn:
    try:
        return await request.app[keys.chat_key].complete(record, completion.messages, completion.options, cancel_when_unwatched=completion.stream)
    except Busy as exc:
        raise ApiError(429, exc.code, exc.message, {"Retry-After": str(RETRY_AFTER_S)}) from None


async def _whole(turn: Turn, model: str) -> dict[str, Any]:
    usage = await turn.finished
    outcome = turn.last_outcome()
    if usage is None or outcome is None or outcome["type"] == "error":
        raise _failure(outcome)
    choice = {"index": 0, "message": {"role": "assistant", "content": turn.text}, "logprobs": None, "finish_reason": _finish_reason(usage)}
    return {**_head(turn, model, "chat.completion"), "choices": [choice], "usage": usage_json(usage)}


def _failure(outcome: dict[str, Any] | None) -> ApiError:
    if outcome is not None and outcome.get("code") == "context_overflow":
        return ApiError(400, "context_length_exceeded", outcome["message"])
    if outcome is not None and outcome.get("code") == "session_not_found":  # deleted during the turn
        return ApiError(404, outcome["code"], outcome["message"])
    return ApiError(503, outcome["code"] if outcome else "generation_failed", outcome["message"] if outcome else "generation failed")


def _head(turn: Turn, model: str, kind: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{turn.message_id}", "object": kind, "created": int(time.time()), "model": model, "system_fingerprint": None}


def _finish_reason(usage: dict[str, Any]) -> str:
    return "length" if usage.get("finish_reason") == "length" else "stop"


def usage_json(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)}}


def _chunk_writer(turn: Turn, model: str, include_usage: bool) -> FrameWriter:
    """The turn's frames as `chat.completion.chunk` events, ending `data: [DONE]`."""
    head = _head(turn, model, "chat.completion.chunk")

    async def send(response: web.StreamResponse, body: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode())

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        body = {**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        return {**body, "usage": None} if include_usage else body

    async def write(response: web.StreamResponse, frame: dict[str, Any]) -> None:
        if frame.get("message_id") != turn.message_id:
            return
        kind = frame["type"]
        if kind == "start":
            await send(response, chunk({"role": "assistant", "content": ""}))
        elif kind == "token":
            await send(response, chunk({"content": frame["text"]}))
        elif kind == "done":
            await send(response, chunk({}, _finish_reason(frame["usage"])))
            if include_usage:
                await send(response, {**head, "choices": [], "usage": usage_json(frame["usage"])})
            await response.write(b"data: [DONE]\n\n")
        elif kind == "error":
            failure = _failure(frame)
            await send(response, json.loads(error_response(failure.status, failure.code, failure.message).text))
            await response.write(b"data: [DONE]\n\n")

    return write
