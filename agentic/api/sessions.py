"""REST views for the session lifecycle: create, list, get, patch, clear, delete."""

from __future__ import annotations

import math
import re

from aiohttp import web

from agentic import keys
from agentic.api.requests import MAX_CLIENT_ID_CHARS, client_id_header, header_session_id, is_admin, live_session, read_json_object, string_field
from agentic.sessions.lifecycle import MAX_SYSTEM_PROMPT_CHARS, MAX_TITLE_CHARS, Listing, ListingKey
from agentic.sessions.models import ChatSettings
from agentic.web.errors import ApiError

DEFAULT_PAGE = 100
MAX_PAGE = 1000
_CURSOR = re.compile(r"([0-9.e+-]{1,32})_([0-9a-f]{8})")

routes = web.RouteTableDef()


def session_json(request: web.Request, record) -> dict:
    return record.to_json(request.app[keys.sessions_key].timeout_s)


@routes.post("/sessions", name="sessions_create")
async def create_session(request: web.Request) -> web.Response:
    request.app[keys.create_limits_key].check(request, client_id_header(request))
    body = await read_json_object(request, {"client_id", "system_prompt", "settings", "title"}, optional_body=True)
    client_id = string_field(body, "client_id", MAX_CLIENT_ID_CHARS) or client_id_header(request)
    system_prompt = string_field(body, "system_prompt", MAX_SYSTEM_PROMPT_CHARS, "")
    title = string_field(body, "title", MAX_TITLE_CHARS)
    settings = ChatSettings().updated(body.get("settings", {}))
    record = await request.app[keys.sessions_key].create(client_id, system_prompt or "", settings, title)
    return web.json_response(session_json(request, record), status=201)


@routes.get("/sessions", name="sessions_list")
async def list_sessions(request: web.Request) -> web.Response:
    """Newest activity first, `limit` at a time; `next_cursor` fetches the next page."""
    manager = request.app[keys.sessions_key]
    caller = header_session_id(request)
    if caller is not None and not manager.exists(caller):
        caller = None
    admin = is_admin(request)
    listing = await manager.listing(_page_limit(request), _cursor(request))
    return web.json_response({
        "session_id": caller,
        "admin": admin,
        "sessions": [r.summary_json(manager.timeout_s, owner=admin or r.session_id == caller) for r in listing.records],
        "next_cursor": None if listing.next_after is None else f"{listing.next_after[0]!r}_{listing.next_after[1]}",
        "stats": stats_json(request, listing),
    })


def _page_limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise ApiError(400, "invalid_query", f"'limit' must be an integer between 1 and {MAX_PAGE}")
    return int(raw)


def _cursor(request: web.Request) -> ListingKey | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    match = _CURSOR.fullmatch(raw)
    try:
        at = float(match.group(1)) if match else math.nan
    except ValueError:
        at = math.nan
    if not math.isfinite(at):
        raise ApiError(400, "invalid_query", "'cursor' must be a next_cursor of an earlier listing")
    return (at, match.group(2))


def stats_json(request: web.Request, listing: Listing) -> dict:
    stats = request.app[keys.sessions_key].stats
    return {
        "active_sessions": listing.active,
        "total_created": stats.total_created,
        "expired": stats.expired,
        "connected_websockets": len(request.app[keys.websockets_key]),
        "total_messages": stats.total_messages,
        "uploads_bytes": listing.uploads_bytes,
        "by_client": listing.by_client,
    }


@routes.get("/sessions/{session_id}", name="session_get")
async def get_session(request: web.Request) -> web.Response:
    return web.json_response(session_json(request, live_session(request)))


@routes.patch("/sessions/{session_id}", name="session_patch")
async def patch_session(request: web.Request) -> web.Response:
    record = live_session(request)
    body = await read_json_object(request, {"system_prompt", "settings", "title"})
    settings = record.settings.updated(body["settings"]) if "settings" in body else None
    await request.app[keys.sessions_key].update(
        record,
        title=string_field(body, "title", MAX_TITLE_CHARS),
        system_prompt=string_field(body, "system_prompt", MAX_SYSTEM_PROMPT_CHARS),
        settings=settings,
    )
    await request.app[keys.chat_key].session_changed(record)
    return web.json_response(session_json(request, record))


@routes.post("/sessions/{session_id}/clear", name="session_clear")
async def clear_session(request: web.Request) -> web.Response:
    record = live_session(request)
    await request.app[keys.chat_key].clear(record)
    return web.json_response(session_json(request, record))


@routes.delete("/sessions/{session_id}", name="session_delete")
async def delete_session(request: web.Request) -> web.Response:
    record = live_session(request)
    await request.app[keys.sessions_key].remove(record.session_id)
    return web.json_response({"deleted": record.session_id})


@routes.get("/sessions/{session_id}/messages", name="messages_list")
async def list_messages(request: web.Request) -> web.Response:
    record = live_session(request)
    messages = await request.app[keys.sessions_key].messages(record.session_id)
    return web.json_response({"messages": [m.to_json() for m in messages]})
