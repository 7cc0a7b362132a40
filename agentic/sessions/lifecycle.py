"""Session lifecycle: lookup with expiry, creation, removal with everything attached, and the cleanup loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Awaitable, Callable

from agentic.api.errors import ApiError
from agentic.api.metrics import Metrics
from agentic.sessions.ids import new_session_id
from agentic.sessions.models import ChatSettings, SessionRecord, now
from agentic.sessions.store import SessionStore

log = logging.getLogger("agentic.sessions")

RemovalHook = Callable[[str], Awaitable[None]]

MAX_TITLE_CHARS = 200
MAX_SYSTEM_PROMPT_CHARS = 8000


class SessionManager:
    def __init__(self, store: SessionStore, uploads_dir: Path, kv_dir: Path, timeout_s: float, metrics: Metrics) -> None:
        self.store = store
        self.uploads_dir = uploads_dir
        self.kv_dir = kv_dir
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._removal_hooks: list[RemovalHook] = []

    def on_removed(self, hook: RemovalHook) -> None:
        """Run `hook(session_id)` whenever a session is deleted or expires."""
        self._removal_hooks.append(hook)

    def is_expired(self, record: SessionRecord) -> bool:
        return record.expires_at(self.timeout_s) <= now()

    def get_live(self, session_id: str, touch: bool = True) -> SessionRecord:
        record = self.store.sessions.get(session_id)
        if record is None or self.is_expired(record):
            raise ApiError(404, "session_not_found", "unknown or expired session")
        if touch:
            self.store.touch(record)
        return record

    async def create(self, client_id: str | None = None, system_prompt: str = "", settings: ChatSettings | None = None, title: str | None = None) -> SessionRecord:
        record = await self.store.create(new_session_id(), client_id, system_prompt, settings or ChatSettings(), title or "New chat")
        self.metrics.sessions_created.inc()
        log.info("session created", extra={"session_id": record.session_id})
        return record

    async def remove(self, session_id: str, expired: bool = False) -> bool:
        record = await self.store.delete(session_id, expired=expired)
        if record is None:
            return False
        for hook in self._removal_hooks:
            try:
                await hook(session_id)
            except Exception:
                log.exception("session removal hook failed", extra={"session_id": session_id})
        if expired:
            self.metrics.sessions_expired.inc()
        log.info("session %s", "expired" if expired else "deleted", extra={"session_id": session_id})
        return True

    async def cleanup_once(self) -> int:
        expired = self.store.expired_ids(self.timeout_s)
        for session_id in expired:
            await self.remove(session_id, expired=True)
        await self.store.flush_activity()
        await asyncio.to_thread(self._remove_orphans, set(self.store.sessions))
        return len(expired)

    def _remove_orphans(self, live: set[str]) -> None:
        """Saved model state whose session is gone (e.g. a crash mid-delete)."""
        if self.kv_dir.is_dir():
            for state in self.kv_dir.glob("*.kv"):
                if state.stem not in live:
                    state.unlink(missing_ok=True)

    async def run_cleanup_loop(self, interval_s: float) -> None:
        while True:
            try:
                await self.cleanup_once()
            except Exception:
                log.exception("session cleanup failed")
            await asyncio.sleep(interval_s)

    async def flush_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.store.flush_activity()
            except Exception:
                log.exception("activity flush failed")
