"""Every piece of the main server's app-wide state, under a typed AppKey, so `request.app[...]`
is typed wherever it is read. Part of the api layer: the views read the app through it."""

from __future__ import annotations

import weakref

from aiohttp import web

from agentic.api.limits import CreateLimits
from agentic.api.metrics import Metrics
from agentic.chat.service import ChatService
from agentic.config import Settings
from agentic.engine.engine import Engine
from agentic.sessions.lifecycle import SessionManager
from agentic.sessions.backend import Store
from agentic.uploads.storage import UploadService

settings_key = web.AppKey("settings", Settings)
store_key = web.AppKey("store", Store)
sessions_key = web.AppKey("sessions", SessionManager)
engine_key = web.AppKey("engine", Engine)
chat_key = web.AppKey("chat", ChatService)
uploads_key = web.AppKey("uploads", UploadService)
metrics_key = web.AppKey("metrics", Metrics)
websockets_key = web.AppKey("websockets", weakref.WeakSet[web.WebSocketResponse])
started_at_key = web.AppKey("started_at", float)
create_limits_key = web.AppKey("create_limits", CreateLimits)
