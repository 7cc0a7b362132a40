"""Per-session KV cache state, kept in RAM and written to disk by a thread of its own.

An evicted session's state is taken out of the KV cache into RAM (a memory copy) by the
inference thread, which never waits for the disk: this store's I/O thread writes it, and
reads it back into RAM when a session is about to need it (`prefetch`, or `ready` at
admission). RAM keeps the most recently used states up to a byte budget; beyond it, the
oldest states that are already on disk leave RAM.

File layout: MAGIC, 4-byte header length, JSON header {"model", "tokens"}, then llama.cpp's
per-sequence state. The header's tokens say what the state holds; it is used only when
they are a prefix of the prompt being answered, and only by the session it is named for.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("agentic.engine")

MAGIC = b"AGKV1\n"
SUFFIX = ".kv"


# A state read back from disk stays in RAM this long, whatever the budget, for the turn it was read for.
PINNED_S = 60.0


@dataclass
class SavedState:
    tokens: list[int]
    state: bytes
    on_disk: bool = False
    pinned_until: float = 0.0

    @property
    def size(self) -> int:
        return len(self.state)


class KvStore:
    def __init__(self, folder: Path, model_identity: str, ram_budget_bytes: int = 256 * 2**20) -> None:
        self.folder = folder
        self.model_identity = model_identity
        self.ram_budget_bytes = ram_budget_bytes
        # Called on the I/O thread when a read asked for by `ready` or `prefetch` is done.
        self.on_loaded: Callable[[str], None] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._ram: OrderedDict[str, SavedState] = OrderedDict()  # least recently used first
        self._ram_bytes = 0
        self._known = {p.name[:-len(SUFFIX)] for p in os.scandir(folder) if p.name.endswith(SUFFIX)}
        self._loading: set[str] = set()
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.io_thread = threading.Thread(target=self._io, name="kv-store-io", daemon=True)
        self.io_thread.start()

    def path(self, session_id: str) -> Path:
        return self.folder / f"{session_id}{SUFFIX}"

    # -- any thread ------------------------------------------------------------------
    def put(self, session_id: str, tokens: list[int], state: bytes) -> None:
        """Keep a session's state in RAM now and write it to disk soon."""
        saved = SavedState(list(tokens), state)
        with self._lock:
            self._set(session_id, saved)
            self._known.add(session_id)
        self._jobs.put(("write", (session_id, saved)))

    def take(self, session_id: str) -> SavedState | None:
        """The state held in RAM for this session, if any; it leaves RAM (the disk copy stays)."""
        with self._lock:
            saved = self._ram.pop(session_id, None)
            if saved is not None:
                self._ram_bytes -= saved.size
            return saved

    def ready(self, session_id: str) -> bool:
        """True when a restore needs no disk read: the state is in RAM, or there is none.
        Otherwise starts reading it (see prefetch) and says False."""
        with self._lock:
            if session_id in self._ram or session_id not in self._known:
                return True
        self.prefetch(session_id)
        return False

    def prefetch(self, session_id: str) -> None:
        """Read a session's saved state into RAM on the I/O thread, unless it is there already."""
        with self._lock:
            if session_id in self._ram or session_id not in self._known or session_id in self._loading:
                return
            self._loading.add(session_id)
        self._jobs.put(("load", session_id))

    def drop(self, session_id: str) -> None:
        with self._lock:
            saved = self._ram.pop(session_id, None)
            if saved is not None:
                self._ram_bytes -= saved.size
            self._known.discard(session_id)
        self._jobs.put(("delete", session_id))

    def in_ram(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._ram

    def flush(self) -> None:
        """Wait until every write asked for so far is on disk."""
        done = threading.Event()
        self._jobs.put(("flush", done))
        while not done.wait(0.5):
            if not self.io_thread.is_alive():  # closed: nothing more will be written
                return

    def close(self) -> None:
        self._jobs.put(None)
        self.io_thread.join()

    # -- RAM ----------------------------------------------------------------------------
    def _set(self, session_id: str, saved: SavedState) -> None:
        old = self._ram.pop(session_id, None)
        if old is not None:
            self._ram_bytes -= old.size
        self._ram[session_id] = saved
        self._ram_bytes += saved.size
        self._trim()

    def _trim(self) -> None:
        """Over budget: the oldest states already on disk leave RAM (unwritten ones wait for
        their write, and ones just read back for a turn wait for it)."""
        now = time.monotonic()
        for session_id in [s for s, saved in self._ram.items() if saved.on_disk and saved.pinned_until < now]:
            if self._ram_bytes <= self.ram_budget_bytes:
                return
            self._ram_bytes -= self._ram.pop(session_id).size

    # -- the I/O thread --------------------------------------------------------------
    def _io(self) -> None:
        while (job := self._jobs.get()) is not None:
            kind, arg = job
            try:
                if kind == "write":
                    self._write(*arg)
                elif kind == "load":
                    self._load(arg)
                elif kind == "delete":
                    self.path(arg).unlink(missing_ok=True)
                elif kind == "flush":
                    arg.set()
            except Exception:  # one failed job must not end the thread every later save and restore waits on
                log.exception("KV state %s failed", kind)

    def _write(self, session_id: str, saved: SavedState) -> None:
        with self._lock:
            if self._ram.get(session_id) is not saved:  # taken, dropped or replaced since
                return
        header = json.dumps({"model": self.model_identity, "tokens": saved.tokens}).encode()
        target = self.path(session_id)
        tmp = target.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + struct.pack("<I", len(header)) + header)
            f.write(saved.state)
        os.replace(tmp, target)
        with self._lock:
            saved.on_disk = True
            if session_id not in self._known:  # dropped while it was being written
                target.unlink(missing_ok=True)
            self._trim()

    def _load(self, session_id: str) -> None:
        saved = self.read(session_id)
        with self._lock:
            self._loading.discard(session_id)
            if saved is None:
                self._known.discard(session_id)
            elif session_id in self._known and session_id not in self._ram:
                saved.pinned_until = time.monotonic() + PINNED_S
                self._set(session_id, saved)
        if self.on_loaded is not None:
            self.on_loaded(session_id)

    def read(self, session_id: str) -> SavedState | None:
        """The state saved on disk for this session (blocking; the I/O thread and tests use it)."""
        try:
            data = self.path(session_id).read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
            return None
        (size,) = struct.unpack_from("<I", data, len(MAGIC))
        start = len(MAGIC) + 4
        try:
            header = json.loads(data[start:start + size])
        except ValueError:
            return None
        if header.get("model") != self.model_identity:
            return None
        return SavedState(list(header["tokens"]), data[start + size:], on_disk=True)
