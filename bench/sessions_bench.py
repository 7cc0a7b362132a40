"""Session operations against a running main server: creates/s and gets/s with 50 concurrent
clients (p50/p99 latency), and resident memory per stored idle session, for each store.

    .venv/bin/python bench/sessions_bench.py [--clients 50] [--requests 5000] [--idle 10000] [--store sqlite postgresql]
Starts its own server (the bundled model loaded, as in production) in a temporary data dir; for
PostgreSQL, a local PostgreSQL server of its own too (Debian's binaries, as the tests start it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from typing import Iterator

import aiohttp

from common import PYTHON, ROOT, UNLIMITED_SESSIONS, free_port, percentile, process, rss_kb, table

sys.path.insert(0, str(ROOT))
from tests.postgres import PostgresServer  # noqa: E402  (the same server the store tests start)


async def hammer(base: str, clients: int, requests: int, make_request) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(requests))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as http:
        async def worker() -> None:
            for i in counter:
                t = time.perf_counter()
                await make_request(http, i)
                latencies.append((time.perf_counter() - t) * 1000)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return requests / (time.perf_counter() - start), latencies


async def run(base: str, pid: int, args: argparse.Namespace, store: str) -> None:
    ids: list[str] = []

    async def create(http, i):
        async with http.post(f"{base}/sessions", json={"client_id": "bench"}) as resp:
            assert resp.status == 201
            ids.append((await resp.json())["session_id"])

    async def get(http, i):
        sid = ids[i % len(ids)]
        async with http.get(f"{base}/sessions/{sid}", headers={"x-session-id": sid}) as resp:
            assert resp.status == 200
            await resp.read()

    creates, create_lat = await hammer(base, args.clients, args.requests, create)
    gets, get_lat = await hammer(base, args.clients, args.requests, get)
    print(table(["store", "operation", "per s", "p50 ms", "p99 ms", "goal per s"], [
        [store, "create", round(creates), round(percentile(create_lat, 50), 2), round(percentile(create_lat, 99), 2), 1000],
        [store, "get", round(gets), round(percentile(get_lat, 50), 2), round(percentile(get_lat, 99), 2), 3000],
    ]))
    before = rss_kb(pid)
    await hammer(base, args.clients, args.idle, create)
    await asyncio.sleep(2)
    after = rss_kb(pid)
    per = (after - before) * 1024 / args.idle
    print(f"\n{store}: resident memory: {before / 1024:.0f} MB -> {after / 1024:.0f} MB for {args.idle} more idle sessions: "
          f"{per / 1024:.1f} KB per session (goal <= 50 KB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--store", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    args = parser.parse_args()
    for store in args.store:
        port = free_port()
        with tempfile.TemporaryDirectory() as data, database_url(store) as url:
            env = {"LOG_FORMAT": "plain", **UNLIMITED_SESSIONS, **({"DATABASE_URL": url} if url else {})}
            with process([PYTHON, "-m", "agentic", "serve", "--port", str(port), "--data-dir", data],
                         f"http://127.0.0.1:{port}/health", env) as server:
                asyncio.run(run(f"http://127.0.0.1:{port}", server.pid, args, store))


@contextlib.contextmanager
def database_url(store: str) -> Iterator[str | None]:
    """None for SQLite (the default in the data dir), else a fresh local PostgreSQL's URL."""
    if store == "sqlite":
        yield None
        return
    server = PostgresServer(durable=True)
    server.start()
    try:
        yield asyncio.run(server.new_database())
    finally:
        server.stop()


if __name__ == "__main__":
    main()
