"""The inference thread: continuous batching of every active session's turn.

Each step decodes one token for every generating turn plus a bounded chunk of the oldest
waiting prompt, so new turns join between steps and a long prompt never stalls the
streams already running. A turn that has only just got its first token lets the prompts
of its burst go in before its second (see `_prompts_ahead_of_second_token`). Each
session keeps its KV cache in a slot (a llama.cpp sequence) between turns; when slots
run out the least recently used idle one is saved to disk and reused.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import llama_cpp

from agentic.engine.kv_store import KvStore
from agentic.engine.model import LlamaModel
from agentic.engine.text import TokenText
from agentic.engine.types import TurnRequest
from agentic.engine.window import HistoryWindow, PromptTooLong

log = logging.getLogger("agentic.engine")

# Turns sent within this long of each other count as one burst (see _prompts_ahead_of_second_token).
BURST_WINDOW_S = 0.05


@dataclass
class Slot:
    seq: int
    session_id: str | None = None
    tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    turn: "ActiveTurn | None" = None


@dataclass
class ActiveTurn:
    req: TurnRequest
    slot: Slot
    pending: list[int]
    sampler: Any
    usage: dict[str, Any]
    started: float
    next_token: int | None = None
    logit_index: int | None = None
    generated: int = 0
    first_token_at: float | None = None
    text: TokenText = field(default_factory=TokenText)
    # The prompts this turn's second token waits for; decided when it is first due (None: not yet).
    held_behind: list["ActiveTurn"] | None = None

    @property
    def prefilling(self) -> bool:
        return bool(self.pending) and self.slot.turn is self


@dataclass
class EngineCounters:
    steps: int = 0
    multi_sequence_steps: int = 0
    max_sequences_in_step: int = 0
    tokens_generated: int = 0
    tokens_prefilled: int = 0
    turns_started: int = 0
    turns_finished: int = 0
    evictions: int = 0
    restores: int = 0


class Batch:
    def __init__(self, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, n_seq)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        i = self.n
        b = self.raw
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self.n += 1
        return i

    def decode(self, ctx: Any) -> int:
        self.raw.n_tokens = self.n
        return llama_cpp.llama_decode(ctx, self.raw)

    def free(self) -> None:
        llama_cpp.llama_batch_free(self.raw)


class Scheduler:
    def __init__(self, model: LlamaModel, kv: KvStore, loop: asyncio.AbstractEventLoop, prefill_chunk: int, on_step: Callable[[EngineCounters], None] | None = None) -> None:
        self.model = model
        self.kv = kv
        self.loop = loop
        self.prefill_chunk = prefill_chunk
        self.counters = EngineCounters()
        self.slots = [Slot(seq) for seq in range(model.n_seq)]
        self.waiting: deque[TurnRequest] = deque()
        self.active: list[ActiveTurn] = []
        self._commands: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._outbox: list[tuple[TurnRequest, str, Any]] = []
        self._batch = Batch(model.n_batch, model.n_seq)
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._stopping = False
        self._last_positions: dict[int, int] = {}
        self.waiting_count = 0
        self.handoff_wait_s = 0.02
        # The text of the prompt each session's latest turn was answered from, for inspection.
        self.last_prompt: dict[str, str] = {}
        self.window = HistoryWindow(model.template.render, model.tokenize)

    # -- called from the event loop ------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, req: TurnRequest) -> None:
        self.waiting_count += 1
        self._commands.put(("submit", req, None))

    def drop_session(self, session_id: str, done: Callable[[], None]) -> None:
        self._commands.put(("drop", session_id, done))

    def wake(self) -> None:
        self._commands.put(("wake", None, None))

    def stop(self) -> None:
        self._stopping = True
        self._commands.put(("stop", None, None))
        self._thread.join()

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_commands(block=not self.active and not self.waiting)
                self._admit_waiting()
                if self.active:
                    self._step()
                self._flush_outbox()
        except Exception:
            log.exception("inference thread crashed")
            for turn in list(self.active):
                self._finish(turn, "error")
            self._flush_outbox()
        finally:
            self._save_all_slots()
            self._batch.free()

    def _take_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=0.5) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(*command)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _apply(self, kind: str, arg: Any, done: Any) -> None:
        if kind == "submit":
            self.waiting.append(arg)
        elif kind == "drop":
            self._drop(arg)
            self.loop.call_soon_threadsafe(done)

    def _emit(self, req: TurnRequest, kind: str, payload: Any) -> None:
        self._outbox.append((req, kind, payload))

    def _flush_outbox(self) -> None:
        """Hand this step's events to the event loop and give it a moment to send them.

        llama.cpp's worker threads synchronise at barriers many times per decode; on a
        machine with as many threads as cores, the event loop writing frames during a
        decode stalls every barrier. Letting it finish first (bounded, so a busy loop never
        holds the engine back) makes the next decode run undisturbed."""
        if self._outbox:
            events, self._outbox = self._outbox, []
            delivered = threading.Event()
            self.loop.call_soon_threadsafe(_deliver, events, delivered)
            delivered.wait(self.handoff_wait_s)

    # -- admission -------------------------------------------------------------
    def _admit_waiting(self) -> None:
        while self.waiting:
            req = self.waiting[0]
            if req.cancelled.is_set():
                self._dequeue()
                self._emit(req, "done", {"finish_reason": "cancelled", "prompt_tokens": 0, "completion_tokens": 0})
                continue
            slot = self._slot_for(req.session_id)
            if slot is None:
                break
            self._dequeue()
            self._start_turn(req, slot)
        self._report_queue_positions()

    def _dequeue(self) -> TurnRequest:
        self.waiting_count -= 1
        return self.waiting.popleft()

    def _report_queue_positions(self) -> None:
        positions = {id(req): pos for pos, req in enumerate(self.waiting, start=1)}
        for req in self.waiting:
            if self._last_positions.get(id(req)) != positions[id(req)]:
                self._emit(req, "queued", positions[id(req)])
        self._last_positions = positions

    def _slot_for(self, session_id: str) -> Slot | None:
        for slot in self.slots:
            if slot.session_id == session_id:
                return slot if slot.turn is None else None
        free = [s for s in self.slots if s.session_id is None]
        if free:
            return free[0]
        idle = [s for s in self.slots if s.turn is None]
        if not idle:
            return None
        victim = min(idle, key=lambda s: s.last_used)
        self._evict(victim)
        return victim

    def _evict(self, slot: Slot) -> None:
        if slot.session_id is not None and slot.tokens:
            self.kv.save(slot.session_id, slot.tokens, self.model.seq_state(slot.seq))
            self.counters.evictions += 1
        self._release(slot)

    def _release(self, slot: Slot) -> None:
        self.model.seq_truncate(slot.seq, 0)
        slot.session_id = None
        slot.tokens = []

    def _restore(self, slot: Slot, session_id: str, prompt: list[int]) -> bool:
        saved = self.kv.load(session_id)
        if saved is None:
            return False
        tokens, state = saved
        if not tokens or common_prefix(tokens, prompt) == 0 or not self.model.load_seq_state(slot.seq, state):
            self.model.seq_truncate(slot.seq, 0)
            return False
        slot.tokens = tokens
        self.counters.restores += 1
        return True

    def _start_turn(self, req: TurnRequest, slot: Slot) -> None:
        try:
            prompt, trimmed = self._build_prompt(req)
        except PromptTooLong as exc:
            self._emit(req, "error", ("context_overflow", str(exc)))
            return
        restored = False
        if slot.session_id != req.session_id:
            slot.session_id = req.session_id
            slot.tokens = []
            restored = self._restore(slot, req.session_id, prompt)
        reuse = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)  # the last prompt token must be decoded for logits
        self.model.seq_truncate(slot.seq, reuse)
        del slot.tokens[reuse:]
        turn = ActiveTurn(
            req=req, slot=slot, pending=prompt[reuse:], sampler=self.model.new_sampler(req.sampling), started=time.perf_counter(),
            usage={"prompt_tokens": len(prompt), "cached_tokens": reuse, "prefill_tokens": len(prompt) - reuse,
                   "restored_state": restored, "trimmed_messages": trimmed},
        )
        slot.turn = turn
        self.active.append(turn)
        self.counters.turns_started += 1
        self._emit(req, "started", dict(turn.usage))

    def _build_prompt(self, req: TurnRequest) -> tuple[list[int], int]:
        """Tokens of the conversation, without the oldest turns where the reply would not fit."""
        text, tokens, trimmed = self.window.fit(req.session_id, req.messages, self.model.n_ctx_seq - req.max_tokens)
        self.last_prompt[req.session_id] = text
        return tokens, trimmed

    # -- one decode step -------------------------------------------------------
    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        sequences = set()
        for turn in self.active:
            if turn.next_token is not None and not self._held(turn):
                turn.logit_index = batch.add(turn.next_token, len(turn.slot.tokens), turn.slot.seq, True)
                turn.slot.tokens.append(turn.next_token)
                turn.next_token = None
                sequences.add(turn.slot.seq)
        budget = batch.capacity - batch.n if batch.n == 0 else min(self.prefill_chunk, batch.capacity - batch.n)
        # One prompt per step, oldest first: prefill costs the same per token however many
        # prompts share a batch, so taking them one at a time gives each its first token as
        # soon as its own prompt is in instead of when everyone's is.
        prefilling = next((turn for turn in self.active if turn.pending), None)
        if prefilling is not None and budget > 0:
            self._add_prompt_chunk(prefilling, budget)
            sequences.add(prefilling.slot.seq)
        if batch.n == 0:
            self._reap_cancelled()
            return
        rc = batch.decode(self.model.ctx)
        self._count_step(len(sequences))
        if rc != 0:
            log.error("llama_decode failed with %d", rc)
            for turn in [t for t in self.active if t.slot.seq in sequences]:
                self._release(turn.slot)
                self._finish(turn, "error")
            return
        for turn in list(self.active):
            if turn.logit_index is not None:
                self._take_token(turn, self.model.sample(turn.sampler, turn.logit_index))
                turn.logit_index = None
        self._reap_cancelled()

    def _held(self, turn: ActiveTurn) -> bool:
        if turn.held_behind is None:
            turn.held_behind = self._prompts_ahead_of_second_token(turn)
        turn.held_behind = [t for t in turn.held_behind if t.prefilling]
        return bool(turn.held_behind)

    def _prompts_ahead_of_second_token(self, turn: ActiveTurn) -> list[ActiveTurn]:
        """On CPU a decoded token costs about what a prompt token does, so every decode
        step run before the last prompt of a burst (turns sent at the same moment) is in
        delays that prompt's first token. A turn that has just got its first token therefore
        lets the rest of its burst go first, up to one batch of prompts; streams that were
        running before never wait, and turns sent later do not hold it back (holding behind
        them too bunches steady traffic into bursts: measured, turn-10 TTFT got worse)."""
        burst_end = turn.req.submitted + BURST_WINDOW_S
        ahead = [t for t in self.active if t is not turn and t.prefilling and t.req.submitted <= burst_end]
        return ahead if sum(len(t.pending) for t in ahead) <= self._batch.capacity else []

    def _add_prompt_chunk(self, turn: ActiveTurn, budget: int) -> None:
        chunk = turn.pending[:budget]
        base = len(turn.slot.tokens)
        last = len(chunk) == len(turn.pending)
        for i, token in enumerate(chunk):
            index = self._batch.add(token, base + i, turn.slot.seq, last and i == len(chunk) - 1)
        if last:
            turn.logit_index = index
        turn.slot.tokens.extend(chunk)
        del turn.pending[:len(chunk)]
        self.counters.tokens_prefilled += len(chunk)

    def _count_step(self, n_sequences: int) -> None:
        c = self.counters
        c.steps += 1
        if n_sequences > 1:
            c.multi_sequence_steps += 1
        c.max_sequences_in_step = max(c.max_sequences_in_step, n_sequences)

    def _take_token(self, turn: ActiveTurn, token: int) -> None:
        if turn.first_token_at is None:
            turn.first_token_at = time.perf_counter()
        if self.model.is_eog(token):
            self._finish(turn, "stop")
            return
        turn.generated += 1
        self.counters.tokens_generated += 1
        text = turn.text.push(self.model.piece(token))
        if text:
            self._emit(turn.req, "token", text)
        if turn.generated >= turn.req.max_tokens or len(turn.slot.tokens) + 1 >= self.model.n_ctx_seq:
            self._finish(turn, "length")
        else:
            turn.next_token = token

    def _reap_cancelled(self) -> None:
        for turn in list(self.active):
            if turn.req.cancelled.is_set():
                self._finish(turn, "cancelled")

    def _finish(self, turn: ActiveTurn, reason: str) -> None:
        end = time.perf_counter()
        first = turn.first_token_at or end
        usage = dict(turn.usage)
        usage.update(
            completion_tokens=turn.generated,
            ttft_ms=round((first - turn.started) * 1000, 2),
            tokens_per_s=round(turn.generated / (end - first), 2) if end > first and turn.generated > 1 else 0.0,
            finish_reason=reason,
        )
        self.model.free_sampler(turn.sampler)
        turn.slot.turn = None
        turn.slot.last_used = time.monotonic()
        self.active.remove(turn)
        self.counters.turns_finished += 1
        self._emit(turn.req, "done", usage)

    # -- session state -----------------------------------------------------------
    def _drop(self, session_id: str) -> None:
        for req in [r for r in self.waiting if r.session_id == session_id]:
            self.waiting.remove(req)
            self.waiting_count -= 1
            self._emit(req, "done", {"finish_reason": "cancelled", "prompt_tokens": 0, "completion_tokens": 0})
        for slot in self.slots:
            if slot.session_id == session_id:
                if slot.turn is not None:
                    self._finish(slot.turn, "cancelled")
                self._release(slot)
        self.kv.drop(session_id)
        self.last_prompt.pop(session_id, None)
        self.window.forget(session_id)

    def _save_all_slots(self) -> None:
        for slot in self.slots:
            if slot.session_id is not None and slot.tokens and slot.turn is None:
                try:
                    self.kv.save(slot.session_id, slot.tokens, self.model.seq_state(slot.seq))
                except OSError:
                    log.exception("could not save KV state", extra={"session_id": slot.session_id})


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _deliver(events: list[tuple[TurnRequest, str, Any]], delivered: threading.Event) -> None:
    try:
        for req, kind, payload in events:
            try:
                req.emit(kind, payload)
            except Exception:
                log.exception("turn event handler failed", extra={"session_id": req.session_id})
    finally:
        delivered.set()
