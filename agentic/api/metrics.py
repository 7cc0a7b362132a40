"""Prometheus metrics, one registry per app so tests and apps never share counters. The
domain code knows nothing of them: `watch` subscribes to what sessions and chat report."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentic.chat.service import ChatService
from agentic.sessions.lifecycle import SessionManager
from agentic.web.errors import Handler, http_status


class Metrics:
    def __init__(self, server: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        if server:  # the OpenMetrics way to label a whole target: target_info{server="..."} 1
            r.set_target_info({"server": server})
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

    def watch(self, sessions: SessionManager, chat: ChatService) -> None:
        sessions.on_created(lambda _record: self.sessions_created.inc())
        sessions.on_expired(lambda _record: self.sessions_expired.inc())
        chat.on_turn_finished(self.observe_turn)

    def observe_turn(self, usage: dict[str, Any]) -> None:
        self.turns.labels(usage["finish_reason"]).inc()
        self.tokens_generated.inc(usage.get("completion_tokens", 0))
        self.tokens_prefilled.inc(usage.get("prefill_tokens", 0))
        if usage.get("completion_tokens"):
            self.ttft.observe(usage["ttft_ms"] / 1000)

    def render(self, sessions_held: int) -> bytes:
        self.sessions_active.set(sessions_held)
        return generate_latest(self.registry)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: Metrics) -> web.middleware:
    """Middleware: count each request by route, method and the status it is answered with."""

    @web.middleware
    async def count_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except Exception as exc:
            status = http_status(exc)
            raise
        finally:
            route = route_label(request)
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - started)

    return count_request
