"""The event-loop side of the engine: loads the model off-loop, owns the inference thread, takes turns."""

from __future__ import annotations

import asyncio
import logging
import sys
import queue
import threading
from concurrent.futures import Executor, Future
from pathlib import Path

from agentic.config import EngineSettings
from agentic.engine.kv_store import SUFFIX, KvStore
from agentic.engine.types import EngineBusy, EngineNotReady, TurnRequest

log = logging.getLogger("agentic.engine")

SWITCH_INTERVAL_S = 0.0005


class InferenceThread(Executor):
    """One daemon thread running the jobs given to it in order (a process that exits without
    stopping the engine is not held up by it, as it would be by a ThreadPoolExecutor's)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="inference", daemon=True)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:
                    future.set_exception(exc)


class Engine:
    def __init__(self, settings: EngineSettings, kv_dir: Path) -> None:
        self.settings = settings
        self.kv_dir = kv_dir
        self.model = None
        self.scheduler = None
        self.load_error: str | None = None
        self._switch_interval: float | None = None  # the process's own, while ours is set
        self._loaded = asyncio.Event()
        # Every llama.cpp call that computes runs on this one thread. OpenMP keeps a team of
        # worker threads for each thread that starts a parallel region; a second one beside the
        # first made every decode ~35 % slower on 2 cores (measured: 10.4 vs 7.5 ms a token).
        self._inference = InferenceThread()

    @property
    def ready(self) -> bool:
        return self.scheduler is not None and self.scheduler.failure is None

    @property
    def error(self) -> str | None:
        """Why the engine takes no turns: a failed load or self-check, or a dead inference thread."""
        if self.scheduler is not None and self.scheduler.failure is not None:
            return self.scheduler.failure
        return self.load_error

    @property
    def model_name(self) -> str:
        if self.model is not None:
            return self.model.name
        return Path(self.settings.model_path).name if self.settings.model_path else "none"

    @property
    def gpu_offload(self) -> bool:
        return bool(self.model is not None and self.model.gpu_offload)

    async def start(self) -> None:
        """Load the model on a worker thread, then start the inference thread."""
        from agentic.engine.model import LlamaModel
        from agentic.engine.prefill import PrefillPolicy, measure_prefill_costs
        from agentic.engine.scheduler import Scheduler
        from agentic.engine.self_check import run_self_check

        try:
            self.model = await self._on_inference_thread(LlamaModel, self.settings)
            # A build that cannot run on this CPU fails here, at start, not at a person's first message.
            await self._on_inference_thread(run_self_check, self.model)
            costs = await self._on_inference_thread(measure_prefill_costs, self.model)
        except Exception as exc:
            self.load_error = str(exc)
            log.error("model failed to load: %s", exc)
            self._loaded.set()
            return
        identity = f"{self.model.path.name}:{self.model.path.stat().st_size}:{self.model.n_ctx_seq}"
        kv = KvStore(self.kv_dir, identity, self.settings.kv_ram_mb * 2**20)
        policy = PrefillPolicy(costs, self.model.n_batch)
        self.scheduler = Scheduler(self.model, kv, asyncio.get_running_loop(), self.settings.prefill_chunk, self.settings.parallel, policy)
        # The inference thread comes back from each llama_decode needing the GIL; with the
        # default 5 ms switch interval it can wait that long behind the event loop every step.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.scheduler.start(self._inference)
        self._loaded.set()

    def _on_inference_thread(self, fn, *args):
        return asyncio.get_running_loop().run_in_executor(self._inference, fn, *args)

    async def wait_loaded(self) -> None:
        await self._loaded.wait()

    async def stop(self) -> None:
        if self.scheduler is not None:
            scheduler, self.scheduler = self.scheduler, None
            await asyncio.to_thread(scheduler.stop)
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self.model is not None:
            self.model.close()
            self.model = None
        self._inference.shutdown(wait=False)

    def submit(self, req: TurnRequest) -> None:
        if not self.ready:
            raise EngineNotReady(self.error or "the model is still loading")
        if self.scheduler.waiting_count >= self.settings.max_queue:
            raise EngineBusy(f"{self.scheduler.waiting_count} turns are already waiting for the model")
        self.scheduler.prefetch(req.session_id)
        self.scheduler.submit(req)

    def announce(self, session_id: str) -> None:
        """A turn for this session is on its way (its message is being stored): a burst's first
        step waits a moment for it, so the burst's prompts are planned together."""
        if self.scheduler is not None:
            self.scheduler.announce(session_id)

    def withdraw(self, session_id: str) -> None:
        """An announced turn that will not be submitted."""
        if self.scheduler is not None:
            self.scheduler.withdraw(session_id)

    def prefetch(self, session_id: str) -> None:
        """A session is about to be used (its socket connected, its page opened): start reading
        its saved model state from disk into RAM, so its first turn does not wait for the disk."""
        if self.scheduler is not None:
            self.scheduler.prefetch(session_id)

    async def drop_session(self, session_id: str) -> None:
        """Forget a session's cached model state, in memory and on disk."""
        if self.scheduler is None or self.scheduler.failure is not None:  # no thread to ask
            (self.kv_dir / f"{session_id}{SUFFIX}").unlink(missing_ok=True)
            return
        done = asyncio.get_running_loop().create_future()
        self.scheduler.drop_session(session_id, lambda: done.done() or done.set_result(None))
        await done

    def remove_orphans(self, live: set[str]) -> None:
        """Delete saved model state of sessions that are gone (a crash mid-delete). Blocking."""
        for state in self.kv_dir.glob(f"*{SUFFIX}") if self.kv_dir.is_dir() else ():
            if state.stem not in live:
                state.unlink(missing_ok=True)

    def clamp_max_tokens(self, requested: int | None) -> int:
        value = requested or self.settings.default_max_tokens
        return max(1, min(value, self.settings.max_tokens_cap, self.settings.ctx_per_session // 2))

    def stats(self) -> dict:
        if self.scheduler is None:
            return {}
        c = self.scheduler.counters
        return {
            "steps": c.steps,
            "multi_sequence_steps": c.multi_sequence_steps,
            "max_sequences_in_step": c.max_sequences_in_step,
            "tokens_generated": c.tokens_generated,
            "tokens_prefilled": c.tokens_prefilled,
            "turns_started": c.turns_started,
            "turns_finished": c.turns_finished,
            "evictions": c.evictions,
            "restores": c.restores,
            "prefix_shares": c.prefix_shares,
            "tokens_shared": c.tokens_shared,
            "max_prompts_in_step": c.max_prompts_in_step,
            "turns_moved": c.turns_moved,
            "close_outs": c.close_outs,
            "tokens_closed_out": c.tokens_closed_out,
            "decode_s": round(c.decode_s, 3),
            "handoff_s": round(c.handoff_s, 3),
            "busy_s": round(c.busy_s, 3),
            "kv_cells_used": sum(len(slot.tokens) for slot in self.scheduler.slots),
            "kv_cells": self.model.kv_cells,
            "sequences": self.model.n_seq,
            "resident_sessions": len(self.scheduler.resident),
            "waiting": self.scheduler.waiting_count,
            "active": len(self.scheduler.active),
        }
