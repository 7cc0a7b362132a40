"""Session-creation limits and the listing at a few thousand sessions, against a real server.

    .venv/bin/python bench/limits_bench.py [--creates 1000] [--sessions 2200] [--code DIR]

1. A loop of `--creates` POST /sessions from one address with the default limits: how many
   are created, how many refused (429), the Retry-After and the time the loop took.
2. A second server with the limits lifted holds `--sessions` sessions: GET /sessions time
   (p50/p99 of 40 listings), and a GET /health's p99 latency while 8 listings run at once,
   which shows how long a listing holds the event loop.
`--code` runs the server from another checkout (e.g. the commit before the limits and the
pagination: `git archive <rev> | tar -x -C DIR`) to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import aiohttp

from common import PYTHON, ROOT, UNLIMITED_SESSIONS, free_port, percentile, process, table



async def create_loop(base: str, creates: int) -> None:
    statuses: dict[int, int] = {}
    retry_after = set()
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        for _ in range(creates):
            async with http.post(f"{base}/sessions") as resp:
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 429:
                    retry_after.add(resp.headers.get("Retry-After"))
        took = time.perf_counter() - start
    print(f"loop of {creates} creates from one address, default limits: {statuses.get(201, 0)} created, "
          f"{statuses.get(429, 0)} refused with 429 (Retry-After {sorted(retry_after)} s), other {statuses.keys() - {201, 429}}; "
          f"{took:.2f} s")


async def listing_times(base: str, sessions: int) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        async def create(_: int) -> None:
            async with http.post(f"{base}/sessions", json={"client_id": "bench", "title": "a title"}) as resp:
                assert resp.status == 201, await resp.text()

        for start in range(0, sessions, 200):
            await asyncio.gather(*(create(i) for i in range(start, min(sessions, start + 200))))

        async def timed(path: str) -> float:
            t = time.perf_counter()
            async with http.get(f"{base}{path}") as resp:
                assert resp.status in (200, 503)
                await resp.read()
            return (time.perf_counter() - t) * 1000

        listing = [await timed("/sessions") for _ in range(40)]
        async with http.get(f"{base}/sessions") as resp:
            shown = len((await resp.json())["sessions"])
        health: list[float] = []

        async def probe() -> None:
            for _ in range(40):
                health.append(await timed("/health"))
                await asyncio.sleep(0.005)

        await asyncio.gather(probe(), *(timed("/sessions") for _ in range(8)))
    print(table(["sessions", "listed per page", "GET /sessions p50 ms", "p99 ms", "GET /health p99 ms during 8 listings"], [
        [sessions, shown, round(percentile(listing, 50), 2), round(percentile(listing, 99), 2), round(percentile(health, 99), 2)],
    ]))


def serve(code: str, port: int, data: str, env: dict[str, str]):
    launch = f"import sys; sys.path.insert(0, {code!r}); from agentic.cli import main; sys.exit(main(sys.argv[1:]))"
    return process([PYTHON, "-c", launch, "serve", "--port", str(port), "--data-dir", data], f"http://127.0.0.1:{port}/health",
                   {"LOG_FORMAT": "plain", **env})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=2200)
    parser.add_argument("--code", default=str(ROOT), help="checkout whose agentic package to run")
    args = parser.parse_args()
    code = os.path.abspath(args.code)
    port = free_port()
    with tempfile.TemporaryDirectory() as data, serve(code, port, data, {}):
        asyncio.run(create_loop(f"http://127.0.0.1:{port}", args.creates))
    port = free_port()
    with tempfile.TemporaryDirectory() as data, serve(code, port, data, UNLIMITED_SESSIONS):
        asyncio.run(listing_times(f"http://127.0.0.1:{port}", args.sessions))


if __name__ == "__main__":
    main()
