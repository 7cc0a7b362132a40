"""Concurrent chat throughput and time to first token: agentic against its peers, in one run.

    .venv/bin/python bench/chat_bench.py [--n 8 16] [--tokens 128] [--rounds 3] [--scenarios realistic empty shared turns]

Scenarios:
  realistic  (the headline) a team's server: sessions stay after their turn, 50 idle sessions
             (one turn each) exist before the measured rounds, and every round N new sessions
             with prompts no server has seen send one turn each at the same moment
  empty      every round starts from empty slots (its sessions are deleted afterwards)
  steady     a team at work: N people each send --steady-turns turns, each after a pause
             (exponential, mean 1 s) and with a reply of 16-128 tokens (seeded: every peer gets
             the same people), so turns start and end at all times; earlier rounds' sessions stay
  shared     8 sessions whose conversations start with one 500-token system prompt (one such
             session ran before), one turn each at the same moment
  turns      turn-10 vs turn-1 TTFT, 8 sessions interleaving 10 turns each; --rounds rounds, peers in
             turn (new sessions each round, set up before turn 1, which all eight send together),
             medians over rounds; each turn after the first is sent as soon as the reply is in, or
             --turn-pause seconds later (people reading it); each message begins with words of its own
  openai     (not by default) streamed /v1/chat/completions, agentic (each session's own turn,
             its id as the key) vs llama-server's, empty slots; run it with --n 1 8
  file       (not by default) TTFT of turns 2 and 3 in a session with an uploaded 40-passage file,
             for this tree and --server-src (another checkout, to compare before a change)
Peers (bench/setup_peers.sh installs them into bench/.peers):
  raw        a batched decode loop on llama-cpp-python's low-level API, no server: the ceiling (empty)
  agentic    this server, N WebSocket sessions
  agentic-src  the agentic of another checkout (--server-src DIR; realistic, steady, turns, file), to
             measure a change against what it changes in the same rounds
  llama-srv  llama.cpp's own llama-server -np N
  lcp-srv    llama_cpp.server (llama-cpp-python[server]), one round (empty)
Every reply is forced to exactly --tokens tokens (end-of-generation banned), with the same
sampler (top-k 40, top-p 0.95, temperature 0.7) and 2 threads. The servers run side by side
and the peers take their rounds in turn; each figure is the median over rounds of that
round's aggregate tok/s, TTFT p50 and TTFT p95. Each round also prints its burst (until every
turn has its second token) and step time after it, and each peer's round-by-round ratios to
llama-server's round of the same cycle, which a machine drifting between cycles moves less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import aiohttp

from common import PEERS, PYTHON, UNLIMITED_SESSIONS, free_port, percentile, process, table

from agentic.config import EngineSettings, bundled_model_path

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
# About 500 tokens: one assistant persona for a whole team.
SHARED_SYSTEM = " ".join([
    "You are Harbor, the assistant of the Northwind Maritime Museum's visitor team.",
    "You answer questions from staff about exhibitions, opening hours, tickets, school visits, accessibility, the archive and the lighthouse tours.",
    "Be accurate and brief; when you are unsure, say so and point to the front desk.",
] * 8 + ["Never invent prices or dates."])
_counter = iter(range(10**9))


def unique() -> str:
    return f"[request {next(_counter)}]"


def conversation() -> list[dict[str, str]]:
    """A system prompt no server has seen, so nobody answers from a prompt cache: the unique
    part comes first, or every server would reuse the template's shared opening."""
    return [{"role": "system", "content": f"{unique()} You are a helpful assistant."}, {"role": "user", "content": PROMPT}]


def shared_conversation() -> list[dict[str, str]]:
    """The team's persona, then a message no server has seen."""
    return [{"role": "system", "content": SHARED_SYSTEM}, {"role": "user", "content": f"{unique()} {PROMPT}"}]


CTX_PER_SEQ = 1024
TURNS_CTX_PER_SEQ = 2048  # the product's default: ten turns fit without trimming
STEADY_PAUSE_S = 1.0
# Quiet after every round, so that what a server does once its turns are over (agentic computes
# the closing tokens of finished replies while idle) never runs during another peer's round.
SETTLE_S = 0.5
STEADY_REPLY_TOKENS = (16, 128)
THREADS = 2


