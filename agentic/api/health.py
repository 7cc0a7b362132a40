"""Operational routes: health, metrics, API docs."""

from __future__ import annotations

import time

import aiohttp_jinja2
from aiohttp import web

from agentic import keys
from agentic.api.metrics import metrics_view
from agentic.api.openapi import openapi_document

routes = web.RouteTableDef()


@routes.get("/health", name="health")
async def health(request: web.Request) -> web.Response:
    engine = request.app[keys.engine_key]
    body = {
        "status": "ok" if engine.ready else ("error" if engine.load_error else "loading"),
        "model": engine.model_name,
        "gpu_offload": engine.gpu_offload,
        "sessions": len(request.app[keys.store_key].sessions),
        "uptime_s": round(time.monotonic() - request.app[keys.started_at_key], 3),
        "engine": engine.stats(),
    }
    if engine.load_error:
        body["error"] = engine.load_error
    return web.json_response(body, status=200 if engine.ready else 503)


routes.get("/metrics", name="metrics")(metrics_view)


@routes.get("/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/docs", name="docs")
@aiohttp_jinja2.template("docs.html")
async def docs(request: web.Request) -> dict:
    return {"doc": openapi_document()}
