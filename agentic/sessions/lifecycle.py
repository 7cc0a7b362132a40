"""Session lifecycle: lookup with expiry, creation, removal with everything attached, and the cleanup loop."""

from __future__ import annotations

import asyncio
import heapq
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from agentic.errors import Busy, NotFound
from agentic.ids import new_session_id
from agentic.sessions.models import ChatSettings, FileRecord, Message, SearchHit, SessionRecord, now
from agentic.sessions.backend import Store, StoreStats

log = logging.getLogger("agentic.sessions")

RemovalHook = Callable[[str], Awaitable[None]]
Listener = Callable[[SessionRecord], None]
Sweeper = Callable[[set[str]], None]

MAX_TITLE_CHARS = 200
MAX_SYSTEM_PROMPT_CHARS = 8000
# Sessions looked at per event-loop slice while a listing is built.
LISTING_SLICE = 500

ListingKey = tuple[float, str]


def listing_key(record: SessionRecord) -> ListingKey:
    """Listings run newest activity first; the key names a session by its public 8-character
    prefix only, so a cursor built from it reveals no more than the listing does."""
    return (record.last_activity, record.session_id[:8])


@dataclass
class Listing:
    """One page of live sessions, newest activity first, with counts over all live sessions."""

    records: list[SessionRecord]
    next_after: ListingKey | None
    active: int = 0
    by_client: dict[str, int] = field(default_factory=dict)
    uploads_bytes: int = 0


