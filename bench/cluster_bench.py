"""Chat through HAProxy in front of two main servers, against one main server alone: N WebSocket
sessions each send one turn at the same moment (sessions stay, as on a team's server); the
figures are chat_bench's for its agentic peer (aggregate tok/s, TTFT p50/p95, medians over rounds).

    .venv/bin/python bench/cluster_bench.py [--n 16] [--tokens 128] [--rounds 3]

Starts `./deploy.sh cluster 2` (native: PostgreSQL, two main servers, HAProxy) in a temporary
DATA_DIR on free ports, then one main server alone (SQLite); both with chat_bench's settings
per server (N_PARALLEL=N, 2 threads). On a 2-core machine the two servers share the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from chat_bench import CTX_PER_SEQ, THREADS, Summary, agentic_round, agentic_server
from common import ROOT, UNLIMITED_SESSIONS, free_port, table


def free_port_pair() -> int:
    """A free port whose next one is free too (the cluster's main servers take BASE, BASE+1)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two free ports in a row")


@contextmanager
def cluster(n: int) -> Iterator[str]:
    root = Path(tempfile.mkdtemp(prefix="agentic-cluster-bench-"))
    root.chmod(0o755)  # PostgreSQL runs as the postgres user
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(root / "data"), "PORT": str(port), "PG_PORT": str(free_port()),
           "CLUSTER_BASE_PORT": str(free_port_pair()), "N_PARALLEL": str(n), "CTX_PER_SESSION": str(CTX_PER_SEQ),
           "N_THREADS": str(THREADS), "LOG_FORMAT": "plain", "MAX_QUEUE": "256", **UNLIMITED_SESSIONS}
    deploy = str(ROOT / "deploy.sh")
    try:
        subprocess.run([deploy, "cluster", "2", "--native"], env=env, check=True, capture_output=True, timeout=900)
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([deploy, "stop", "all", "--native"], env=env, capture_output=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def one_server(n: int) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as data:
        port, server = agentic_server(n, data)
        with server:
            yield f"http://127.0.0.1:{port}"


def measure(base: str, n: int, args: argparse.Namespace, label: str) -> Summary:
    asyncio.run(agentic_round(base, 2, 8, keep=True))  # warm-up: a session on each server
    results = []
    for _ in range(args.rounds):
        result = asyncio.run(agentic_round(base, n, args.tokens, keep=True))
        result.peer = label
        results.append(result)
        print(f"{label} N={n}: {result.tok_s:.1f} tok/s", flush=True)
    return Summary.of(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    summaries = []
    with cluster(args.n) as base:
        summaries.append(measure(base, args.n, args, "haproxy + 2 servers"))
    with one_server(args.n) as base:
        summaries.append(measure(base, args.n, args, "1 server"))
    print(f"\n{args.tokens}-token replies, {THREADS} threads per server ({os.cpu_count()} cores), medians over {args.rounds} rounds")
    print(table(["setup", "N", "tok/s", "TTFT p50 ms", "TTFT p95 ms"], [[s.peer, s.n, round(s.tok_s, 1), round(s.p50), round(s.p95)] for s in summaries]))
    print(f"\nload average: {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
