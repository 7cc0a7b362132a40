"""Command line: `python -m agentic serve` runs the main server, `python -m agentic client N` a client,
`python -m agentic store copy --from URL --to URL` moves sessions into PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
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
    store = commands.add_parser("store", help="manage the session store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    copy = store_commands.add_parser("copy", help="copy every session into another store; run again, it copies only what is missing")
    copy.add_argument("--from", dest="source", required=True, help="sqlite:///PATH (relative) or sqlite:////PATH (absolute)")
    copy.add_argument("--to", dest="target", required=True, help="postgresql://USER@HOST:PORT/DB")
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
    if args.command == "store":
        return store_copy(args.source, args.target)
    from agentic.proxy.run import run_client

    return run_client(args.number, args.host, args.backend_url)


def serve(args: argparse.Namespace, settings) -> int:
    from dataclasses import replace

    from agentic.app import create_app

    from agentic.sessions.factory import check_url

    settings = settings.with_overrides(host=args.host, port=args.port, data_dir=args.data_dir, session_timeout_min=args.session_timeout_min)
    try:
        if settings.database_url:
            check_url(settings.database_url)
    except ValueError as exc:
        print(f"agentic: {exc}", file=sys.stderr)
        return 2
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


def store_copy(source_url: str, target_url: str) -> int:
    from agentic.sessions.copy import copy_store
    from agentic.sessions.factory import SQLITE_PREFIX, check_url, open_store
    from agentic.sessions.pg_store import PostgresStore, asyncpg

    try:
        check_url(source_url)
        check_url(target_url)
    except ValueError as exc:
        print(f"agentic: {exc}", file=sys.stderr)
        return 2
    source, target = open_store(source_url, Path()), open_store(target_url, Path())
    if not isinstance(target, PostgresStore):
        print("agentic: store copy --to must be a postgresql:// URL", file=sys.stderr)
        return 2
    if source_url.startswith(SQLITE_PREFIX) and not Path(source_url[len(SQLITE_PREFIX):]).is_file():
        print(f"agentic: no SQLite database at {source_url[len(SQLITE_PREFIX):]}", file=sys.stderr)
        return 2

    async def run() -> str:
        await source.open()
        try:
            await target.open()
            try:
                return str(await copy_store(source, target))
            finally:
                await target.close()
        finally:
            await source.close()

    try:
        print(asyncio.run(run()))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"agentic: store copy failed: {exc}", file=sys.stderr)
        return 1
    return 0