class SessionManager:
    """The one entry to session data: views, chat and uploads read and change sessions through it,
    never through the store, so expiry, limits and the listeners see every change."""

    def __init__(self, store: Store, timeout_s: float, max_sessions: int) -> None:
        self.store = store
        store.on_gone = self._removed_elsewhere
        self.max_sessions = max_sessions
        self.timeout_s = timeout_s
        self._sweepers: list[Sweeper] = []
        self._removal_hooks: list[RemovalHook] = []
        self._created_listeners: list[Listener] = []
        self._expired_listeners: list[Listener] = []

    def on_removed(self, hook: RemovalHook) -> None:
        """Run `hook(session_id)` whenever a session is deleted or expires."""
        self._removal_hooks.append(hook)

    def on_created(self, listener: Listener) -> None:
        """Call `listener(record)` after each session is created (metrics count them)."""
        self._created_listeners.append(listener)

    def on_sweep(self, sweeper: Sweeper) -> None:
        """Run `sweeper(live_session_ids)` in a thread after each cleanup, so the owner of a
        session's data removes what no live session owns (left by a crash mid-delete)."""
        self._sweepers.append(sweeper)

    def on_expired(self, listener: Listener) -> None:
        """Call `listener(record)` after a session is removed by expiry."""
        self._expired_listeners.append(listener)

    def is_expired(self, record: SessionRecord) -> bool:
        return record.expires_at(self.timeout_s) <= now()

    def get_live(self, session_id: str, touch: bool = True) -> SessionRecord:
        record = self.store.sessions.get(session_id)
        if record is None or self.is_expired(record):
            raise NotFound("session_not_found", "unknown or expired session")
        if touch:
            self.store.touch(record)
        return record

    async def create(self, client_id: str | None = None, system_prompt: str = "", settings: ChatSettings | None = None, title: str | None = None) -> SessionRecord:
        if len(self.store.sessions) >= self.max_sessions:
            raise Busy("too_many_sessions", f"the server holds its maximum of {self.max_sessions} sessions; delete one or wait for one to expire")
        record = await self.store.create(new_session_id(), client_id, system_prompt, settings or ChatSettings(), title or "New chat")
        for listener in self._created_listeners:
            listener(record)
        log.info("session created", extra={"session_id": record.session_id})
        return record

    @property
    def stats(self) -> StoreStats:
        return self.store.stats

    def count(self) -> int:
        """Sessions held, expired ones not yet cleaned up included."""
        return len(self.store.sessions)

    def exists(self, session_id: str) -> bool:
        return session_id in self.store.sessions

    def records(self) -> list[SessionRecord]:
        return list(self.store.records())

    def find(self, session_id: str) -> SessionRecord | None:
        """The session if it is still held, without refreshing it (a turn finishing after a delete)."""
        return self.store.sessions.get(session_id)

    async def update(self, record: SessionRecord, *, title: str | None = None, system_prompt: str | None = None, settings: ChatSettings | None = None) -> None:
        await self.store.update(record, title=title, system_prompt=system_prompt, settings=settings)

    async def add_message(self, record: SessionRecord, role: str, content: str, usage: dict[str, Any] | None = None, message_id: str | None = None,
                          alternatives: tuple[str, ...] = ()) -> Message:
        return await self.store.add_message(record, role, content, usage, message_id, alternatives)

    async def rewrite_after(self, record: SessionRecord, message_id: str, content: str | None = None) -> None:
        """Drop the messages after `message_id` (edit, regenerate); with `content`, that message's new text."""
        await self.store.rewrite_after(record, message_id, content)

    async def messages(self, session_id: str) -> list[Message]:
        return await self.store.messages(session_id)

    async def clear_messages(self, record: SessionRecord) -> None:
        await self.store.clear_messages(record)

    async def search(self, terms: list[str], session_ids: list[str], limit: int) -> list[SearchHit]:
        return await self.store.search(terms, session_ids, limit)

    async def add_file(self, record: SessionRecord, file: FileRecord) -> None:
        await self.store.add_file(record, file)

    async def remove_file(self, record: SessionRecord, name: str) -> None:
        await self.store.remove_file(record, name)

    async def listing(self, limit: int, after: ListingKey | None = None) -> Listing:
        """The `limit` live sessions after `after` in listing order. Built in slices with an await
        between them, so thousands of sessions never hold the event loop for long."""
        records = list(self.store.sessions.values())
        page: list[tuple[ListingKey, str, SessionRecord]] = []
        listing = Listing([], None)
        candidates = 0
        at = now()
        for start in range(0, len(records), LISTING_SLICE):
            if start:
                await asyncio.sleep(0)
            for record in records[start:start + LISTING_SLICE]:
                if record.expires_at(self.timeout_s) <= at:
                    continue
                listing.active += 1
                client = record.client_id or "unknown"
                listing.by_client[client] = listing.by_client.get(client, 0) + 1
                listing.uploads_bytes += sum(f.size for f in record.files.values())
                key = listing_key(record)
                if after is not None and key >= after:
                    continue
                candidates += 1
                item = (key, record.session_id, record)
                if len(page) < limit:
                    heapq.heappush(page, item)
                elif item > page[0]:
                    heapq.heapreplace(page, item)
        listing.records = [record for _, _, record in sorted(page, reverse=True) if record.session_id in self.store.sessions]
        if candidates > limit and listing.records:
            listing.next_after = listing_key(listing.records[-1])
        return listing

    async def remove(self, session_id: str) -> bool:
        record = await self.store.delete(session_id)
        if record is None:
            return False
        await self._run_removal_hooks(session_id)
        log.info("session deleted", extra={"session_id": session_id})
        return True

    async def _run_removal_hooks(self, session_id: str) -> None:
        for hook in self._removal_hooks:
            try:
                await hook(session_id)
            except Exception:
                log.exception("session removal hook failed", extra={"session_id": session_id})

    async def _removed_elsewhere(self, session_id: str) -> None:
        """Another main server deleted or expired the session: drop what this one holds of it."""
        await self._run_removal_hooks(session_id)

    async def cleanup_once(self) -> int:
        """Remove the expired sessions. Every server of a cluster runs it; the store hands each
        expired session to one of them, which removes its files and counts it."""
        expired = await self.store.take_expired(now() - self.timeout_s)
        for record in expired:
            await self._run_removal_hooks(record.session_id)
            for listener in self._expired_listeners:
                listener(record)
            log.info("session expired", extra={"session_id": record.session_id})
        await self.store.flush_activity()
        live = await self.store.live_ids()
        for sweeper in self._sweepers:
            await asyncio.to_thread(sweeper, live)
        return len(expired)

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