@dataclass
class Result:
    peer: str
    n: int
    tokens: int = 0
    seconds: float = 0.0
    ttft_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    token_times: list[list[float]] = field(default_factory=list)  # each turn's, as its frames or chunks arrived
    # agentic only: where the inference thread's time went during the round (see engine_profile)
    profile: str = ""

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    def phases(self) -> str:
        """The round in two parts: its burst (until every turn has its second token, so its
        prompts are all done) and the step time after it (median gap between tokens from each
        turn's 20th on, when every turn is decoding)."""
        seconds = [times[1] for times in self.token_times if len(times) > 1]
        gaps = [b - a for times in self.token_times for a, b in zip(times[20:], times[21:])]
        if not seconds or not gaps:
            return "-"
        return f"burst {(max(seconds) - self.started) * 1000:.0f} ms, then {statistics.median(gaps) * 1000:.1f} ms/step"


@dataclass
class Summary:
    """Medians over rounds of each round's figures."""
    peer: str
    n: int
    rounds: int
    tok_s: float
    p50: float
    p95: float

    @classmethod
    def of(cls, results: list[Result]) -> "Summary":
        return cls(results[0].peer, results[0].n, len(results), statistics.median(r.tok_s for r in results),
                   statistics.median(percentile(r.ttft_ms, 50) for r in results), statistics.median(percentile(r.ttft_ms, 95) for r in results))


# -- raw ceiling --------------------------------------------------------------------------------
def raw_ceiling(model_path: Path, n: int, max_tokens: int) -> Result:
    from agentic.engine.batch import Batch
    from agentic.engine.model import LlamaModel
    from agentic.engine.types import Sampling

    model = LlamaModel(EngineSettings(model_path=model_path, threads=THREADS, parallel=n, ctx_per_session=CTX_PER_SEQ, kv_budget_mb=64))
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
        for seq in range(n):  # one prompt per decode, chunked to the batch size
            pending = model.tokenize_chat(conversation())[1]
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
async def agentic_round(base: str, n: int, max_tokens: int, keep: bool = False, make: Callable[[], list[dict]] = conversation) -> Result:
    """N new sessions, one turn each sent at once; `keep` leaves them idle afterwards (a team's server)."""
    async with aiohttp.ClientSession() as http:
        sockets, sids = [], []
        for _ in range(n):
            system, user = make()
            body = {"system_prompt": system["content"], "settings": {"ignore_eos": True, "max_tokens": max_tokens}}
            async with http.post(f"{base}/sessions", json=body) as resp:
                sids.append((await resp.json())["session_id"])
            ws = await http.ws_connect(f"{base.replace('http', 'ws')}/ws?session_id={sids[-1]}", max_msg_size=0)
            await ws.receive_json()
            sockets.append((ws, user["content"]))
        result = Result("agentic", n)

        async def one(ws, content: str) -> None:
            sent = time.perf_counter()
            await ws.send_json({"type": "chat", "content": content, "max_tokens": max_tokens})
            times = []
            result.token_times.append(times)
            while True:
                frame = await ws.receive_json()
                if frame["type"] == "token":
                    times.append(time.perf_counter())
                    if len(times) == 1:
                        result.ttft_ms.append((times[0] - sent) * 1000)
                elif frame["type"] == "done":
                    result.tokens += frame["usage"]["completion_tokens"]
                    return
                elif frame["type"] == "error":
                    raise RuntimeError(frame)

        before = await engine_stats(http, base)
        result.started = time.perf_counter()
        await asyncio.gather(*(one(ws, content) for ws, content in sockets))
        result.seconds = time.perf_counter() - result.started
        result.profile = engine_profile(before, await engine_stats(http, base), result.seconds)
        for (ws, _), sid in zip(sockets, sids):
            await ws.close()
            if not keep:
                async with http.delete(f"{base}/sessions/{sid}"):
                    pass
        return result


async def engine_stats(http: aiohttp.ClientSession, base: str) -> dict:
    async with http.get(f"{base}/health") as resp:
        return (await resp.json())["engine"]


