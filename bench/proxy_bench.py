"""Proxy overhead: session GETs/s, WebSocket frame round trips and token latency of real
chats (time to first token, gap between tokens) through client N versus direct to the main
server, in the same run.

    .venv/bin/python bench/proxy_bench.py [--client 77] [--requests 2000] [--rounds 3] [--clients 1 10 50] [--pings 500] [--chats 10]

With one client the GET ratio is the cost of the extra hop; with 50 every process is
saturated on this 2-core machine (bench client, proxy and main server share the cores), so
latency there measures throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

import aiohttp

from common import PYTHON, free_port, percentile, process, rss_kb, table
from sessions_bench import hammer


async def ping_latencies(url: str, count: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive_json()
        for _ in range(count):
            t = time.perf_counter()
            await ws.send_json({"type": "ping"})
            await ws.receive_json()
            out.append((time.perf_counter() - t) * 1000)
    return out


async def token_latencies(main: str, base: str, max_tokens: int) -> tuple[float, list[float]]:
    """One chat on a fresh session through `base`: time to first token and the gaps between tokens (ms)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{main}/sessions", json={"settings": {"ignore_eos": True}}) as resp:
            sid = (await resp.json())["session_id"]
        async with http.ws_connect(f"{base.replace('http', 'ws')}/ws?session_id={sid}") as ws:
            await ws.receive_json()
            sent = time.perf_counter()
            await ws.send_json({"type": "chat", "content": "Tell me about lighthouses.", "max_tokens": max_tokens})
            arrivals = []
            while (frame := await ws.receive_json())["type"] != "done":
                if frame["type"] == "token":
                    arrivals.append(time.perf_counter())
        async with http.delete(f"{main}/sessions/{sid}"):
            pass
    return (arrivals[0] - sent) * 1000, [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]


async def token_rows(main: str, proxy: str, chats: int) -> list[list]:
    ttft: dict[str, list[float]] = {main: [], proxy: []}
    gaps: dict[str, list[float]] = {main: [], proxy: []}
    for _ in range(chats):  # alternating, as above
        for base in (main, proxy):
            first, between = await token_latencies(main, base, 24)
            ttft[base].append(first)
            gaps[base] += between
    return [[name, "-", "-", round(percentile(values[main], 50), 2), round(percentile(values[proxy], 50), 2),
             f"{percentile(values[proxy], 50) / percentile(values[main], 50):.2f}x"]
            for name, values in (("WS time to first token", ttft), ("WS gap between tokens", gaps))]


async def run(main: str, proxy: str, args: argparse.Namespace) -> list[list]:
    async with aiohttp.ClientSession() as http, http.post(f"{main}/sessions") as resp:
        sid = (await resp.json())["session_id"]

    async def get_from(base, clients):
        async def get(http, i):
            async with http.get(f"{base}/sessions/{sid}", headers={"x-session-id": sid}) as r:
                assert r.status == 200
                await r.read()
        return await hammer(base, clients, args.requests, get)

    rows = []
    for clients in args.clients:
        direct_rate, direct_lat, proxy_rate, proxy_lat = 0.0, [], 0.0, []
        for _ in range(args.rounds):  # alternating, so drift of the machine hits both alike
            rate, lat = await get_from(main, clients)
            direct_rate, direct_lat = direct_rate + rate / args.rounds, direct_lat + lat
            rate, lat = await get_from(proxy, clients)
            proxy_rate, proxy_lat = proxy_rate + rate / args.rounds, proxy_lat + lat
        rows.append([f"GET /sessions/{{id}}, {clients} clients", round(direct_rate), round(proxy_rate), round(percentile(direct_lat, 50), 2),
                     round(percentile(proxy_lat, 50), 2), f"{percentile(proxy_lat, 50) / percentile(direct_lat, 50):.2f}x"])
    direct_ws = await ping_latencies(f"{main.replace('http', 'ws')}/ws?session_id={sid}", args.pings)
    proxy_ws = await ping_latencies(f"{proxy.replace('http', 'ws')}/ws?session_id={sid}", args.pings)
    rows.append(["WS frame round trip", "-", "-", round(percentile(direct_ws, 50), 3), round(percentile(proxy_ws, 50), 3),
                 f"+{(percentile(proxy_ws, 50) - percentile(direct_ws, 50)) / 2:.3f} ms/frame"])
    return rows + await token_rows(main, proxy, args.chats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", type=int, default=77)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50], help="concurrent clients for the GET rounds")
    parser.add_argument("--chats", type=int, default=10, help="chats with the real model each way, for token latency")
    parser.add_argument("--pings", type=int, default=500)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        env = {"LOG_FORMAT": "plain", "DATA_DIR": data, "BACKEND_URL": f"http://127.0.0.1:{port}"}
        with process([PYTHON, "-m", "agentic", "serve", "--port", str(port), "--data-dir", data], f"http://127.0.0.1:{port}/health", env), \
             process([PYTHON, "-m", "agentic", "client", str(args.client)], f"http://127.0.0.1:{8000 + args.client}/health", env) as client:
            rows = asyncio.run(run(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{8000 + args.client}", args))
            client_rss = rss_kb(client.pid) / 1024
    print(table(["operation", "direct /s", "proxy /s", "direct p50 ms", "proxy p50 ms", "proxy vs direct"], rows))
    print(f"\nclient {args.client} (frontend + proxy) resident memory: {client_rss:.0f} MB (goal < 60 MB)")


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()
