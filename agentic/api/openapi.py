"""The OpenAPI 3 document of every route. A test checks it against the routes the app registers."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from agentic import __version__
from agentic.api.requests import MAX_CLIENT_ID_CHARS
from agentic.api.search import MAX_HITS, MAX_QUERY_CHARS, MAX_SEARCH_SESSIONS
from agentic.sessions.lifecycle import MAX_SYSTEM_PROMPT_CHARS, MAX_TITLE_CHARS
from agentic.sessions.models import MAX_STOP_CHARS, MAX_STOPS, ChatSettings

SID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
FILE_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
SESSION_HEADER = {"name": "x-session-id", "in": "header", "required": False, "schema": {"type": "string", "format": "uuid"},
                  "description": "When present it must equal the session in the path (403 otherwise)."}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): ERROR_ANSWERS.get(s) or _json(_ref("Error"), "Error") for s in statuses}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


STR, INT, NUM, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}


def _setting(name: str, kind: str, nullable: bool = False) -> dict[str, Any]:
    low, high = ChatSettings.LIMITS[name]
    return {"type": [kind, "null"] if nullable else kind, "minimum": low, "maximum": high}

TIME = {"type": "string", "format": "date-time"}
STOP = {"type": "array", "maxItems": MAX_STOPS, "items": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
        "description": "stop strings: the reply ends where one appears, without it (finish_reason `stop`); text that may begin one is held back, never sent and taken back"}

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {"code": STR, "message": STR}}}},
    "Settings": _obj({"temperature": _setting("temperature", "number"), "top_p": _setting("top_p", "number"), "top_k": _setting("top_k", "integer"),
                      "max_tokens": _setting("max_tokens", "integer", nullable=True), "seed": _setting("seed", "integer", nullable=True),
                     "ignore_eos": {"type": "boolean", "description": "never stop before max_tokens (fixed-length replies, benchmarks)"}, "stop": STOP}),
    "File": {"type": "object", "properties": {"name": STR, "size": INT, "content_type": STR, "uploaded_at": TIME, "extracted_chars": INT, "status": {"enum": ["ok", "unreadable"]}, "note": STR}},
    "SessionSummary": {"type": "object", "properties": {
        "session_id": STR, "client_id": {"type": ["string", "null"]},
        "title": {"type": ["string", "null"], "description": "null in listings, except for the caller's own session or with the admin token"}, "created_at": TIME,
        "last_activity": TIME, "expires_at": TIME, "message_count": INT}},
    "Session": {"allOf": [_ref("SessionSummary"), {"type": "object", "properties": {
        "files": {"type": "array", "items": _ref("File")}, "system_prompt": STR, "settings": _ref("Settings")}}]},
    "Message": {"type": "object", "properties": {"id": STR, "role": {"enum": ["user", "assistant", "system"]}, "content": STR, "created_at": TIME, "usage": _ref("Usage"),
                                                 "alternatives": {"type": "array", "items": STR, "description": "a regenerated reply: the earlier replies to the same user message, oldest first"}}},
    "Usage": {"type": "object", "properties": {
        "prompt_tokens": INT, "completion_tokens": INT, "cached_tokens": {"type": "integer", "description": "prompt tokens the session's model state already held (not computed again)"},
        "prefill_tokens": INT,
        "shared_tokens": {"type": "integer", "description": "prompt tokens taken from another session's cache (a shared system prompt) instead of computed"}, "ttft_ms": NUM,
        "tokens_per_s": NUM, "finish_reason": {"enum": ["stop", "length", "cancelled", "error"]},
        "trimmed_messages": INT, "restored_state": BOOL,
        "files": {"type": "array", "items": {"type": "object"}, "description": "the uploaded files' parts the prompt held: [{name, passages: \"all\" or [index]}]"},
        "files_added": {"type": "array", "items": {"type": "object"}, "description": "those of them that came with this turn's question (after the history)"}}},
    "Stats": {"type": "object", "properties": {
        "active_sessions": INT, "total_created": INT, "expired": INT, "connected_websockets": INT,
        "total_messages": INT, "uploads_bytes": INT, "by_client": {"type": "object", "additionalProperties": INT}}},
    "SearchHit": {"type": "object", "properties": {
        "session_id": STR, "title": STR, "kind": {"enum": ["message", "title", "file"]},
        "message_id": {"type": "string", "description": "for a message: open the session at it"}, "role": {"enum": ["user", "assistant", "system"]},
        "snippet": {"type": "string", "description": "the matching text, cut around the match for a long message"},
        "parts": {"type": "array", "description": "the snippet in pieces; those with match=true are the words found",
                  "items": _obj({"text": STR, "match": BOOL})}}},
    "Health": {"type": "object", "properties": {"status": {"enum": ["ok", "loading", "error"]}, "model": STR, "gpu_offload": BOOL, "sessions": INT, "uptime_s": NUM, "engine": {"type": "object"}}},
}

ERROR_ANSWERS: dict[int, dict[str, Any]] = {
    403: _json(_ref("Error"), "`origin_refused`: a state-changing request from a page whose Origin is neither this server nor in ALLOWED_ORIGINS; "
                              "`session_mismatch`: x-session-id and the path disagree"),
    421: _json(_ref("Error"), "`host_not_allowed`: the Host header names neither this server (loopback, an IP address, the bound address) nor ALLOWED_HOSTS"),
    429: {**_json(_ref("Error"), "`rate_limited` (with Retry-After), `too_many_sessions` (MAX_SESSIONS reached) or `busy`"),
          "headers": {"Retry-After": {"description": "seconds to wait, on `rate_limited`", "schema": INT}}},
}

SESSION_BODY = _obj({"client_id": {"type": "string", "maxLength": MAX_CLIENT_ID_CHARS}, "system_prompt": {"type": "string", "maxLength": MAX_SYSTEM_PROMPT_CHARS},
                     "title": {"type": "string", "maxLength": MAX_TITLE_CHARS}, "settings": _ref("Settings")})
MESSAGE_BODY = _obj({"content": STR, "max_tokens": INT, "stream": BOOL, "stop": STOP}, required=("content",))
TURN_ANSWER = {"description": "The reply; with stream=true a text/event-stream of the WebSocket frames, ending with the turn's "
                              "done or error frame (error session_not_found: the session was deleted or expired during the turn)",
               "content": {"application/json": {"schema": _obj({"message": _ref("Message"), "usage": _ref("Usage")})}, "text/event-stream": {"schema": STR}}}
OPENAI_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
    "message": STR, "type": STR, "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
OPENAI_KEY = [{"name": "Authorization", "in": "header", "schema": STR, "description": "Bearer <session id> (the OpenAI clients' API key); "
                                                                                     "Bearer ADMIN_TOKEN without a session runs the request in a session of its own"},
              {"name": "x-session-id", "in": "header", "schema": STR, "description": "the session, when the key names none"}]


def _openai_errors(*statuses: int) -> dict[str, Any]:
    answers = {str(s): _json(OPENAI_ERROR, "Error, in OpenAI's shape") for s in statuses}
    if 429 in statuses:
        answers["429"]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": INT}}
    return answers


CHAT_COMPLETION_BODY = {"type": "object", "required": ["messages"], "properties": {
    "model": {"type": "string", "description": "echoed; the server has one model"},
    "messages": {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role"], "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant"]},
        "content": {"anyOf": [STR, {"type": "array", "items": _obj({"type": {"const": "text"}, "text": STR}, required=("type", "text"))}]}}}},
    "stream": BOOL, "stream_options": {"type": "object", "properties": {"include_usage": BOOL}},
    "max_tokens": {"type": "integer", "minimum": 1}, "max_completion_tokens": {"type": "integer", "minimum": 1},
    "temperature": _setting("temperature", "number"), "top_p": _setting("top_p", "number"), "seed": INT,
    "stop": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}, STOP]},
    "n": {"const": 1, "description": "more than one choice is refused (400)"}}}


def _op(summary: str, responses: dict[str, Any], params: list | None = None, body: dict | None = None, description: str = "") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **_errors(421)}}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


S = [SID, SESSION_HEADER]
CLIENT_HEADER = {"name": "x-client-id", "in": "header", "required": False, "schema": STR,
                 "description": "Set by the client proxies; recorded on sessions created without a body client_id."}


def JSON_BODY(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


PATHS: dict[str, dict[str, Any]] = {
    "/": {"get": _op("The chat page", {"200": {"description": "HTML page"}})},
    "/health": {"get": _op("Server and model health", {"200": _json(_ref("Health")), "503": _json(_ref("Health"), "Model loading, or not able to serve: `error` says why (load or self-check failed, the inference thread stopped)")})},
    "/docs": {"get": _op("This documentation, as a page", {"200": {"description": "HTML page"}})},
    "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3 JSON"}})},
    "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "Prometheus text format"}})},
    "/sessions": {
        "post": _op("Create a session", {"201": _json(_ref("Session")), **_errors(400, 403, 413, 422, 429)}, [CLIENT_HEADER], JSON_BODY(SESSION_BODY, False),
                    description="Rate limited per caller (address and x-client-id): SESSION_CREATE_RATE a minute, bursts of SESSION_CREATE_BURST; "
                                "at most MAX_SESSIONS sessions in all."),
        "get": _op("List sessions with stats, newest activity first", {"200": _json({"type": "object", "properties": {
            "session_id": {"type": ["string", "null"]}, "admin": BOOL, "sessions": {"type": "array", "items": _ref("SessionSummary")},
            "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page; null on the last page"},
            "stats": _ref("Stats")}}), **_errors(400)},
            params=[SESSION_HEADER, {"name": "Authorization", "in": "header", "schema": STR, "description": "Bearer ADMIN_TOKEN shows full ids and titles"},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
                    {"name": "cursor", "in": "query", "schema": STR, "description": "`next_cursor` of the previous page"}],
            description="Ids of other sessions are truncated to 8 characters and their titles are null unless the admin token is presented."),
    },
    "/sessions/{session_id}": {
        "get": _op("Get a session", {"200": _json(_ref("Session")), **_errors(400, 403, 404)}, S),
        "patch": _op("Change title, system prompt or settings", {"200": _json(_ref("Session")), **_errors(400, 403, 404, 413, 422)}, S,
                     JSON_BODY(_obj({"title": STR, "system_prompt": STR, "settings": _ref("Settings")}))),
        "delete": _op("Delete a session with its history, files and model state", {"200": _json(_obj({"deleted": STR})), **_errors(400, 403, 404)}, S),
    },
    "/sessions/{session_id}/clear": {"post": _op("Empty the conversation, keep session and files", {"200": _json(_ref("Session")), **_errors(400, 403, 404)}, S)},
    "/sessions/{session_id}/messages": {
        "get": _op("The conversation, oldest first", {"200": _json(_obj({"messages": {"type": "array", "items": _ref("Message")}})), **_errors(400, 403, 404)}, S),
        "post": _op("Send a message and get the reply", {
            "200": TURN_ANSWER, **_errors(400, 403, 404, 409, 413, 422, 429, 503)}, S, JSON_BODY(MESSAGE_BODY)),
    },
    "/sessions/{session_id}/regenerate": {"post": _op("Answer the last user message again", {"200": TURN_ANSWER, **_errors(400, 403, 404, 409, 413, 422, 429, 503)}, S,
                                                    JSON_BODY(_obj({"max_tokens": INT, "stream": BOOL, "stop": STOP}), False),
                                                    description="The last reply is replaced; the new one lists it (and the replies before it) in `alternatives`. "
                                                                "409 `nothing_to_regenerate` when the conversation does not end with a reply. Every socket "
                                                                "of the session first gets a `history` frame without the replaced reply.")},
    "/sessions/{session_id}/messages/{message_id}/edit": {"post": _op(
        "Give a user message new text, drop the messages after it and answer again", {"200": TURN_ANSWER, **_errors(400, 403, 404, 409, 413, 422, 429, 503)},
        S + [{"name": "message_id", "in": "path", "required": True, "schema": STR}], JSON_BODY(MESSAGE_BODY),
        description="404 `message_not_found` when the session has no such message, 422 `not_a_user_message` for a reply. Every socket of the "
                    "session first gets a `history` frame with the conversation as it now stands. The model state is reused up to the first changed token.")},
    "/v1/models": {"get": _op("The served model (OpenAI API)", {"200": _json({"type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
        "type": "object", "properties": {"id": STR, "object": {"const": "model"}, "created": INT, "owned_by": STR,
                                         "context_length": {"type": "integer", "description": "context tokens of one session"}}}}}}),
        **_openai_errors(401)}, OPENAI_KEY)},
    "/v1/chat/completions": {"post": _op("A chat completion in a session (OpenAI API)", {
        "200": {"description": "`chat.completion`, or with stream=true `chat.completion.chunk` server-sent events ending `data: [DONE]`",
                "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": STR}}},
        **_openai_errors(400, 401, 413, 429, 503)}, OPENAI_KEY, JSON_BODY(CHAT_COMPLETION_BODY),
        description="The key is a session id. When `messages` are the session's stored conversation (its system prompt first, when it has one) "
                    "plus one new user message, this is the session's next turn: stored, streamed to its open tabs, its model state reused. "
                    "Any other conversation runs as a side turn that stores nothing, in a model state of its own. Either waits for the "
                    "session's running turn. Honoured: model (echoed), stream, stream_options.include_usage, max_tokens/max_completion_tokens, "
                    "temperature, top_p, seed, stop. Refused with 400: n > 1, tools, functions, response_format other than text, logprobs. "
                    "Other fields are ignored. Every error has OpenAI's shape.")},
    "/sessions/{session_id}/files": {
        "post": _op("Upload files (multipart/form-data)", {"201": _json(_obj({"files": {"type": "array", "items": _ref("File")}})), **_errors(400, 403, 404, 413, 415, 422)}, S,
                    {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}},
                    description="All or nothing. 413 `archive_too_large` refuses a zip bomb: an Office file that would unzip past "
                                "MAX_UNZIPPED_MB, a part compressed past MAX_ZIP_RATIO, or one that unzips past its declared size. "
                                "A file whose text cannot be read (malformed, or too slow or too big for the extraction worker) "
                                "is kept with `status: unreadable` and a `note` saying why."),
        "get": _op("List the session's files", {"200": _json(_obj({"files": {"type": "array", "items": _ref("File")}})), **_errors(400, 403, 404)}, S),
    },
    "/sessions/{session_id}/files/{name}": {
        "get": _op("Download a file, as an attachment", {"200": {"description": "The file"}, **_errors(400, 403, 404)}, S + [FILE_NAME]),
        "delete": _op("Delete a file", {"200": _json(_obj({"deleted": STR})), **_errors(400, 403, 404)}, S + [FILE_NAME]),
    },
    "/search": {"post": _op("Search the messages, titles and file names of the sessions named", {
        "200": _json(_obj({"hits": {"type": "array", "items": _ref("SearchHit")}})), **_errors(400, 403, 413, 422)}, None,
        JSON_BODY(_obj({"q": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                        "session_ids": {"type": "array", "maxItems": MAX_SEARCH_SESSIONS, "items": {"type": "string", "format": "uuid"}},
                        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HITS, "default": 20}}, required=("q", "session_ids"))),
        description="A session id is a capability: only the sessions whose full ids are given are searched (the chat page sends those this "
                    "browser holds), and ids of sessions that are gone are passed over. Every word of `q` must occur, each matched as the "
                    "start of a word (SQLite FTS5). Titles and file names come first, then messages, best match first.")},
    "/ws": {"get": _op("WebSocket chat", {"101": {"description": "Switching protocols"}, **_errors(400, 403, 429)},
                       [{"name": "session_id", "in": "query", "schema": {"type": "string", "format": "uuid"}},
                        {"name": "resume", "in": "query", "schema": STR, "description": "<message_id>:<seq> of the last frame received"}],
                       description=("Frames in: chat {content, id?, max_tokens?, stop?}, regenerate {id?, max_tokens?}, edit {message_id, content, "
                                    "id?, max_tokens?}, stop, ping. Frames out: session (first), history (after an edit or regenerate, before the new "
                                    "reply's start: the stored conversation as it now stands), start, token, "
                                    "done, error, queued, pong, files, session_closed. Turn frames carry message_id and seq. "
                                    "Close codes: 4404 unknown/expired session, 4400 malformed id, 1013 reader too slow or no session could be "
                                    "created (after an error frame), 1011 internal error (after an error frame). Opening without a session "
                                    "creates one, under the same limits as POST /sessions (429 before the upgrade)."))},
}


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "agentic", "version": __version__, "description": "Self-hosted LLM chat server with isolated sessions."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS},
    }