def engine_profile(before: dict, after: dict, seconds: float) -> str:
    """The round's wall time split: inside llama_decode, waiting for the event loop to take a
    step's events, the rest of the inference thread's work, and time it had no turn to run."""
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in ("decode_s", "handoff_s", "busy_s", "steps", "turns_moved")}
    other = delta["busy_s"] - delta["decode_s"] - delta["handoff_s"]
    idle = seconds - delta["busy_s"]
    return (f"{delta['steps']} steps, decode {delta['decode_s'] / seconds:.0%}, handoff {delta['handoff_s'] / seconds:.0%}, "
            f"scheduler {other / seconds:.0%}, no turn {idle / seconds:.0%}, {delta['decode_s'] * 1000 / max(1, delta['steps']):.1f} ms/decode, "
            f"{delta['turns_moved']} turns moved")


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


async def openai_round(peer: str, base: str, n: int, max_tokens: int, extra: dict, make: Callable[[], list[dict]] = conversation) -> Result:
    result = Result(peer, n)
    # force_close: llama-server drops idle keep-alive connections, which aiohttp would try to reuse
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def one(messages: list[dict]) -> None:
            sent = time.perf_counter()
            body = {"messages": messages, "max_tokens": max_tokens, "stream": True,
                    "temperature": 0.7, "top_p": 0.95, "top_k": 40, **extra}
            times = []
            result.token_times.append(times)
            async for _ in content_deltas(http, base, body):
                times.append(time.perf_counter())
                if len(times) == 1:
                    result.ttft_ms.append((times[0] - sent) * 1000)
            result.tokens += len(times)

        conversations = [make() for _ in range(n)]
        result.started = time.perf_counter()
        await asyncio.gather(*(one(messages) for messages in conversations))
        result.seconds = time.perf_counter() - result.started
    return result


def eog_bias(model_path: Path) -> dict[str, float]:
    from agentic.engine.model import LlamaModel

    model = LlamaModel(EngineSettings(model_path=model_path, threads=1, parallel=1, ctx_per_session=64, kv_budget_mb=1))
    try:
        return {str(t): -100.0 for t in model.end_of_generation_tokens}
    finally:
        model.close()


# -- people who stay: turns one after another ----------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One person's turns: the pause before each and its reply's length (every peer gets the same plans)."""
    pauses: list[float]
    lengths: list[int]


def turns_plans(sessions: int, turns: int, reply_tokens: int, pause: float = 0.0) -> list[Plan]:
    """Turn-10 vs turn-1: every person sends the next turn `pause` seconds after the reply is in."""
    return [Plan([0.0] + [pause] * (turns - 1), [reply_tokens] * turns) for _ in range(sessions)]


def steady_plans(people: int, turns: int, seed: int = 7) -> list[Plan]:
    """A team at work: each person reads a reply for a while (exponential, mean STEADY_PAUSE_S)
    before the next turn, and replies differ in length, so turns start and end at all times."""
    rng = random.Random(seed)
    return [Plan([rng.expovariate(1 / STEADY_PAUSE_S) for _ in range(turns)], [rng.randint(*STEADY_REPLY_TOKENS) for _ in range(turns)])
            for _ in range(people)]


@dataclass
class TurnsRun:
    ttft: dict[int, list[float]]  # by turn number
    prefilled: dict[int, list[int]]  # agentic: the prompt tokens each turn computed (the rest came from the cache)
    tokens: int = 0
    seconds: float = 0.0
    profile: str = ""

    @classmethod
    def of(cls, plans: list[Plan]) -> "TurnsRun":
        turns = range(1, len(plans[0].lengths) + 1)
        return cls({t: [] for t in turns}, {t: [] for t in turns})

    def result(self, peer: str) -> Result:
        return Result(peer, len(self.ttft[1]), self.tokens, self.seconds, [ms for turn in self.ttft.values() for ms in turn], profile=self.profile)


def turn_message(turn: int) -> str:
    """A message no session has sent before (as in every scenario), so turn 1 is not one prefix all
    sessions share and turn 10 is not measured against a turn 1 that prefilled once for eight. It
    starts with words of its own, as people's messages do: what sessions share is the template's
    text before it. (Begun with `[request N]`, as the other scenarios' texts are, every turn-1 prompt
    took the tag's first 3-4 tokens from another session's cells, which turn 10, after a history of
    its own, cannot: turn 1 prefilled 25 tokens of its 28.)"""
    n = next(_counter)
    return f"{letters(n)} {n}. Turn {turn}: tell me one more fact about lighthouses."


def letters(n: int) -> str:
    """Three letters, the fastest-changing first, so consecutive numbers begin with different tokens."""
    text = ""
    for _ in range(3):
        n, digit = divmod(n, 26)
        text += chr(ord("a") + digit)
    return text


