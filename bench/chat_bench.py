"""Concurrent chat throughput and time to first token: agentic against its peers, in one run.

    .venv/bin/python bench/chat_bench.py [--n 1 8 16] [--tokens 128] [--rounds 3]

Peers (bench/setup_peers.sh installs them into bench/.peers):
  raw        a batched decode loop on llama-cpp-python's low-level API, no server: the ceiling
  agentic    this server, N WebSocket sessions
  llama-srv  llama.cpp's own llama-server -np N
  lcp-srv    llama_cpp.server (llama-cpp-python[server])
Every reply is forced to exactly --tokens tokens (end-of-generation banned), with the same
sampler (top-k 40, top-p 0.95, temperature 0.7) and 2 threads. The servers run side by side
and the peers take their rounds in turn (lcp-srv, one request at a time, gets one round).
Also: turn-10 vs turn-1 TTFT with 8 sessions interleaving 10 turns each (agentic and
llama-server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from common import PEERS, PYTHON, free_port, percentile, process, table

from agentic.config import EngineSettings, bundled_model_path

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
_counter = iter(range(10**9))


def conversation() -> list[dict[str, str]]:
    """A system prompt no server has seen, so nobody answers from a prompt cache: the unique
    part comes first, or llama-server would reuse the template's shared opening across requests
    (agentic never shares cached context between sessions)."""
    return [{"role": "system", "content": f"[request {next(_counter)}] You are a helpful assistant."}, {"role": "user", "content": PROMPT}]


CTX_PER_SEQ = 512
TURNS_CTX_PER_SEQ = 2048  # the product's default: ten turns fit without trimming
THREADS = 2


@dataclass
class Result:
    peer: str
    n: int
    tokens: int = 0
    seconds: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


# -- raw ceiling --------------------------------------------------------------------------------
def raw_ceiling(model_path: Path, n: int, max_tokens: int) -> Result:
    from agentic.engine.model import LlamaModel
    from agentic.engine.scheduler import Batch
    from agentic.engine.types import Sampling

    model = LlamaModel(EngineSettings(model_path=model_path, threads=THREADS, parallel=n, ctx_per_session=CTX_PER_SEQ))
    try:
        samplers = [model.new_sampler(Sampling(ignore_eos=True)) for _ in range(n)]
        batch = Batch(model.n_batch, n)
        batch.add(model.tokenize("warm-up")[0], 0, 0, True)  # as the servers are: first decode allocates
        batch.decode(model.ctx)
        model.seq_truncate(0, 0)
        start = time.perf_counter()
        tokens: dict[int, int] = {}
        ttft_ms = []
        positions = [0] * n
        for seq in range(n):  # one prompt per decode (prefill costs the same per token batched or not), chunked to the batch size
            pending = model.tokenize(model.template.render(conversation()))
            while pending:
                chunk, pending = pending[:batch.capacity], pending[batch.capacity:]
                batch.clear()
                for token in chunk:
                    index = batch.add(token, positions[seq], seq, not pending and batch.n == len(chunk) - 1)
                    positions[seq] += 1
                assert batch.decode(model.ctx) == 0
            tokens[seq] = model.sample(samplers[seq], index)  # logits live only until the next decode
            ttft_ms.append((time.perf_counter() - start) * 1000)
        for _ in range(max_tokens - 1):
            batch.clear()
            logits_at = {}
            for seq in range(n):
                logits_at[seq] = batch.add(tokens[seq], positions[seq], seq, True)
                positions[seq] += 1
            assert batch.decode(model.ctx) == 0
            tokens = {seq: model.sample(samplers[seq], index) for seq, index in logits_at.items()}
        end = time.perf_counter()
        for sampler in samplers:
            model.free_sampler(sampler)
        batch.free()
        return Result("raw", n, n * max_tokens, end - start, ttft_ms)
    finally:
        model.close()


# -- agentic ----------------------------------------------------------------------------------------
async def agentic_round(base: str, n: int, max_tokens: int) -> Result:
    async with aiohttp.ClientSession() as http:
        sockets, sids = [], []
        for _ in range(n):
            system, _ = conversation()
            body = {"system_prompt": system["content"], "settings": {"ignore_eos": True, "max_tokens": max_tokens}}
            async with http.post(f"{base}/sessions", json=body) as resp:
                sids.append((await resp.json())["session_id"])
            ws = await http.ws_connect(f"{base.replace('http', 'ws')}/ws?session_id={sids[-1]}", max_msg_size=0)
            await ws.receive_json()
            sockets.append(ws)
        result = Result("agentic", n)

        async def one(ws) -> None:
            sent = time.perf_counter()
            await ws.send_json({"type": "chat", "content": PROMPT, "max_tokens": max_tokens})
            first = None
            while True:
                frame = await ws.receive_json()
                if frame["type"] == "token" and first is None:
                    first = time.perf_counter()
                    result.ttft_ms.append((first - sent) * 1000)
                elif frame["type"] == "done":
                    result.tokens += frame["usage"]["completion_tokens"]
                    return
                elif frame["type"] == "error":
                    raise RuntimeError(frame)

        start = time.perf_counter()
        await asyncio.gather(*(one(ws) for ws in sockets))
        result.seconds = time.perf_counter() - start
        for ws, sid in zip(sockets, sids):
            await ws.close()
            async with http.delete(f"{base}/sessions/{sid}"):  # these users are done: the next round does not evict them to disk
                pass
        return result


# -- OpenAI-style peers ---------------------------------------------------------------------------------
async def content_deltas(http: aiohttp.ClientSession, base: str, body: dict):
    """The text pieces of one streamed /v1/chat/completions answer, as they arrive."""
    async with http.post(f"{base}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            delta = chunk["choices"][0]["delta"].get("content") if chunk.get("choices") else None
            if delta:
                yield delta


async def openai_round(peer: str, base: str, n: int, max_tokens: int, extra: dict) -> Result:
    result = Result(peer, n)
    # force_close: llama-server drops idle keep-alive connections, which aiohttp would try to reuse
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def one() -> None:
            sent = time.perf_counter()
            body = {"messages": conversation(), "max_tokens": max_tokens, "stream": True,
                    "temperature": 0.7, "top_p": 0.95, "top_k": 40, **extra}
            count = 0
            async for _ in content_deltas(http, base, body):
                count += 1
                if count == 1:
                    result.ttft_ms.append((time.perf_counter() - sent) * 1000)
            result.tokens += count

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        result.seconds = time.perf_counter() - start
    return result


def eog_bias(model_path: Path) -> dict[str, float]:
    from agentic.engine.model import LlamaModel

    model = LlamaModel(EngineSettings(model_path=model_path, threads=1, parallel=1, ctx_per_session=64))
    try:
        return {str(t): -100.0 for t in model.end_of_generation_tokens}
    finally:
        model.close()


# -- turn-10 vs turn-1 ---------------------------------------------------------------------------------
async def interleaved_turns_agentic(base: str, sessions: int, turns: int, reply_tokens: int) -> dict[int, list[float]]:
    ttft: dict[int, list[float]] = {t: [] for t in range(1, turns + 1)}
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            async with http.post(f"{base}/sessions", json={"settings": {"ignore_eos": True, "max_tokens": reply_tokens}}) as resp:
                sid = (await resp.json())["session_id"]
            async with http.ws_connect(f"{base.replace('http', 'ws')}/ws?session_id={sid}") as ws:
                await ws.receive_json()
                for turn in range(1, turns + 1):
                    sent = time.perf_counter()
                    await ws.send_json({"type": "chat", "content": f"Turn {turn}: tell me one more fact about lighthouses."})
                    first = None
                    while True:
                        frame = await ws.receive_json()
                        if frame["type"] == "token" and first is None:
                            first = time.perf_counter()
                            ttft[turn].append((first - sent) * 1000)
                        if frame["type"] in ("done", "error"):
                            break
        await asyncio.gather(*(one() for _ in range(sessions)))
    return ttft


async def interleaved_turns_openai(base: str, sessions: int, turns: int, reply_tokens: int) -> dict[int, list[float]]:
    ttft: dict[int, list[float]] = {t: [] for t in range(1, turns + 1)}
    # force_close: llama-server drops idle keep-alive connections, which aiohttp would try to reuse
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def one() -> None:
            history: list[dict] = []
            for turn in range(1, turns + 1):
                history.append({"role": "user", "content": f"Turn {turn}: tell me one more fact about lighthouses."})
                body = {"messages": history, "max_tokens": reply_tokens, "stream": True, "ignore_eos": True, "cache_prompt": True,
                        "temperature": 0.7, "top_p": 0.95, "top_k": 40}
                sent, text = time.perf_counter(), ""
                async for delta in content_deltas(http, base, body):
                    if not text:
                        ttft[turn].append((time.perf_counter() - sent) * 1000)
                    text += delta
                history.append({"role": "assistant", "content": text})
        await asyncio.gather(*(one() for _ in range(sessions)))
    return ttft


# -- orchestration -------------------------------------------------------------------------------------
def agentic_server(n: int, data_dir: str, ctx_per_seq: int = CTX_PER_SEQ):
    port = free_port()
    env = {"N_PARALLEL": str(n), "CTX_PER_SESSION": str(ctx_per_seq), "N_THREADS": str(THREADS), "LOG_FORMAT": "plain", "MAX_QUEUE": "256"}
    return port, process([PYTHON, "-m", "agentic", "serve", "--port", str(port), "--data-dir", data_dir], f"http://127.0.0.1:{port}/health", env)


def llama_server(n: int, model: Path, ctx_per_seq: int = CTX_PER_SEQ):
    port = free_port()
    cmd = [str(PEERS / "bin" / "llama-cpp-server"), "-m", str(model), "--port", str(port), "--ctx-size", str(ctx_per_seq * n), "--", "-np", str(n), "-t", str(THREADS)]
    return port, process(cmd, f"http://127.0.0.1:{port}/health")


def lcp_server(model: Path):
    port = free_port()
    cmd = [str(PEERS / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model), "--port", str(port), "--n_threads", str(THREADS),
           "--n_threads_batch", str(THREADS), "--n_ctx", "2048", "--verbose", "False",
           "--interrupt_requests", "False"]  # its default cuts a running stream when another request arrives
    return port, process(cmd, f"http://127.0.0.1:{port}/v1/models")


def measure_side_by_side(model: Path, n: int, args: argparse.Namespace, have_peers: bool, bias: dict[str, float]) -> dict[str, list[Result]]:
    """Every peer's servers up at once and their rounds taken in turn, so a machine that
    drifts faster or slower over minutes shifts every peer alike."""
    rounds: dict[str, list[Result]] = {}
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        port, server = agentic_server(n, data)
        stack.enter_context(server)
        agentic = f"http://127.0.0.1:{port}"
        asyncio.run(agentic_round(agentic, 1, 8))  # warm-up
        peers = {"raw": lambda: raw_ceiling(model, n, args.tokens), "agentic": lambda: asyncio.run(agentic_round(agentic, n, args.tokens))}
        if have_peers:
            port, server = llama_server(n, model)
            stack.enter_context(server)
            llama = f"http://127.0.0.1:{port}"
            asyncio.run(openai_round("llama-srv", llama, 1, 8, {"ignore_eos": True}))
            peers["llama-srv"] = lambda: asyncio.run(openai_round("llama-srv", llama, n, args.tokens, {"ignore_eos": True}))
        for _ in range(args.rounds):
            for peer, one_round in peers.items():
                rounds.setdefault(peer, []).append(one_round())
    if have_peers and n <= args.lcp_max_n:  # one round: it serves one request at a time
        port, server = lcp_server(model)
        with server:
            rounds["lcp-srv"] = [asyncio.run(openai_round("lcp-srv", f"http://127.0.0.1:{port}", n, args.tokens, {"logit_bias": bias}))]
    return rounds


def merge(results: list[Result]) -> Result:
    merged = Result(results[0].peer, results[0].n)
    for r in results:
        merged.tokens += r.tokens
        merged.seconds += r.seconds
        merged.ttft_ms += r.ttft_ms
    return merged


def run(args: argparse.Namespace) -> None:
    model = bundled_model_path()
    have_peers = (PEERS / "bin" / "llama-cpp-server").exists()
    if not have_peers:
        print("bench/.peers is missing: run bench/setup_peers.sh for llama-server and llama_cpp.server; measuring raw and agentic only\n")
    bias = eog_bias(model)
    results: dict[tuple[str, int], Result] = {}
    for n in args.n:
        rounds = measure_side_by_side(model, n, args, have_peers, bias)
        results.update({(peer, n): merge(peer_rounds) for peer, peer_rounds in rounds.items()})
        print(f"N={n} done", flush=True)

    rows = []
    for (peer, n), r in results.items():
        raw = results[("raw", n)].tok_s
        ls = results.get(("llama-srv", n))
        rows.append([peer, n, r.tokens, round(r.tok_s, 1), round(percentile(r.ttft_ms, 50)), round(percentile(r.ttft_ms, 95)),
                     f"{r.tok_s / raw:.2f}x", f"{r.tok_s / ls.tok_s:.2f}x" if ls else "-"])
    print(f"\nAggregate throughput and TTFT, {args.tokens}-token replies, {THREADS} threads ({os.cpu_count()} cores)")
    print(table(["peer", "N", "tokens", "tok/s", "TTFT p50 ms", "TTFT p95 ms", "vs raw", "vs llama-srv"], sorted(rows, key=lambda r: (r[1], r[0]))))

    if args.turns:
        print(f"\nTurn-{args.turns} vs turn-1 TTFT, 8 sessions interleaving, {args.turn_tokens}-token replies")
        rows = []
        with tempfile.TemporaryDirectory() as data:
            port, server = agentic_server(8, data, ctx_per_seq=TURNS_CTX_PER_SEQ)
            with server:
                ttft = asyncio.run(interleaved_turns_agentic(f"http://127.0.0.1:{port}", 8, args.turns, args.turn_tokens))
                rows.append(["agentic", round(percentile(ttft[1], 50)), round(percentile(ttft[args.turns], 50)), f"{percentile(ttft[args.turns], 50) / percentile(ttft[1], 50):.2f}x"])
        if have_peers:
            port, server = llama_server(8, model, ctx_per_seq=TURNS_CTX_PER_SEQ)
            with server:
                ttft = asyncio.run(interleaved_turns_openai(f"http://127.0.0.1:{port}", 8, args.turns, args.turn_tokens))
                rows.append(["llama-srv", round(percentile(ttft[1], 50)), round(percentile(ttft[args.turns], 50)), f"{percentile(ttft[args.turns], 50) / percentile(ttft[1], 50):.2f}x"])
        print(table(["peer", "turn-1 TTFT p50 ms", f"turn-{args.turns} TTFT p50 ms", "ratio"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lcp-max-n", type=int, default=16, help="largest N to run llama_cpp.server at (it serves one request at a time)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--turn-tokens", type=int, default=32)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
