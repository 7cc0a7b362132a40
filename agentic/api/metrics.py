"""Prometheus metrics, one registry per app so tests and apps never share counters."""

from __future__ import annotations

import time
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentic import keys


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("agentic_sessions_active", "Sessions currently stored", registry=r)
        self.sessions_created = Counter("agentic_sessions_created", "Sessions created", registry=r)
        self.sessions_expired = Counter("agentic_sessions_expired", "Sessions removed by expiry", registry=r)
        self.websockets = Gauge("agentic_websockets_connected", "Open WebSocket connections", registry=r)
        self.requests = Counter("agentic_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "agentic_http_request_seconds", "HTTP request latency", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.tokens_generated = Counter("agentic_tokens_generated", "Tokens generated", registry=r)
        self.tokens_prefilled = Counter("agentic_tokens_prefilled", "Prompt tokens decoded", registry=r)
        self.turns = Counter("agentic_turns", "Chat turns finished", ["finish_reason"], registry=r)
        self.ttft = Histogram(
            "agentic_time_to_first_token_seconds", "Time to first token", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.queue_depth = Gauge("agentic_engine_queue_depth", "Turns waiting for the model", registry=r)
        self.active_turns = Gauge("agentic_engine_active_turns", "Turns being decoded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    metrics = request.app[keys.metrics_key]
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_label(request)
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[keys.metrics_key]
    store = request.app[keys.store_key]
    metrics.sessions_active.set(len(store.sessions))
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
