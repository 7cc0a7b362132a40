"""Command line: `python -m agentic serve` runs the main server, `python -m agentic client N` a client."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys
from pathlib import Path

from aiohttp import web

from agentic.config import HEAD_TIMEOUT_S, settings_from_env
from agentic.logs import configure_logging

log = logging.getLogger("agentic")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentic", description="Self-hosted LLM chat server with isolated sessions.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the main server")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, env HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, env PORT)")
    serve.add_argument("--data-dir", type=Path, help="where sessions and uploads live (default data, env DATA_DIR)")
    serve.add_argument("--model", type=Path, dest="model_path", help="GGUF model file (default: the bundled model, env MODEL_PATH)")
    serve.add_argument("--session-timeout", type=float, dest="session_timeout_min", help="idle minutes before a session expires (env SESSION_TIMEOUT)")
    client = commands.add_parser("client", help="run client N: page on 8500+N, proxy on 8000+N")
    client.add_argument("number", type=int, help="client number, 1..99")
    client.add_argument("--host", help="address to bind (default 127.0.0.1, env HOST)")
    client.add_argument("--backend-url", help="main server URL (env BACKEND_URL)")
    return parser


def main(argv: list[str] | None = None) -> int:
    # A fatal signal (SIGILL from a build this CPU cannot run, SIGSEGV in llama.cpp) leaves
    # "Fatal Python error" and every thread's stack on stderr, which deploy.sh sends to the log.
    faulthandler.enable(all_threads=True)
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_env()
    except ValueError as exc:
        print(f"agentic: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_json)
    if args.command == "serve":
        return serve(args, settings)
    from agentic.proxy.run import run_client

    return run_client(args.number, args.host, args.backend_url)


def serve(args: argparse.Namespace, settings) -> int:
    from dataclasses import replace

    from agentic.app import create_app

    settings = settings.with_overrides(host=args.host, port=args.port, data_dir=args.data_dir, session_timeout_min=args.session_timeout_min)
    if args.model_path is not None:
        settings = replace(settings, engine=replace(settings.engine, model_path=args.model_path))
    log.info("serving on http://%s:%d (data in %s)", settings.host, settings.port, settings.data_dir)
    try:
        web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None, access_log=None, shutdown_timeout=15,
                    keepalive_timeout=HEAD_TIMEOUT_S)
    except OSError as exc:
        print(f"agentic: cannot listen on {settings.host}:{settings.port}: {exc.strerror}. "
              f"Is another server running there? Stop it or pass --port.", file=sys.stderr)
        return 1
    return 0
