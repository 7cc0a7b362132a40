"""REST views for the session lifecycle: create, list, get, patch, clear, delete."""

from __future__ import annotations

from aiohttp import web

from agentic import keys
from agentic.api.requests import header_session_id, is_admin, live_session, read_json_object, string_field
from agentic.sessions.lifecycle import MAX_SYSTEM_PROMPT_CHARS, MAX_TITLE_CHARS
from agentic.sessions.models import ChatSettings

routes = web.RouteTableDef()


def session_json(request: web.Request, record) -> dict:
    return record.to_json(request.app[keys.sessions_key].timeout_s)


@routes.post("/sessions", name="sessions_create")
async def create_session(request: web.Request) -> web.Response:
    body = await read_json_object(request, {"client_id", "system_prompt", "settings", "title"}, optional_body=True)
    client_id = string_field(body, "client_id", 100) or request.headers.get("x-client-id", "")[:100] or None
    system_prompt = string_field(body, "system_prompt", MAX_SYSTEM_PROMPT_CHARS, "")
    title = string_field(body, "title", MAX_TITLE_CHARS)
    settings = ChatSettings().updated(body.get("settings", {}))
    record = await request.app[keys.sessions_key].create(client_id, system_prompt or "", settings, title)
    return web.json_response(session_json(request, record), status=201)


@routes.get("/sessions", name="sessions_list")
async def list_sessions(request: web.Request) -> web.Response:
    manager = request.app[keys.sessions_key]
    store = manager.store
    caller = header_session_id(request)
    if caller is not None and caller not in store.sessions:
        caller = None
    full = is_admin(request)
    live = [r for r in store.records() if not manager.is_expired(r)]
    live.sort(key=lambda r: r.last_activity, reverse=True)
    return web.json_response({
        "session_id": caller,
        "admin": full,
        "sessions": [r.summary_json(manager.timeout_s, full_id=full or r.session_id == caller) for r in live],
        "stats": stats_json(request, len(live)),
    })


def stats_json(request: web.Request, active: int) -> dict:
    store = request.app[keys.store_key]
    return {
        "active_sessions": active,
        "total_created": store.stats.total_created,
        "expired": store.stats.expired,
        "connected_websockets": len(request.app[keys.websockets_key]),
        "total_messages": store.stats.total_messages,
        "uploads_bytes": store.uploads_bytes(),
        "by_client": store.by_client(),
    }


@routes.get("/sessions/{session_id}", name="session_get")
async def get_session(request: web.Request) -> web.Response:
    return web.json_response(session_json(request, live_session(request)))


@routes.patch("/sessions/{session_id}", name="session_patch")
async def patch_session(request: web.Request) -> web.Response:
    record = live_session(request)
    body = await read_json_object(request, {"system_prompt", "settings", "title"})
    settings = record.settings.updated(body["settings"]) if "settings" in body else None
    await request.app[keys.store_key].update(
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
    messages = await request.app[keys.store_key].messages(record.session_id)
    return web.json_response({"messages": [m.to_json() for m in messages]})