async def people_agentic(base: str, plans: list[Plan]) -> TurnsRun:
    """Each plan is a person with a session of their own, each turn a WebSocket chat message.
    Everyone's session and socket are set up before the clock starts, so the first turns go out
    together, as they do to llama-server (which has nothing to set up), not spread out by the
    sessions' creation."""
    run = TurnsRun.of(plans)
    async with aiohttp.ClientSession() as http, AsyncExitStack() as sockets:
        async def join() -> aiohttp.ClientWebSocketResponse:
            async with http.post(f"{base}/sessions", json={"settings": {"ignore_eos": True}}) as resp:
                sid = (await resp.json())["session_id"]
            ws = await sockets.enter_async_context(http.ws_connect(f"{base.replace('http', 'ws')}/ws?session_id={sid}"))
            await ws.receive_json()
            return ws

        async def one(plan: Plan, ws: aiohttp.ClientWebSocketResponse) -> None:
            for turn, (pause, length) in enumerate(zip(plan.pauses, plan.lengths), start=1):
                await asyncio.sleep(pause)
                sent = time.perf_counter()
                await ws.send_json({"type": "chat", "content": turn_message(turn), "max_tokens": length})
                first = None
                while True:
                    frame = await ws.receive_json()
                    if frame["type"] == "token" and first is None:
                        first = time.perf_counter()
                        run.ttft[turn].append((first - sent) * 1000)
                    if frame["type"] in ("done", "error"):
                        usage = frame.get("usage") or {}
                        run.prefilled[turn].append(usage.get("prefill_tokens", 0))
                        run.tokens += usage.get("completion_tokens", 0)
                        break
        people = await asyncio.gather(*(join() for _ in plans))
        before = await engine_stats(http, base)
        start = time.perf_counter()
        await asyncio.gather(*(one(plan, ws) for plan, ws in zip(plans, people)))
        run.seconds = time.perf_counter() - start
        run.profile = engine_profile(before, await engine_stats(http, base), run.seconds)
    return run


async def people_openai(base: str, plans: list[Plan]) -> TurnsRun:
    """Each plan is a person whose whole history goes with every turn (llama-server keeps it in a slot)."""
    run = TurnsRun.of(plans)
    # force_close: llama-server drops idle keep-alive connections, which aiohttp would try to reuse
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600), connector=aiohttp.TCPConnector(force_close=True)) as http:
        async def one(plan: Plan) -> None:
            history: list[dict] = []
            for turn, (pause, length) in enumerate(zip(plan.pauses, plan.lengths), start=1):
                await asyncio.sleep(pause)
                history.append({"role": "user", "content": turn_message(turn)})
                body = {"messages": history, "max_tokens": length, "stream": True, "ignore_eos": True, "cache_prompt": True,
                        "temperature": 0.7, "top_p": 0.95, "top_k": 40}
                sent, pieces = time.perf_counter(), []
                async for delta in content_deltas(http, base, body):
                    if not pieces:
                        run.ttft[turn].append((time.perf_counter() - sent) * 1000)
                    pieces.append(delta)
                run.tokens += len(pieces)
                history.append({"role": "assistant", "content": "".join(pieces)})
        start = time.perf_counter()
        await asyncio.gather(*(one(plan) for plan in plans))
        run.seconds = time.perf_counter() - start
    return run


# -- orchestration -------------------------------------------------------------------------------------
def agentic_server(n: int, data_dir: str, ctx_per_seq: int = CTX_PER_SEQ, src: Path | None = None):
    """This tree's server, or the one in `src` (another checkout)."""
    port = free_port()
    env = {"N_PARALLEL": str(n), "CTX_PER_SESSION": str(ctx_per_seq), "N_THREADS": str(THREADS), "LOG_FORMAT": "plain", "MAX_QUEUE": "256",
           **UNLIMITED_SESSIONS, **({"PYTHONPATH": str(src)} if src else {})}  # the bench creates its sessions from one address, in a burst
    log = Path(data_dir) / "server.log"
    cmd = [PYTHON, "-P", "-m", "agentic", "serve", "--port", str(port), "--data-dir", data_dir]  # -P: PYTHONPATH's agentic, not the cwd's
    return port, process(cmd, f"http://127.0.0.1:{port}/health", env, log)


