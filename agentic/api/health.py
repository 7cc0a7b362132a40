"""Operational routes: health, metrics, API docs."""

from __future__ import annotations

import time

import aiohttp_jinja2
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentic import keys
from agentic.api.openapi import openapi_document

routes = web.RouteTableDef()


@routes.get("/health", name="health")
async def health(request: web.Request) -> web.Response:
    engine = request.app[keys.engine_key]
    body = {
        "status": "ok" if engine.ready else ("error" if engine.error else "loading"),
        "model": engine.model_name,
        "gpu_offload": engine.gpu_offload,
        "sessions": request.app[keys.sessions_key].count(),
        "uptime_s": round(time.monotonic() - request.app[keys.started_at_key], 3),
        "engine": engine.stats(),
    }
    if engine.error:
        body["error"] = engine.error
    return web.json_response(body, status=200 if engine.ready else 503)


@routes.get("/metrics", name="metrics")
async def metrics(request: web.Request) -> web.Response:
    body = request.app[keys.metrics_key].render(request.app[keys.sessions_key].count())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json", name="openapi")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@routes.get("/docs", name="docs")
@aiohttp_jinja2.template("docs.html")
async def docs(request: web.Request) -> dict:
    return {"doc": openapi_document()}
