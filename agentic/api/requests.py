"""Request helpers shared by the views: strict JSON bodies, session access, admin check."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from agentic import keys
from agentic.ids import parse_session_id
from agentic.logs import session_id_var
from agentic.sessions.models import SessionRecord
from agentic.web.errors import ApiError

MAX_CLIENT_ID_CHARS = 100


async def read_json_object(request: web.Request, allowed: set[str], required: set[str] = frozenset(), optional_body: bool = False) -> dict[str, Any]:
    """The request body as a JSON object with only `allowed` keys, or the api.md error."""
    raw = await request.read()
    if not raw.strip():
        if optional_body:
            return {}
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    missing = required - set(body)
    if missing:
        raise ApiError(422, "invalid_field", f"missing field(s): {', '.join(sorted(missing))}")
    return body


def parse_json(raw: str | bytes) -> Any:
    """JSON text as a value whose strings are all valid Unicode; anything else, too deeply
    nested JSON included, is a 400 `invalid_json` (a lone surrogate would fail later in SQLite)."""
    try:
        value = json.loads(raw)
        json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise ApiError(400, "invalid_json", "JSON is nested too deeply") from None
    except (ValueError, UnicodeError):
        raise ApiError(400, "invalid_json", "body is not valid JSON of valid Unicode text") from None
    return value


def string_field(body: dict[str, Any], name: str, max_chars: int, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ApiError(422, "invalid_field", f"{name!r} must be a string")
    if len(value) > max_chars:
        raise ApiError(413, "too_large", f"{name!r} is longer than {max_chars} characters")
    return value


def int_field(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(422, "invalid_field", f"{name!r} must be an integer between {low} and {high}")
    return value


def header_text(request: web.Request, name: str, max_chars: int) -> str | None:
    """A header's value cut to `max_chars`, None when absent or empty; 400 `invalid_header`
    when its bytes are not UTF-8 (aiohttp hands them over as surrogates)."""
    raw = request.headers.get(name, "")
    try:
        raw.encode()
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_header", f"{name} is not UTF-8 text") from None
    return raw[:max_chars] or None


def client_id_header(request: web.Request) -> str | None:
    """The `x-client-id` a client proxy adds."""
    return header_text(request, "x-client-id", MAX_CLIENT_ID_CHARS)


def header_session_id(request: web.Request) -> str | None:
    raw = request.headers.get("x-session-id")
    if raw is None:
        return None
    return parse_session_id(raw.strip())


def path_session_id(request: web.Request) -> str:
    session_id = parse_session_id(request.match_info["session_id"])
    header = request.headers.get("x-session-id")
    if header is not None and header.strip().lower() != session_id:
        raise ApiError(403, "session_mismatch", "x-session-id header does not match the session in the path")
    session_id_var.set(session_id)
    return session_id


def live_session(request: web.Request) -> SessionRecord:
    """The session named by the path, checked against the header, refreshed; 400/403/404 otherwise."""
    return request.app[keys.sessions_key].get_live(path_session_id(request))


def is_admin(request: web.Request) -> bool:
    token = request.app[keys.settings_key].admin_token
    if not token:
        return False
    auth = request.headers.get("Authorization", "")
    scheme, _, presented = auth.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode())