def llama_server_binary() -> Path:
    return next((p for p in (PEERS / "bin" / "llama-server", PEERS / "bin" / "llama-cpp-server") if p.exists()), PEERS / "bin" / "llama-server")


def llama_server(n: int, model: Path, ctx_per_seq: int = CTX_PER_SEQ):
    port = free_port()
    binary = llama_server_binary()
    args = ["-m", str(model), "--port", str(port), "--ctx-size", str(ctx_per_seq * n), "-np", str(n), "-t", str(THREADS)]
    cmd = [str(binary), *(args[:6] + ["--"] + args[6:] if binary.name == "llama-cpp-server" else args)]
    return port, process(cmd, f"http://127.0.0.1:{port}/health")


def lcp_server(model: Path):
    port = free_port()
    cmd = [str(PEERS / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model), "--port", str(port), "--n_threads", str(THREADS),
           "--n_threads_batch", str(THREADS), "--n_ctx", "2048", "--verbose", "False",
           "--interrupt_requests", "False"]  # its default cuts a running stream when another request arrives
    return port, process(cmd, f"http://127.0.0.1:{port}/v1/models")


def running(stack: ExitStack, port_and_server) -> str:
    """Start a server from agentic_server or llama_server until `stack` closes; its base URL."""
    port, server = port_and_server
    stack.enter_context(server)
    return f"http://127.0.0.1:{port}"


def measure_side_by_side(model: Path, n: int, args: argparse.Namespace, scenario: str, have_peers: bool, bias: dict[str, float]) -> dict[str, list[Result]]:
    """Every peer's servers up at once and their rounds taken in turn, so a machine that
    drifts faster or slower over minutes shifts every peer alike."""
    keep = scenario in ("realistic", "shared")
    make = shared_conversation if scenario == "shared" else conversation
    ctx_per_seq = TURNS_CTX_PER_SEQ if scenario == "steady" else CTX_PER_SEQ
    plans = [steady_plans(n, args.steady_turns, seed=r) for r in range(args.rounds)]  # round r: the same people for every peer
    rounds: dict[str, list[Result]] = {}
    with ExitStack() as stack:
        data = stack.enter_context(tempfile.TemporaryDirectory())
        agentic = running(stack, agentic_server(n, data, ctx_per_seq))
        peers = {"agentic": lambda r: asyncio.run(agentic_round(agentic, n, args.tokens, keep, make))}
        prepare = [lambda: asyncio.run(agentic_round(agentic, 1, 8, keep, make))]  # warm-up; in `shared`, the session that ran before
        if scenario == "empty":
            peers = {"raw": lambda r: raw_ceiling(model, n, args.tokens), **peers}
        if scenario == "openai":
            peers = {"agentic-v1": lambda r: asyncio.run(agentic_openai_round(agentic, n, args.tokens))}
        if scenario == "steady":
            peers = {"agentic": lambda r: asyncio.run(people_agentic(agentic, plans[r])).result("agentic")}
        other = None
        if args.server_src and scenario in ("steady", "realistic"):
            other_data = stack.enter_context(tempfile.TemporaryDirectory())
            other = running(stack, agentic_server(n, other_data, ctx_per_seq, src=args.server_src))
            prepare.append(lambda: asyncio.run(agentic_round(other, 1, 8, keep, make)))
            peers["agentic-src"] = (lambda r: asyncio.run(people_agentic(other, plans[r])).result("agentic-src")) if scenario == "steady" \
                else (lambda r: replace(asyncio.run(agentic_round(other, n, args.tokens, keep, make)), peer="agentic-src"))
        if have_peers:
            llama = running(stack, llama_server(n, model, ctx_per_seq))
            prepare.append(lambda: asyncio.run(openai_round("llama-srv", llama, 1, 8, {"ignore_eos": True}, make)))
            peers["llama-srv"] = lambda r: asyncio.run(openai_round("llama-srv", llama, n, args.tokens, {"ignore_eos": True}, make))
            if scenario == "steady":
                peers["llama-srv"] = lambda r: asyncio.run(people_openai(llama, plans[r])).result("llama-srv")
        for step in prepare:
            step()
        if scenario == "realistic":  # the team's earlier sessions, idle when the measured rounds start
            for server in filter(None, (agentic, other)):
                asyncio.run(agentic_round(server, args.idle, 8, keep=True))
            if have_peers:
                asyncio.run(openai_round("llama-srv", llama, args.idle, 8, {"ignore_eos": True}))
        for r in range(args.rounds):
            for peer, one_round in peers.items():
                rounds.setdefault(peer, []).append(one_round(r))
                time.sleep(SETTLE_S)
    if scenario == "empty" and have_peers and n <= args.lcp_max_n:  # one round: it serves one request at a time
        port, server = lcp_server(model)
        with server:
            rounds["lcp-srv"] = [asyncio.run(openai_round("lcp-srv", f"http://127.0.0.1:{port}", n, args.tokens, {"logit_bias": bias}))]
    return rounds


