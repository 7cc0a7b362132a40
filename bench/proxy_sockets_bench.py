"""What many idle WebSockets and one huge frame cost client N: 1,000 idle WebSockets (one per
session) held through one proxy for a minute, with the resident memory of the proxy and the
main server and the latency of a POST /sessions through the proxy meanwhile; then the proxy's
peak memory while a 300 MB frame is refused.

    .venv/bin/python bench/proxy_sockets_bench.py [--client 78] [--sockets 1000] [--hold 60] [--frame-mb 300]

Sessions are created on the main server with its creation rate limit raised for the run
(SESSION_CREATE_RATE / SESSION_CREATE_BURST). Every socket is read all along, as a browser
reads it, so the main server's heartbeat keeps it open.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import aiohttp

from common import PYTHON, free_port, percentile, process, rss_kb, table

MIB = 1024 * 1024


def peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


async def keep_reading(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for _ in ws:
        pass


async def post_latencies(http: aiohttp.ClientSession, proxy: str, seconds: float) -> list[float]:
    """POST /sessions through the proxy twice a second for `seconds` (ms each)."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        async with http.post(f"{proxy}/sessions", json={"client_id": "bench"}) as resp:
            assert resp.status == 201, await resp.text()
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.5)
    return out


async def hold_sockets(main: str, proxy: str, pids: dict[str, int], args: argparse.Namespace) -> list[list]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)) as http:
        idle = {name: rss_kb(pid) / 1024 for name, pid in pids.items()}
        before = await post_latencies(http, proxy, 10)
        sessions = []
        for _ in range(args.sockets):
            async with http.post(f"{main}/sessions") as resp:
                assert resp.status == 201, await resp.text()
                sessions.append((await resp.json())["session_id"])
        opened = time.perf_counter()
        sockets = []
        for start in range(0, len(sessions), 100):
            sockets += await asyncio.gather(*(http.ws_connect(f"{proxy.replace('http', 'ws', 1)}/ws?session_id={sid}") for sid in sessions[start:start + 100]))
        open_s = time.perf_counter() - opened
        readers = [asyncio.create_task(keep_reading(ws)) for ws in sockets]
        async with http.get(f"{proxy}/health") as resp:
            relayed = (await resp.json())["websockets"]
        held = await post_latencies(http, proxy, args.hold)
        rss = {name: rss_kb(pid) / 1024 for name, pid in pids.items()}
        still_open = sum(not ws.closed for ws in sockets)
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
    return [
        [f"{args.sockets} WebSockets opened through the proxy", f"{open_s:.1f} s; {relayed} relayed; {still_open} open after {args.hold:.0f} s"],
        ["proxy resident memory, idle / holding them", f"{idle['proxy']:.0f} MB / {rss['proxy']:.0f} MB"],
        ["main server resident memory, idle / holding them", f"{idle['main']:.0f} MB / {rss['main']:.0f} MB"],
        ["POST /sessions via proxy p50 / p95 / max, before", f"{percentile(before, 50):.1f} / {percentile(before, 95):.1f} / {max(before):.1f} ms ({len(before)} POSTs)"],
        [f"POST /sessions via proxy p50 / p95 / max, while held", f"{percentile(held, 50):.1f} / {percentile(held, 95):.1f} / {max(held):.1f} ms ({len(held)} POSTs)"],
    ]


async def huge_frame(main: str, proxy: str, proxy_pid: int, frame_mb: int) -> list[list]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{main}/sessions") as resp:
            sid = (await resp.json())["session_id"]
        before = peak_kb(proxy_pid) / 1024
        async with http.ws_connect(f"{proxy.replace('http', 'ws', 1)}/ws?session_id={sid}") as ws:
            await ws.receive_json()
            sending = asyncio.create_task(ws.send_bytes(bytes(frame_mb * MIB)))
            answer = await ws.receive(timeout=120)
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
    return [[f"proxy peak resident memory, a {frame_mb} MB frame sent", f"{peak_kb(proxy_pid) / 1024:.0f} MB (peak before: {before:.0f} MB); answered {answer.type.name} {answer.data}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client", type=int, default=78)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold the sockets open")
    parser.add_argument("--frame-mb", type=int, default=300)
    args = parser.parse_args()
    port = free_port()
    main_url, proxy_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{8000 + args.client}"
    with tempfile.TemporaryDirectory() as data:
        env = {"LOG_FORMAT": "plain", "DATA_DIR": data, "BACKEND_URL": main_url,
               "SESSION_CREATE_RATE": "1000000", "SESSION_CREATE_BURST": str(args.sockets * 2 + 1000)}
        with process([PYTHON, "-m", "agentic", "serve", "--port", str(port), "--data-dir", data], f"{main_url}/health", env) as server, \
             process([PYTHON, "-m", "agentic", "client", str(args.client)], f"{proxy_url}/health", env) as client:
            rows = asyncio.run(hold_sockets(main_url, proxy_url, {"proxy": client.pid, "main": server.pid}, args))
            rows += asyncio.run(huge_frame(main_url, proxy_url, client.pid, args.frame_mb))
    print(table(["measure", "result"], rows))


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()
