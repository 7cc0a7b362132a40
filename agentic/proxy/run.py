"""Runs client N: both apps in one process, sharing their connection pools to the main server."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import sys
from dataclasses import replace
from typing import Any

from aiohttp import web

from agentic.config import HEAD_TIMEOUT_S, client_settings_from_env
from agentic.proxy.app import create_client_apps

log = logging.getLogger("agentic.proxy")

MAX_CLIENT = 99


def validate_client_number(number: int, main_port: int = 8000) -> str | None:
    """Why `number` cannot be a client, or None when it can."""
    if not 1 <= number <= MAX_CLIENT:
        return f"client number must be between 1 and {MAX_CLIENT}, got {number}"
    if 8000 + number == main_port or 8500 + number == main_port:
        return f"client {number} would use the main server's port {main_port}"
    return None


def runner_options(head_timeout_s: float = HEAD_TIMEOUT_S) -> dict[str, Any]:
    """How both ports are served. aiohttp's keep-alive timer is its only deadline for a request
    head (from a connection's start or its previous answer), so it is kept short."""
    return {"access_log": None, "shutdown_timeout": 5, "keepalive_timeout": head_timeout_s}


def run_client(number: int, host: str | None = None, backend_url: str | None = None) -> int:
    problem = validate_client_number(number)
    if problem:
        print(f"agentic: {problem}", file=sys.stderr)
        return 2
    settings = client_settings_from_env(number)
    if host:
        settings = replace(settings, host=host)
    if backend_url:
        settings = replace(settings, backend_url=backend_url.rstrip("/"))
    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0


async def _serve(settings) -> int:
    proxy, frontend = create_client_apps(settings)
    runners = [web.AppRunner(app, **runner_options()) for app in (proxy, frontend)]
    ports = [settings.proxy_port, settings.frontend_port]
    try:
        for runner, port in zip(runners, ports):
            await runner.setup()
            try:
                await web.TCPSite(runner, settings.host, port).start()
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be opened ({exc.strerror})"
                print(f"agentic: port {port} on {settings.host} {reason}. Stop what uses it "
                      f"(`./deploy.sh status`, `ss -ltnp | grep :{port}`) or pick another client number.", file=sys.stderr)
                return 1
        log.info("client %d (%s): page http://%s:%d, proxy http://%s:%d -> %s", settings.number, settings.client_id,
                 settings.host, settings.frontend_port, settings.host, settings.proxy_port, settings.backend_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