def paired_ratios(rounds: dict[str, list[Result]]) -> str:
    """Each peer's round against llama-server's round of the same cycle (taken just before or
    after it), so a machine that drifts between cycles cancels out; the median of those ratios."""
    base = rounds.get("llama-srv")
    lines = []
    for peer, results in rounds.items():
        if peer == "llama-srv" or not base or len(base) != len(results):
            continue
        tok = [r.tok_s / b.tok_s for r, b in zip(results, base)]
        p95 = [percentile(r.ttft_ms, 95) / percentile(b.ttft_ms, 95) for r, b in zip(results, base)]
        lines.append(f"  {peer} / llama-srv, round by round: tok/s {[round(x, 2) for x in tok]} median {statistics.median(tok):.2f}x; "
                     f"TTFT p95 {[round(x, 2) for x in p95]} median {statistics.median(p95):.2f}x")
    return "\n".join(lines)


def throughput_table(summaries: dict[tuple[str, int], Summary]) -> str:
    rows = []
    for (peer, n), s in sorted(summaries.items(), key=lambda item: (item[0][1], item[0][0])):
        ls = summaries.get(("llama-srv", n))
        rows.append([peer, n, s.rounds, round(s.tok_s, 1), round(s.p50), round(s.p95),
                     f"{s.tok_s / ls.tok_s:.2f}x" if ls else "-", f"{s.p50 / ls.p50:.2f}x" if ls else "-", f"{s.p95 / ls.p95:.2f}x" if ls else "-"])
    return table(["peer", "N", "rounds", "tok/s", "TTFT p50 ms", "TTFT p95 ms", "tok/s vs llama-srv", "p50 vs", "p95 vs"], rows)


def turns_table(model: Path, args: argparse.Namespace, have_peers: bool) -> str:
    """Every peer up at once, --rounds rounds taken in turn (new sessions each round; earlier
    rounds' stay); per peer the medians over rounds of turn 1's and turn N's TTFT p50, and of
    the rounds' ratios (a round's turn N is one burst of eight, so one round says little)."""
    plans = turns_plans(8, args.turns, args.turn_tokens, args.turn_pause)
    runs: dict[str, list[TurnsRun]] = {}
    with ExitStack() as stack:
        peers = {}
        for peer, src in [("agentic", None)] + [("agentic-src", args.server_src)] * bool(args.server_src):
            data = stack.enter_context(tempfile.TemporaryDirectory())
            peers[peer] = partial(people_agentic, running(stack, agentic_server(8, data, ctx_per_seq=TURNS_CTX_PER_SEQ, src=src)))
        if have_peers:
            peers["llama-srv"] = partial(people_openai, running(stack, llama_server(8, model, ctx_per_seq=TURNS_CTX_PER_SEQ)))
        for _ in range(args.rounds):
            for peer, people in peers.items():
                runs.setdefault(peer, []).append(asyncio.run(people(plans)))
                time.sleep(SETTLE_S)
    rows = []
    for peer, rounds in runs.items():
        first = [percentile(run.ttft[1], 50) for run in rounds]
        last = [percentile(run.ttft[args.turns], 50) for run in rounds]
        ratios = [b / a for a, b in zip(first, last)]
        prefilled = [f"{sum(rounds[0].prefilled[t]) // len(rounds[0].prefilled[t])}" if rounds[0].prefilled[t] else "-" for t in (1, args.turns)]
        rows.append([peer, len(rounds), round(statistics.median(first)), round(statistics.median(last)), " ".join(f"{ms:.0f}" for ms in last),
                     f"{statistics.median(ratios):.2f}x", " ".join(f"{r:.2f}" for r in ratios), *prefilled])
    return table(["peer", "rounds", "turn-1 TTFT p50 ms", f"turn-{args.turns} TTFT p50 ms", "by round", "ratio (median)", "ratio by round",
                  "turn-1 tokens prefilled", f"turn-{args.turns} prefilled"], rows)


