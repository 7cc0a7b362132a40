"""The inference thread: continuous batching of every active session's turn.

Each step decodes one token for every generating turn plus a bounded chunk of the waiting
prompts (how many prompts per step: see `PrefillPolicy`), so new turns join between steps
and a long prompt never stalls the streams already running. A turn that has only just got
its first token lets the prompts of its burst go in before its second (see
`_prompts_ahead_of_second_token`), and a burst's first step waits a moment for the turns
announced with it (see `_gather_burst`).

Each session keeps its KV state in a slot (a llama.cpp sequence, a stream of its own cells)
between turns. A prompt that starts like one the cache already holds gets that prefix copied
from the other sequence instead of prefilling it (a memory copy; a holder sequence keeps a
shared prefix after its sessions leave). When sequences run out, or a session has been idle
for PARK_AFTER_S, its state is copied to RAM and written to disk by the KV store's own thread;
a session that comes back is restored from RAM, after the store has read it from disk if it
had to, so neither the eviction nor the restore waits for the disk on this thread. Running turns
are kept on consecutive sequences (see `_compact`).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, Callable

from agentic.engine.batch import Batch
from agentic.engine.kv_store import KvStore
from agentic.engine.model import LlamaModel
from agentic.engine.prefill import PrefillPolicy
from agentic.engine.slots import ActiveTurn, Slot
from agentic.engine.types import Done, Failed, Queued, Token, TurnEvent, TurnRequest
from agentic.engine.window import HistoryWindow, PromptTooLong

log = logging.getLogger("agentic.engine")

# Turns sent within this long of each other count as one burst (see _prompts_ahead_of_second_token).
BURST_WINDOW_S = 0.05
# The most prompt tokens of its burst a turn's second token waits for: llama-server's default
# batch, all of which it decodes before a running slot's next token. (Held to one 512-token
# batch, a burst of 16 let its first turns decode between its prompts, and a step holding a
# prompt on sequence 11 beside tokens on 0-2 took two passes: a burst's last first token 9 %
# later.)
BURST_HOLD_TOKENS = 2048
# A burst's first step waits up to this long for the turns announced with it (see _gather_burst);
# their messages reach the engine through the message store 5-13 ms after the first's here.
GATHER_S = 0.03
# An announced turn that has not come after this long is not on its way (its storing failed).
ANNOUNCED_TTL_S = 1.0
# A prompt takes another sequence's prefix when it shares at least this many tokens with it.
MIN_SHARED_PREFIX = 16
# llama.cpp decodes a step's sequences in one pass only where their ids are consecutive
# (llama_batch_allocr::split_equal); every gap costs another pass over the weights. Idle
# sessions leave for RAM after this long (a memory copy each way), so new turns take the
# lowest free sequences next to the running ones.
PARK_AFTER_S = 2.0
# A turn is moved to close a gap (a copy of its whole stream) only if it has this many tokens left.
MOVE_MIN_TOKENS_LEFT = 4
# A finished reply's closing tokens wait this long after it (the slot's last_used) for a next
# turn already on its way, which takes them in its prompt (see _close_out).
CLOSE_OUT_AFTER_S = 0.05
# A failed llama_decode loses the turns in that step; this many in a row means the engine is broken.
MAX_DECODE_FAILURES = 3


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
    prefix_shares: int = 0
    tokens_shared: int = 0
    max_prompts_in_step: int = 0
    turns_moved: int = 0
    close_outs: int = 0
    tokens_closed_out: int = 0
    # Where the inference thread's time goes while turns run (the profile behind the benchmark):
    # inside llama_decode, waiting for the event loop to take a step's events, and in all.
    decode_s: float = 0.0
    handoff_s: float = 0.0
    busy_s: float = 0.0


class Scheduler:
    def __init__(self, model: LlamaModel, kv: KvStore, loop: asyncio.AbstractEventLoop, prefill_chunk: int,
                 max_active: int, policy: PrefillPolicy | None = None) -> None:
        self.model = model
        self.kv = kv
        kv.on_loaded = lambda _session_id: self.wake()
        self.loop = loop
        self.prefill_chunk = prefill_chunk
        self.max_active = max_active
        self.policy = policy or PrefillPolicy(None, model.n_batch)
        self.counters = EngineCounters()
        self.slots = [Slot(seq) for seq in range(model.n_seq)]
        self.prefix_holder = self.slots[-1] if model.n_seq > 1 else None
        if self.prefix_holder is not None:
            self.prefix_holder.holder = True
        self.park_after_s = PARK_AFTER_S
        # Sessions whose state is in a slot; read by the event loop (see Engine.prefetch).
        self.resident: set[str] = set()
        self.waiting: deque[TurnRequest] = deque()
        self._announced: dict[str, float] = {}  # session id -> when its coming turn was announced
        self.active: list[ActiveTurn] = []
        self._commands: queue.Queue[tuple[str, Any, Any]] = queue.Queue()
        self._outbox: list[tuple[TurnRequest, TurnEvent]] = []
        self._batch = Batch(model.n_batch, model.n_seq)
        # Sequences whose streams take part in a copy llama.cpp makes at the next decode: until
        # then a state read from them is stale, and one written into them is lost or spoils the copy.
        self._copies_pending: set[int] = set()
        self._running: Future[None] | None = None
        self._stopping = False
        self._stalled = False
        # Why the inference thread can take no more turns (read by the event loop), or None.
        self.failure: str | None = None
        self._decode_failures = 0
        self._last_positions: dict[int, int] = {}
        self.waiting_count = 0
        self.handoff_wait_s = 0.02
        self.window = HistoryWindow(model.tokenize_chat)

    # -- called from the event loop ------------------------------------------
    def start(self, thread: Executor) -> None:
        """Run on `thread`, the engine's one inference thread (see Engine: every decode on one thread)."""
        self._running = thread.submit(self._run)

    def submit(self, req: TurnRequest) -> None:
        self.waiting_count += 1
        self._commands.put(("submit", req, None))

    def announce(self, session_id: str) -> None:
        """A turn for this session is on its way (its message is being stored)."""
        self._commands.put(("announce", session_id, time.monotonic()))

    def withdraw(self, session_id: str) -> None:
        """The announced turn is not coming after all."""
        self._commands.put(("withdraw", session_id, None))

    def drop_session(self, session_id: str, done: Callable[[], None]) -> None:
        self._commands.put(("drop", session_id, done))

    def prefetch(self, session_id: str) -> None:
        """Start reading a session's saved state into RAM if it is not in the cache (any thread)."""
        if session_id not in self.resident:
            self.kv.prefetch(session_id)

    def wake(self) -> None:
        self._commands.put(("wake", None, None))

    def stop(self) -> None:
        self._stopping = True
        self._commands.put(("stop", None, None))
        if self._running is not None:
            self._running.result()

    # -- the thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_commands(self._idle_wait())
                self._gather_burst()
                self._admit_waiting()
                self._park_idle()
                started = time.perf_counter()
                if self.active:
                    self._step()
                elif self._may_close_out():
                    self._close_out()
                self._flush_outbox()
                if self.active or self.waiting:
                    self.counters.busy_s += time.perf_counter() - started
        except Exception as exc:
            log.exception("inference thread crashed")
            self._fail_everything(f"the inference thread stopped: {exc}")
        finally:
            self._save_all_slots()
            self.kv.close()
            self._batch.free()

    def _idle_wait(self) -> float:
        """How long the thread may wait for a command: not at all while turns run or can start;
        while idle, until the next close-out is due, and half a second at most."""
        if self.active or (self.waiting and not self._stalled):
            return 0.0
        due = [slot.last_used + CLOSE_OUT_AFTER_S for slot in self._closings()] if self._may_close_out() else []
        return max(0.0, min([0.5, *(at - time.monotonic() for at in due)]))

    def _take_commands(self, timeout: float) -> None:
        try:
            command = self._commands.get(timeout=timeout) if timeout > 0 else self._commands.get_nowait()
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
            self._announced.pop(arg.session_id, None)
            self.waiting.append(arg)
        elif kind == "announce":
            self._announced[arg] = done
        elif kind == "withdraw":
            self._announced.pop(arg, None)
        elif kind == "drop":
            self._drop(arg)
            self.loop.call_soon_threadsafe(done)

    def _emit(self, req: TurnRequest, event: TurnEvent) -> None:
        self._outbox.append((req, event))

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
            waited = time.perf_counter()
            delivered.wait(self.handoff_wait_s)
            self.counters.handoff_s += time.perf_counter() - waited

    # -- admission -------------------------------------------------------------
    def _gather_burst(self) -> None:
        """Before the first step of a burst (turns waiting, none running), wait up to GATHER_S
        for the turns announced with it, so that the prefill policy plans the burst whole. (Without
        it the first turn's prompt went in alone, and the prompts that came 5-13 ms later all in
        the step after it: the burst's p50 at its end.) Running streams never wait for it."""
        if self.active or not self.waiting:
            return
        started = time.monotonic()
        while self._turns_announced() and not self._stopping and (left := started + GATHER_S - time.monotonic()) > 0:
            try:
                self._apply(*self._commands.get(timeout=left))
            except queue.Empty:
                return

    def _turns_announced(self) -> bool:
        """Whether a turn announced is still on its way (stale announcements are dropped)."""
        fresh = time.monotonic() - ANNOUNCED_TTL_S
        self._announced = {sid: at for sid, at in self._announced.items() if at > fresh}
        return bool(self._announced)

    def _admit_waiting(self) -> None:
        """Start waiting turns in order while there is room. A session whose saved state is
        still being read from disk waits (with its later turns) without holding up the rest."""
        reading: set[str] = set()
        admitted = False
        for req in list(self.waiting):
            if req.cancelled.is_set():
                self._dequeue(req)
                self._emit(req, Done.before_start())
                continue
            if len(self.active) >= self.max_active:
                break
            if req.session_id in reading:
                continue
            slot = self._resident_slot(req.session_id)
            if slot is not None and slot.turn is not None:
                reading.add(req.session_id)  # its previous turn is still running
                continue
            if slot is None and not self.kv.ready(req.session_id):
                reading.add(req.session_id)
                continue
            try:
                prompt, trimmed = self._build_prompt(req)
            except PromptTooLong as exc:
                self._dequeue(req)
                self._emit(req, Failed("context_overflow", str(exc)))
                continue
            slot = slot or self._free_slot()
            if slot is None:
                break
            self._dequeue(req)
            self._start_turn(req, slot, prompt, trimmed)
            admitted = True
        self._stalled = bool(self.waiting) and not admitted
        self._report_queue_positions()

    def _dequeue(self, req: TurnRequest) -> None:
        self.waiting_count -= 1
        self.waiting.remove(req)

    def _report_queue_positions(self) -> None:
        positions = {id(req): pos for pos, req in enumerate(self.waiting, start=1)}
        for req in self.waiting:
            if self._last_positions.get(id(req)) != positions[id(req)]:
                self._emit(req, Queued(positions[id(req)]))
        self._last_positions = positions

    def _resident_slot(self, session_id: str) -> Slot | None:
        if session_id not in self.resident:
            return None
        return next(slot for slot in self.slots if slot.session_id == session_id)

    def _free_slot(self) -> Slot | None:
        """The lowest free sequence (see PARK_AFTER_S), else the least recently used idle
        session's, which leaves for RAM. Every stream holds a whole context (the history
        window sees to that), so a turn needs a sequence, never more cells."""
        free = next((s for s in self.slots if s.session_id is None and not s.holder), None)
        if free is not None:
            return free
        idle = [s for s in self.slots if s.session_id is not None and s.turn is None]
        if not idle:
            return None
        lru = min(idle, key=lambda s: s.last_used)
        self._evict(lru)
        return lru

    def _park_idle(self) -> None:
        """Sessions idle for park_after_s leave the cache for RAM: all of them while no turn
        runs (after their close-out, see _close_out), one per step while turns run (each is a
        memory copy of its state)."""
        idle_since = time.monotonic() - self.park_after_s
        for slot in self.slots:
            if slot.closing and not self.active:
                continue
            if slot.session_id is not None and slot.turn is None and slot.last_used <= idle_since:
                self._evict(slot)
                if self.active:
                    return

    def _evict(self, slot: Slot) -> None:
        """Copy an idle session's state to RAM (the store writes it to disk on its own thread).
        A state a pending copy involves is dropped: the next turn computes it again."""
        settled = slot.seq not in self._copies_pending
        if slot.session_id is not None and slot.tokens and settled:
            self.kv.put(slot.session_id, slot.tokens, self.model.seq_state(slot.seq))
            self.counters.evictions += 1
        self._release(slot, keep_cells=settled)

    def _release(self, slot: Slot, keep_cells: bool = False) -> None:
        """Free the slot. Cells it keeps stay there for the next session that takes it, which
        computes only what its prompt does not share with them, as with llama-server's slots:
        every prompt starts with the chat template's opening (6 of a 41-token first prompt)."""
        slot.former_session = slot.session_id if keep_cells else None
        slot.closing = []
        if not keep_cells:
            self.model.seq_truncate(slot.seq, 0)
            slot.truncate(0)
        self.resident.discard(slot.session_id)
        slot.session_id = None

    def _restore(self, slot: Slot, session_id: str, prompt: list[int]) -> bool:
        """Load the session's state from RAM (never from disk here: see KvStore.ready)."""
        if slot.seq in self._copies_pending:
            return False
        saved = self.kv.take(session_id)
        if saved is None:
            return False
        slot.truncate(0)  # loading a state replaces what the sequence held
        if not saved.tokens or common_prefix(saved.tokens, prompt) == 0 or not self.model.load_seq_state(slot.seq, saved.state):
            self.model.seq_truncate(slot.seq, 0)
            return False
        slot.extend(saved.tokens)
        self.counters.restores += 1
        return True

    def _start_turn(self, req: TurnRequest, slot: Slot, prompt: list[int], trimmed: int) -> None:
        restored = False
        slot.closing = []  # the prompt holds them, if the guess was right
        if slot.session_id != req.session_id:
            slot.session_id, slot.former_session = req.session_id, None
            self.resident.add(req.session_id)
            restored = self._restore(slot, req.session_id, prompt)
        reuse = min(common_prefix(slot.tokens, prompt), len(prompt) - 1)  # the last prompt token must be decoded for logits
        self.model.seq_truncate(slot.seq, reuse)
        slot.truncate(reuse)
        turn = ActiveTurn(
            req=req, slot=slot, prompt=prompt, pending=prompt[reuse:], sampler=self.model.new_sampler(req.sampling), started=time.perf_counter(),
            usage={"prompt_tokens": len(prompt), "cached_tokens": reuse, "prefill_tokens": len(prompt) - reuse,
                   "restored_state": restored, "trimmed_messages": trimmed},
        )
        slot.turn = turn
        self.active.append(turn)
        self.counters.turns_started += 1

    def _build_prompt(self, req: TurnRequest) -> tuple[list[int], int]:
        """Tokens of the conversation, without the oldest turns where the reply would not fit."""
        _text, tokens, trimmed = self.window.fit(req.session_id, req.messages, self.model.n_ctx_seq - req.max_tokens)
        return tokens, trimmed

    # -- one decode step -------------------------------------------------------
    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        self._compact()
        prompts = self._prompts_for_step()  # first: a shared prefix is copied before its source decodes
        # A cancelled turn (stop, a stop string) ends below without decoding another token.
        streams = [t for t in self.active if t.next_token is not None and not t.req.cancelled.is_set() and not self._held(t)]
        chunks: dict[int, int] = {}  # id(turn) -> prompt tokens it adds
        room = batch.capacity - len(streams)
        for turn in prompts:
            size = min(len(turn.pending), self.prefill_chunk if streams else room, room)
            if size <= 0:
                break
            chunks[id(turn)] = size
            room -= size
        # In sequence order: llama.cpp decodes a run of consecutive sequences in one pass.
        in_step = sorted(streams + [t for t in prompts if id(t) in chunks], key=lambda t: t.slot.seq)
        for turn in in_step:
            if id(turn) in chunks:
                self._add_prompt_chunk(turn, chunks[id(turn)])
            else:
                self._add_next_token(turn)
        sequences = {turn.slot.seq for turn in in_step}
        if batch.n == 0:
            self._reap_cancelled()
            return
        decoding = time.perf_counter()
        rc = batch.decode(self.model.ctx)
        self.counters.decode_s += time.perf_counter() - decoding
        self._count_step(len(sequences), len(prompts))
        if rc != 0:
            self._decode_failed(rc, [t for t in self.active if t.slot.seq in sequences])
            return
        self._copies_pending.clear()
        self._decode_failures = 0
        for turn in list(self.active):
            if turn.logit_index is not None:
                self._take_token(turn, self.model.sample(turn.sampler, turn.logit_index))
                turn.logit_index = None
        self._reap_cancelled()

    def _compact(self) -> None:
        """Close a gap between the running turns' sequences: the turn on the highest moves into
        the lowest sequence below it that no turn uses (an idle session there leaves for RAM).
        llama.cpp decodes each run of consecutive sequences in a pass of its own and reuses a
        step's graph only while its sequences stay the same; a step of 16 in 2 runs took 14-23 %
        longer than in one here, in 4 runs 41-50 %, while a move costs one copy of a stream
        (about 4 ms for 2048 cells). One move per step. (Filling only free sequences, leaving
        idle sessions' alone, measured worse: steady N=8 0.90x llama-server vs 1.02x, N=16 1.12x
        vs 1.25x, with turn-10 TTFT the same.)"""
        turns = [t for t in self.active if not t.req.cancelled.is_set()]
        if len(turns) < 2:
            return
        seqs = sorted(t.slot.seq for t in turns)
        if seqs[-1] - seqs[0] + 1 == len(seqs):
            return
        top = next(t for t in turns if t.slot.seq == seqs[-1])
        if not top.pending and top.req.max_tokens - top.generated < MOVE_MIN_TOKENS_LEFT:
            return
        gap = next((s for s in self.slots[seqs[0]:seqs[-1]] if s.turn is None and not s.holder), None)
        if gap is None:  # the gaps are cancelled turns', free after this step
            return
        if gap.session_id is not None:
            self._evict(gap)
        self.model.seq_move(top.slot.seq, gap.seq)
        self._copies_pending.update((top.slot.seq, gap.seq))
        gap.take_session(top.slot)
        self.counters.turns_moved += 1

    def _held(self, turn: ActiveTurn) -> bool:
        if turn.held_behind is None:
            turn.held_behind = self._prompts_ahead_of_second_token(turn)
        turn.held_behind = [t for t in turn.held_behind if t.prefilling]
        return bool(turn.held_behind)

    def _prompts_ahead_of_second_token(self, turn: ActiveTurn) -> list[ActiveTurn]:
        """On CPU a decoded token costs about what a prompt token does, so every decode
        step run before the last prompt of a burst (turns sent at the same moment) is in
        delays that prompt's first token. A turn that has just got its first token therefore
        lets the rest of its burst go first, up to BURST_HOLD_TOKENS of prompts; streams that
        were running before never wait, and turns sent later do not hold it back (holding
        behind them too bunches steady traffic into bursts: measured, turn-10 TTFT got worse)."""
        burst_end = turn.req.submitted + BURST_WINDOW_S
        ahead = [t for t in self.active if t is not turn and t.prefilling and t.req.submitted <= burst_end]
        return ahead if sum(len(t.pending) for t in ahead) <= BURST_HOLD_TOKENS else []

    def _prompts_for_step(self) -> list[ActiveTurn]:
        """The prompts that go into this step, oldest first, as many as the policy picks for
        those waiting. A prompt about to start takes the longest prefix the cache holds;
        one whose prefix another prompt is still computing waits for it instead."""
        waiting = [turn for turn in self.active if turn.pending]
        count = self.policy.prompts_per_step([len(turn.pending) for turn in waiting])
        chosen: list[ActiveTurn] = []
        for turn in waiting:
            if len(chosen) == count:
                break
            if not turn.prefill_started:
                self._share_prefix(turn)
                if self._prefix_coming(turn, [t for t in waiting if t.prefill_started] + chosen):
                    continue
            chosen.append(turn)
        return chosen

    def _share_prefix(self, turn: ActiveTurn) -> None:
        slot = turn.slot
        have, limit = len(slot.tokens), len(turn.prompt) - 1
        source, end = None, have + MIN_SHARED_PREFIX - 1
        for other in self.slots:
            if other is not slot and len(other.tokens) > end:
                shared = min(common_prefix(other.tokens, turn.prompt), limit)
                if shared > end:
                    source, end = other, shared
        if source is None:
            return
        self.model.seq_copy_prefix(source.seq, slot.seq, end)
        self._copies_pending.update((source.seq, slot.seq))
        slot.copy_prefix(source, end)
        self._hold_prefix(source, end)
        del turn.pending[:end - have]
        turn.usage.update(cached_tokens=end, prefill_tokens=len(turn.prompt) - end, shared_tokens=end - have)
        self.counters.prefix_shares += 1
        self.counters.tokens_shared += end - have

    def _hold_prefix(self, source: Slot, end: int) -> None:
        """Keep a prefix that sessions share in the holder sequence too, so the next session
        that starts with it finds it after these sessions have left."""
        holder = self.prefix_holder
        if holder is None or holder is source or common_prefix(holder.tokens, source.tokens[:end]) >= end:
            return
        self.model.seq_copy_prefix(source.seq, holder.seq, end)
        self._copies_pending.update((source.seq, holder.seq))
        holder.copy_prefix(source, end)

    @staticmethod
    def _prefix_coming(turn: ActiveTurn, ahead: list[ActiveTurn]) -> bool:
        """Whether a prompt going in before this one will soon hold more of this one's prefix."""
        have = len(turn.slot.tokens)
        for other in ahead:
            common = min(common_prefix(other.prompt, turn.prompt), len(turn.prompt) - 1)
            if common - max(have, len(other.slot.tokens)) >= MIN_SHARED_PREFIX:
                return True
        return False

    def _add_next_token(self, turn: ActiveTurn) -> None:
        turn.logit_index = self._batch.add(turn.next_token, len(turn.slot.tokens), turn.slot.seq, True)
        turn.slot.extend([turn.next_token])
        turn.next_token = None

    def _add_prompt_chunk(self, turn: ActiveTurn, size: int) -> None:
        chunk = turn.pending[:size]
        base = len(turn.slot.tokens)
        last = len(chunk) == len(turn.pending)
        for i, token in enumerate(chunk):
            index = self._batch.add(token, base + i, turn.slot.seq, last and i == len(chunk) - 1)
        if last:
            turn.logit_index = index
        turn.slot.extend(chunk)
        turn.prefill_started = True
        del turn.pending[:len(chunk)]
        self.counters.tokens_prefilled += len(chunk)

    def _count_step(self, n_sequences: int, n_prompts: int) -> None:
        c = self.counters
        c.steps += 1
        if n_sequences > 1:
            c.multi_sequence_steps += 1
        c.max_sequences_in_step = max(c.max_sequences_in_step, n_sequences)
        c.max_prompts_in_step = max(c.max_prompts_in_step, n_prompts)

    def _take_token(self, turn: ActiveTurn, token: int) -> None:
        if turn.first_token_at is None:
            turn.first_token_at = time.perf_counter()
        if self.model.is_eog(token):
            self._expect_next_message(turn, [])
            self._finish(turn, "stop")
            return
        turn.generated += 1
        self.counters.tokens_generated += 1
        text = turn.text.push(self.model.piece(token))
        if text:
            self._emit(turn.req, Token(text))
        if turn.generated >= turn.req.max_tokens or len(turn.slot.tokens) + 1 >= self.model.n_ctx_seq:
            self._expect_next_message(turn, [token])
            self._finish(turn, "length")
        else:
            turn.next_token = token

    def _expect_next_message(self, turn: ActiveTurn, reply_end: list[int]) -> None:
        """Note what the session's next prompt holds after the cache: the reply's last token
        (sampled, never decoded) and the template's text up to the next message's content."""
        closing = reply_end + (self.model.after_reply_tokens or [])
        if closing and len(turn.slot.tokens) + len(closing) <= self.model.n_ctx_seq:
            turn.slot.closing = closing

    def _closings(self) -> list[Slot]:
        """Slots with closing tokens to compute (none whose stream a pending copy involves)."""
        return [slot for slot in self.slots if slot.closing and slot.seq not in self._copies_pending]

    def _may_close_out(self) -> bool:
        return not self.active and not self.waiting and not self._turns_announced()

    def _close_out(self) -> None:
        """While no turn runs, waits or is on its way, compute one idle session's closing tokens
        (see _expect_next_message), so that its next turn prefills only its own message (27
        tokens instead of 34 in the turns bench), while its author reads the reply. A
        guess the next prompt does not match is cut back when that turn starts. One session a
        step, so a turn that arrives meanwhile waits for a few tokens at most."""
        ready_since = time.monotonic() - CLOSE_OUT_AFTER_S
        due = [slot for slot in self._closings() if slot.last_used <= ready_since]
        if not due:
            return
        slot = min(due, key=lambda s: s.last_used)
        closing, slot.closing = slot.closing, []
        self._batch.clear()
        for i, token in enumerate(closing):
            self._batch.add(token, len(slot.tokens) + i, slot.seq, False)
        if self._batch.decode(self.model.ctx) != 0:
            self.model.seq_truncate(slot.seq, len(slot.tokens))
            return
        self._copies_pending.clear()
        slot.extend(closing)
        self.counters.close_outs += 1
        self.counters.tokens_closed_out += len(closing)

    def _reap_cancelled(self) -> None:
        for turn in list(self.active):
            if turn.req.cancelled.is_set():
                self._finish(turn, "cancelled")

    def _decode_failed(self, rc: int, turns: list[ActiveTurn]) -> None:
        self._decode_failures += 1
        log.error("llama_decode failed with %d (%d in a row)", rc, self._decode_failures)
        if self._decode_failures >= MAX_DECODE_FAILURES:
            raise RuntimeError(f"llama_decode failed {self._decode_failures} times in a row (last code {rc})")
        for turn in turns:
            self._release(turn.slot)
            self._finish(turn, "error", Failed("decode_failed", f"the model could not process this turn (llama_decode returned {rc})"))

    def _fail_everything(self, reason: str) -> None:
        """The thread is ending for good: every turn, running, waiting or just submitted, gets an error."""
        self.failure = reason
        error = Failed("engine_failed", reason)
        for turn in list(self.active):
            self._finish(turn, "error", error)
        self._take_commands(0)
        for req in list(self.waiting):
            self._dequeue(req)
            self._emit(req, error)
        self._flush_outbox()

    def _finish(self, turn: ActiveTurn, reason: str, error: Failed | None = None) -> None:
        """End a turn: its usage goes out as `Done`, or `error` instead."""
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
        self._emit(turn.req, Done(usage) if error is None else error)

    # -- session state -----------------------------------------------------------
    def _drop(self, session_id: str) -> None:
        for req in [r for r in self.waiting if r.session_id == session_id]:
            self._dequeue(req)
            self._emit(req, Done.before_start())
        for slot in self.slots:
            if session_id in (slot.session_id, slot.former_session):
                if slot.turn is not None:
                    self._finish(slot.turn, "cancelled")
                self._release(slot)
        self.kv.drop(session_id)
        self.window.forget(session_id)

    def _save_all_slots(self) -> None:
        """At shutdown: every resident idle session's state goes to the store (written before it closes)."""
        for slot in self.slots:
            if slot.session_id is not None and slot.tokens and slot.turn is None and slot.seq not in self._copies_pending:
                self.kv.put(slot.session_id, slot.tokens, self.model.seq_state(slot.seq))


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common start of two token lists (compared a block at a time, in C)."""
    n = min(len(a), len(b))
    i = 0
    while i + 64 <= n and a[i:i + 64] == b[i:i + 64]:
        i += 64
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _deliver(events: list[tuple[TurnRequest, TurnEvent]], delivered: threading.Event) -> None:
    try:
        for req, event in events:
            try:
                req.emit(event)
            except Exception:
                log.exception("turn event handler failed", extra={"session_id": req.session_id})
    finally:
        delivered.set()
