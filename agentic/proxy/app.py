"""The two apps of client N: the backend proxy (8000+N) and the frontend (8500+N)."""

from __future__ import annotations

import time
from typing import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp_session import session_middleware

from agentic.config import ClientSettings
from agentic.proxy.binding import SessionBinder, cookie_storage, load_cookie_key, valid_uuid
from agentic.proxy.forward import UPSTREAM_ERRORS, Forwarder, backend_target, upstream_failure
from agentic.web.errors import ApiError, error_middleware, quiet_malformed_requests
from agentic.web.openai_errors import openai_errors_middleware
from agentic.web.guard import allowed_host_names, host_guard, origin_allowed, parse_host, parse_origin
from agentic.web.templates import STATIC_DIR, render_chat_page, setup_templates

binder_key = web.AppKey("binder", SessionBinder)
forwarder_key = web.AppKey("forwarder", Forwarder)
client_settings_key = web.AppKey("client_settings", ClientSettings)
started_key = web.AppKey("started", float)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def create_proxy_app(settings: ClientSettings, forwarder: Forwarder, binder: SessionBinder, cookie_key: bytes, api_prefix: str = "") -> web.Application:
    """Forwards every route to the main server; `api_prefix` is set when mounted under the frontend."""
    quiet_malformed_requests()
    openai_errors = openai_errors_middleware(lambda request: backend_path(request).startswith("/v1/"))
    app = web.Application(middlewares=[openai_errors, error_middleware, host_guard(allowed_host_names(settings.host, settings.allowed_hosts)), session_middleware(cookie_storage(cookie_key, settings.number))], client_max_size=1024**2)
    app[client_settings_key] = settings
    app[forwarder_key] = forwarder
    app[binder_key] = binder
    app[started_key] = time.monotonic()
    app.router.add_get(f"{api_prefix}/health", proxy_health, name="proxy_health")
    app.router.add_get(f"{api_prefix}/sessions", list_sessions, name="proxy_sessions_list")
    app.router.add_post(f"{api_prefix}/sessions", create_session, name="proxy_sessions_create")
    app.router.add_get(f"{api_prefix}/ws", websocket, name="proxy_ws")
    app.router.add_route("*", f"{api_prefix}/{{tail:.*}}", forward_any, name="proxy_forward")
    return app


def create_frontend_app(settings: ClientSettings, forwarder: Forwarder, binder: SessionBinder, cookie_key: bytes) -> web.Application:
    """The chat page and its assets; its API calls go to /api/*, proxied like the backend port."""
    app = create_proxy_app(settings, forwarder, binder, cookie_key, api_prefix="/api")
    setup_templates(app)
    app.router.add_get("/", frontend_page, name="frontend_page")
    app.router.add_static("/static", STATIC_DIR, name="static")
    return app


def create_client_apps(settings: ClientSettings) -> tuple[web.Application, web.Application]:
    """Client N's proxy app and frontend app, sharing one set of connection pools."""
    key = load_cookie_key(settings.cookie_key, settings.data_dir / "client-keys" / f"client-{settings.number}.key")
    forwarder = Forwarder(settings.backend_url, settings.client_id)
    binder = SessionBinder(settings.backend_url, settings.client_id, settings.data_dir / "clients" / f"client-{settings.number}.json")
    proxy = create_proxy_app(settings, forwarder, binder, key)

    async def connection_pool(app: web.Application) -> AsyncIterator[None]:
        await forwarder.open()
        yield
        await forwarder.close()

    frontend = create_frontend_app(settings, forwarder, binder, key)
    for app in (proxy, frontend):
        app.cleanup_ctx.append(connection_pool)
    return proxy, frontend


# -- helpers --------------------------------------------------------------------------------
def backend_path(request: web.Request) -> str:
    """The request's path and query as the main server should see it (without /api)."""
    return backend_target(request.rel_url.raw_path_qs if hasattr(request.rel_url, "raw_path_qs") else str(request.rel_url))


def check_origin(request: web.Request) -> None:
    """Only this client's own pages (same origin, or its frontend/proxy port on the same host) may drive its sessions."""
    if origin_allowed(request):
        return
    settings = request.app[client_settings_key]
    origin, own = parse_origin(request.headers["Origin"]), parse_host(request.headers.get("Host", ""))
    if origin is not None and own is not None and origin.host.name == own.name and origin.host.port in (settings.frontend_port, settings.proxy_port):
        return
    raise ApiError(403, "origin_refused", f"origin {request.headers['Origin']!r} may not use client {settings.number}")


def api_key_session(request: web.Request) -> str | None:
    """On the OpenAI API (/v1/), a key that is a session id names the session: never the cookie's."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return valid_uuid(key) if scheme.lower() == "bearer" and backend_path(request).startswith("/v1/") else None


async def caller_session(request: web.Request, check_live: bool = False) -> str | None:
    """The request's own session (an API key, the header, or the WebSocket's query), else the implicit binding."""
    own = api_key_session(request) or request.headers.get("x-session-id") or (request.query.get("session_id") if request.path.endswith("/ws") else None)
    if own:
        return own.strip()
    forwarder = request.app[forwarder_key]
    try:
        return await request.app[binder_key].implicit_session(request, forwarder.http, check_live)
    except UPSTREAM_ERRORS as exc:
        raise upstream_failure(exc) from None


# -- views ------------------------------------------------------------------------------------
async def proxy_health(request: web.Request) -> web.Response:
    settings = request.app[client_settings_key]
    forwarder = request.app[forwarder_key]
    backend: dict = {"url": forwarder.backend_url, "reachable": False}
    try:
        async with forwarder.http.get(f"{forwarder.backend_url}/health", timeout=aiohttp.ClientTimeout(total=3)) as resp:
            backend.update(reachable=True, status=(await resp.json()).get("status"))
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        backend["error"] = type(exc).__name__
    return web.json_response({
        "status": "ok",
        "role": "client-proxy",
        "client": settings.number,
        "client_id": settings.client_id,
        "ports": {"frontend": settings.frontend_port, "proxy": settings.proxy_port},
        "uptime_s": round(time.monotonic() - request.app[started_key], 3),
        "backend": backend,
        "websockets": forwarder.sockets.open_count(),
    })


async def list_sessions(request: web.Request) -> web.Response:
    session_id = await caller_session(request, check_live=True)
    status, body = await request.app[forwarder_key].fetch_json(request, backend_path(request), session_id)
    if status == 200 and isinstance(body, dict):
        body["session_id"] = valid_uuid(session_id)
        body["client_id"] = request.app[client_settings_key].client_id
    return web.json_response(body, status=status)


async def create_session(request: web.Request) -> web.Response:
    check_origin(request)
    status, body = await request.app[forwarder_key].fetch_json(request, backend_path(request), None)
    if status == 201 and isinstance(body, dict) and valid_uuid(body.get("session_id")):
        await request.app[binder_key].bind(request, body["session_id"])
    return web.json_response(body, status=status)


async def websocket(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    session_id = await caller_session(request, check_live=True)
    return await request.app[forwarder_key].relay_websocket(request, backend_path(request), session_id)


async def forward_any(request: web.Request) -> web.StreamResponse:
    if request.method in STATE_CHANGING:
        check_origin(request)
    session_id = await caller_session(request)
    return await request.app[forwarder_key].forward(request, backend_path(request), session_id)


async def frontend_page(request: web.Request) -> web.Response:
    return render_chat_page(request, "/api", request.app[client_settings_key].client_id)
