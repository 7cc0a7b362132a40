"""Request helpers shared by the views: strict JSON bodies, session access, admin check."""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from agentic import keys
from agentic.api.errors import ApiError
from agentic.logs import session_id_var
from agentic.sessions.ids import parse_session_id
from agentic.sessions.models import SessionRecord


async def read_json_object(request: web.Request, allowed: set[str], required: set[str] = frozenset(), optional_body: bool = False) -> dict[str, Any]:
    """The request body as a JSON object with only `allowed` keys, or the api.md error."""
    raw = await request.read()
    if not raw.strip():
        if optional_body:
            return {}
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "request body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    missing = required - set(body)
    if missing:
        raise ApiError(422, "invalid_field", f"missing field(s): {', '.join(sorted(missing))}")
    return body


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