# -- the OpenAI API, and a second turn with a file (issue 16) -----------------------------------
async def agentic_openai_round(base: str, n: int, max_tokens: int) -> Result:
    """N sessions send their first turn at once through /v1/chat/completions, each with its id as
    the API key and its stored system prompt first (so each is the session's own turn)."""
    result = Result("agentic-v1", n)
    async with aiohttp.ClientSession() as http:
        keys = []
        for _ in range(n):
            messages = conversation()
            async with http.post(f"{base}/sessions", json={"system_prompt": messages[0]["content"], "settings": {"ignore_eos": True}}) as resp:
                keys.append(((await resp.json())["session_id"], messages))

    async def one(sid: str, messages: list[dict]) -> None:
        headers = {"Authorization": f"Bearer {sid}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=3600)) as http:
            sent, count = time.perf_counter(), 0
            body = {"model": "any", "messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0.7, "top_p": 0.95}
            async for _ in content_deltas(http, base, body):
                count += 1
                if count == 1:
                    result.ttft_ms.append((time.perf_counter() - sent) * 1000)
            result.tokens += count

    start = time.perf_counter()
    await asyncio.gather(*(one(sid, messages) for sid, messages in keys))
    result.seconds = time.perf_counter() - start
    return result


# 40 passages of about 550 characters: more than a prompt's file budget, so each question gets its own passages.
FILE_TEXT = "\n\n".join(f"Note {i}: the {name} wing keeps exhibit {i * 7} on loan from the {name} trust until spring. " * 5
                        for i, name in enumerate(["north", "south", "east", "west", "river", "garden", "tower", "harbour"] * 5))
# Turn 2 picks other passages than turn 1; turn 3 comes back to turn 1's.
FILE_QUESTIONS = ["What does the north wing keep?", "What is on loan from the river trust?", "What does the north wing keep?"]


async def file_turns(base: str, sessions: int, reply_tokens: int) -> list[list[dict]]:
    """Sessions with an uploaded 40-passage text file, one after another, three turns each
    (FILE_QUESTIONS): each turn's TTFT and usage."""
    runs = []
    async with aiohttp.ClientSession() as http:
        for _ in range(sessions):
            async with http.post(f"{base}/sessions", json={"settings": {"ignore_eos": True}}) as resp:
                sid = (await resp.json())["session_id"]
            form = aiohttp.FormData()
            form.add_field("file", FILE_TEXT.encode(), filename="notes.txt", content_type="text/plain")
            async with http.post(f"{base}/sessions/{sid}/files", data=form) as resp:
                assert resp.status == 201, await resp.text()
            turns = []
            for question in FILE_QUESTIONS:
                sent, first = time.perf_counter(), None
                async with http.post(f"{base}/sessions/{sid}/messages", json={"content": question, "max_tokens": reply_tokens, "stream": True}) as resp:
                    async for raw in resp.content:
                        line = raw.decode().strip()
                        if line.startswith("event: token") and first is None:
                            first = time.perf_counter()
                        if line.startswith("data: ") and json.loads(line[6:])["type"] == "done":
                            usage = json.loads(line[6:])["usage"]
                turns.append({"ttft_ms": ((first or time.perf_counter()) - sent) * 1000, **usage})
            runs.append(turns)
    return runs


def file_turns_table(args: argparse.Namespace) -> str:
    """TTFT of turns 2 and 3 in a session with a file, for the server from --server-src (another
    checkout, e.g. before the passage move) and this one."""
    rows = []
    for label, src in [("other", args.server_src)] * bool(args.server_src) + [("this tree", None)]:
        with tempfile.TemporaryDirectory() as data, ExitStack() as stack:
            base = running(stack, agentic_server(4, data, TURNS_CTX_PER_SEQ, src=src))
            runs = asyncio.run(file_turns(base, args.file_sessions, args.turn_tokens))
        for turn in (1, 2):
            ttft = [run[turn]["ttft_ms"] for run in runs]
            cached = [run[turn]["cached_tokens"] / run[turn]["prompt_tokens"] for run in runs]
            rows.append([f"{label} {src or ''}".strip(), turn + 1, round(percentile(ttft, 50)), round(statistics.median(run[turn]["prompt_tokens"] for run in runs)),
                         round(statistics.median(run[turn]["prefill_tokens"] for run in runs)), f"{statistics.median(cached):.0%}"])
    return table(["server", "turn", "TTFT p50 ms", "prompt tokens", "prefilled", "cached"], rows)


TITLES = {
    "realistic": "Realistic: sessions stay, {idle} idle sessions before the measured rounds, new never-seen prompts each round",
    "empty": "Empty slots: every round's sessions are deleted after it",
    "shared": "Shared system prompt (~500 tokens), one such session ran before, new sessions each round",
    "openai": "Streamed /v1/chat/completions: agentic (each session's own turn) vs llama-server, new sessions each round",
    "steady": "Steady: N people each send {steady_turns} turns, pausing {pause:.0f} s on average before each, replies of {replies[0]}-{replies[1]} tokens; "
              "earlier rounds' sessions stay; tok/s over the round, TTFT over all its turns",
}


def run(args: argparse.Namespace) -> None:
    model = args.model or bundled_model_path()
    have_peers = llama_server_binary().exists()
    if not have_peers:
        print("bench/.peers is missing: run bench/setup_peers.sh for llama-server and llama_cpp.server; measuring raw and agentic only\n")
    bias = eog_bias(model)
    load = os.getloadavg()[0]
    for scenario in [s for s in args.scenarios if s in TITLES]:
        summaries: dict[tuple[str, int], Summary] = {}
        for n in ([8] if scenario == "shared" else args.n):
            rounds = measure_side_by_side(model, n, args, scenario, have_peers, bias)
            summaries.update({(peer, n): Summary.of(results) for peer, results in rounds.items()})
            print(f"{scenario} N={n}: " + "; ".join(f"{peer} {[round(r.tok_s, 1) for r in rs]} tok/s, p95 {[round(percentile(r.ttft_ms, 95)) for r in rs]} ms"
                                                   for peer, rs in rounds.items()), flush=True)
            for peer, results in rounds.items():
                for r in results:
                    print(f"  {peer} round: {r.phases()}" + (f"; profile: {r.profile}" if r.profile else ""), flush=True)
            print(paired_ratios(rounds), flush=True)
        replies = "" if scenario == "steady" else f"; {args.tokens}-token replies"
        title = TITLES[scenario].format(idle=args.idle, steady_turns=args.steady_turns, pause=STEADY_PAUSE_S, replies=STEADY_REPLY_TOKENS)
        print(f"\n{title}{replies}, {THREADS} threads ({os.cpu_count()} cores), medians over rounds")
        print(throughput_table(summaries), flush=True)
    if "turns" in args.scenarios and args.turns:
        print(f"\nTurn-{args.turns} vs turn-1 TTFT, 8 sessions interleaving, {args.turn_tokens}-token replies, {args.turn_pause:g} s before each next turn")
        print(turns_table(model, args, have_peers))
    if "file" in args.scenarios:
        print(f"\nA session with a 40-passage text file: turn 2 (other passages than turn 1), turn 3 (turn 1's again), {args.file_sessions} sessions, {args.turn_tokens}-token replies")
        print(file_turns_table(args), flush=True)
    print(f"\nload average: {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scenarios", nargs="+", default=["realistic", "steady", "empty", "shared", "turns"],
                        choices=["realistic", "steady", "empty", "shared", "turns", "openai", "file"])
    parser.add_argument("--file-sessions", type=int, default=3, help="sessions in the file scenario")
    parser.add_argument("--server-src", type=Path, help="file, steady, realistic and turns scenarios: also measure the agentic of this checkout (e.g. an earlier commit's, from git archive)")
    parser.add_argument("--steady-turns", type=int, default=6, help="turns each person sends in the steady scenario")
    parser.add_argument("--idle", type=int, default=50, help="idle sessions before the realistic scenario's measured rounds")
    parser.add_argument("--lcp-max-n", type=int, default=8, help="largest N to run llama_cpp.server at (it serves one request at a time)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--turn-tokens", type=int, default=32)
    parser.add_argument("--turn-pause", type=float, default=0.0, help="turns scenario: seconds each person waits after a reply before the next turn")
    parser.add_argument("--model", type=Path, help="GGUF file (default: the bundled model)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
