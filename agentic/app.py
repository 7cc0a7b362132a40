"""The main server's app factory: `create_app(settings)`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from typing import AsyncIterator

from aiohttp import WSCloseCode, web

from agentic import keys
from agentic.api import files, health, messages, page, search, sessions, ws
from agentic.api import openai
from agentic.api.limits import CreateLimits
from agentic.api.metrics import Metrics, metrics_middleware
from agentic.chat.service import ChatService
from agentic.config import Settings
from agentic.engine.engine import Engine
from agentic.ids import valid_session_id
from agentic.logs import session_id_var
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.factory import open_store
from agentic.uploads.storage import UploadService
from agentic.web.errors import error_middleware, quiet_malformed_requests
from agentic.web.guard import allowed_host_names, host_guard, origin_guard
from agentic.web.templates import STATIC_DIR, setup_templates

log = logging.getLogger("agentic.app")


@web.middleware
async def session_log_context(request: web.Request, handler):
    session_id_var.set(request.headers.get("x-session-id"))
    return await handler(request)


@web.middleware
async def mirror_named_session(request: web.Request, handler):
    """Behind a balancer, a session may have been created on another server a moment ago: the
    store mirrors the one a request names (path, x-session-id, ?session_id= or the /v1 API key) before a view looks."""
    api_key = openai.bearer_key(request) if request.path.startswith("/v1/") else None
    for raw in (request.match_info.get("session_id"), request.headers.get("x-session-id"), request.query.get("session_id"), api_key):
        session_id = valid_session_id((raw or "").strip())
        if session_id is not None:
            await request.app[keys.store_key].ensure(session_id)
    return await handler(request)


def create_app(settings: Settings) -> web.Application:
    quiet_malformed_requests()
    metrics = Metrics(settings.server_name)
    app = web.Application(
        middlewares=[
            openai.openai_errors,
            error_middleware,
            metrics_middleware(metrics),
            host_guard(allowed_host_names(settings.host, settings.allowed_hosts)),
            origin_guard(settings.allowed_origins),
            session_log_context,
            mirror_named_session,
        ],
        client_max_size=settings.max_body_bytes,
    )
    app[keys.settings_key] = settings
    app[keys.metrics_key] = metrics
    app[keys.websockets_key] = weakref.WeakSet()
    app[keys.started_at_key] = time.monotonic()
    app[keys.create_limits_key] = CreateLimits.from_rate(settings.session_create_rate, settings.session_create_burst)
    setup_templates(app)
    for module in (health, sessions, messages, files, search, ws, page):
        app.router.add_routes(module.routes)
    app.router.add_routes(openai.routes)
    app.router.add_static("/static", STATIC_DIR, name="static")
    app.cleanup_ctx.extend([store_ctx, engine_ctx, services_ctx, background_ctx])
    app.on_shutdown.append(close_websockets)
    return app


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    store = open_store(settings.database_url, settings.db_path)
    await store.open()
    app[keys.store_key] = store
    app[keys.sessions_key] = SessionManager(store, settings.session_timeout_s, settings.max_sessions)
    yield
    await store.close()


async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
    """The model loads in the background so /health can answer 'loading' meanwhile."""
    settings = app[keys.settings_key]
    engine = Engine(settings.engine, settings.kv_dir)
    app[keys.engine_key] = engine
    loading = asyncio.create_task(engine.start()) if settings.load_model else None
    yield
    if loading is not None:
        await loading
    await engine.stop()


async def services_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    manager = app[keys.sessions_key]
    engine = app[keys.engine_key]
    chat = ChatService(manager, engine, settings.max_message_chars)
    uploads = UploadService(settings.uploads, manager, settings.uploads_dir, settings.extracted_dir)
    await uploads.start()
    app[keys.metrics_key].watch(manager, chat)
    chat.file_context = uploads.file_context
    uploads.on_change = lambda record: _broadcast_files(chat, record)
    manager.on_removed(chat.session_removed)
    manager.on_removed(engine.drop_session)
    manager.on_sweep(engine.remove_orphans)
    manager.on_removed(uploads.session_removed)
    app[keys.chat_key] = chat
    app[keys.uploads_key] = uploads
    yield
    await chat.shutdown()
    uploads.close()


async def _broadcast_files(chat: ChatService, record) -> None:
    chat.broadcast(record.session_id, {"type": "files", "files": [f.to_json() for f in record.files.values()]})


async def background_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.settings_key]
    manager = app[keys.sessions_key]
    tasks = [
        asyncio.create_task(manager.run_cleanup_loop(settings.cleanup_interval_s), name="session-cleanup"),
        asyncio.create_task(manager.flush_loop(), name="activity-flush"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def close_websockets(app: web.Application) -> None:
    for socket in list(app[keys.websockets_key]):
        await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
