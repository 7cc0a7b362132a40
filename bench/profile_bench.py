"""Where the CPU goes: agentic and llama-server under `perf record`, in the same realistic rounds.

    .venv/bin/python bench/profile_bench.py [--n 8] [--rounds 2] [--top 8]

Both servers are up together, with the realistic scenario's idle sessions (see chat_bench.py);
each measured round of one peer runs under `perf record -a` (software clock, every process on
the machine, so the benchmark's own client shows too), and the rounds alternate. For each peer
it prints the samples per process and library and the hottest symbols of the server process,
in samples, so two peers doing the same work can be compared kernel by kernel. Needs `perf`
(linux-perf) and permission to record every CPU (root, or kernel.perf_event_paranoid <= 0).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import chat_bench as cb
from common import percentile

from agentic.config import bundled_model_path

SAMPLE_HZ = 2000


def recorded(output: Path, one_round):
    """Run one round under `perf record -a`; the round's result."""
    recorder = subprocess.Popen(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", str(SAMPLE_HZ), "-o", str(output)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # perf is recording
    try:
        return one_round()
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait()


def report(data: Path, sort: str, comm: str | None, top: int) -> str:
    cmd = ["perf", "report", "-i", str(data), "-q", "-n", "--sort", sort] + (["--comm", comm] if comm else [])
    lines = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()
    return "\n".join([line.rstrip() for line in lines if line.strip()][:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--idle", type=int, default=50)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("perf") is None or not cb.llama_server_binary().exists():
        sys.exit("needs perf (apt-get install linux-perf) and bench/.peers (bash bench/setup_peers.sh)")
    model, n = bundled_model_path(), args.n
    with ExitStack() as stack, tempfile.TemporaryDirectory() as out:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        agentic = cb.running(stack, cb.agentic_server(n, data))
        llama = cb.running(stack, cb.llama_server(n, model))
        for count in (1, args.idle):  # warm-up, then the team's idle sessions
            asyncio.run(cb.agentic_round(agentic, count, 8, True))
            asyncio.run(cb.openai_round("llama-srv", llama, count, 8, {"ignore_eos": True}))
        peers = {
            "agentic": ("python", lambda: asyncio.run(cb.agentic_round(agentic, n, args.tokens, True))),
            "llama-srv": ("llama-server", lambda: asyncio.run(cb.openai_round("llama-srv", llama, n, args.tokens, {"ignore_eos": True}))),
        }
        for r in range(args.rounds):
            for peer, (comm, one_round) in peers.items():
                data_file = Path(out) / f"{peer}-{r}.data"
                result = recorded(data_file, one_round)
                print(f"\n== {peer}, round {r + 1}: {result.tok_s:.1f} tok/s, TTFT p95 {percentile(result.ttft_ms, 95):.0f} ms, "
                      f"{result.seconds:.2f} s {result.profile}")
                print("samples by process and library:")
                print(report(data_file, "comm,dso", None, args.top))
                print(f"hottest symbols in {comm} (agentic's process is `python`, as is the benchmark client):")
                print(report(data_file, "sym", comm, args.top))


if __name__ == "__main__":
    main()
