"""What every session store does, whichever database holds the data.

Two backends implement it: SQLite in DATA_DIR (agentic/sessions/store.py, the default) and
PostgreSQL shared by several main servers (agentic/sessions/pg_store.py). Both mirror session
metadata in `sessions`, so a lookup never waits for the database, and both commit every change
before the caller's await returns, so an acknowledged change survives `kill -9`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Protocol, Sequence

from agentic.sessions.models import ChatSettings, FileRecord, Message, SearchHit, SessionRecord


@dataclass
class StoreStats:
    total_created: int = 0
    expired: int = 0
    total_messages: int = 0


class SchemaTooNew(RuntimeError):
    """The database was written by a newer agentic than this one."""


def pending_migrations(current: int, migrations: Sequence[str]) -> list[tuple[int, str]]:
    """The (version, script) pairs a database at schema version `current` still needs; version
    N is the effect of the first N scripts."""
    if current > len(migrations):
        raise SchemaTooNew(f"the database has schema version {current}; this agentic knows versions up to {len(migrations)}")
    return [(version, migrations[version - 1]) for version in range(current + 1, len(migrations) + 1)]


class Store(Protocol):
    """Sessions, their messages and their file records. `sessions` mirrors every live session
    (on PostgreSQL: of the whole cluster, kept fresh by notifications from the other servers)."""

    sessions: dict[str, SessionRecord]
    stats: StoreStats
    # Called with a session's id when another server removed it, so this one drops what it holds.
    on_gone: Callable[[str], Awaitable[None]] | None

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ensure(self, session_id: str) -> None:
        """Mirror `session_id` now if the database has it and the mirror does not yet (a session
        created on another server a moment ago)."""

    async def live_ids(self) -> set[str]:
        """Every live session's id, as the database has it now: what a sweep may keep."""

    async def create(self, session_id: str, client_id: str | None, system_prompt: str, settings: ChatSettings, title: str = "New chat") -> SessionRecord: ...

    async def update(self, record: SessionRecord, *, title: str | None = None, system_prompt: str | None = None, settings: ChatSettings | None = None) -> None: ...

    def touch(self, record: SessionRecord) -> None: ...

    async def flush_activity(self) -> None: ...

    async def delete(self, session_id: str, expired: bool = False) -> SessionRecord | None:
        """Remove the session; None when it was not there (or another server removed it first)."""

    async def take_expired(self, idle_before: float) -> list[SessionRecord]:
        """Remove every session idle since before `idle_before` and return those this call
        removed: with several servers expiring at once, each session is returned to one."""

    async def add_message(self, record: SessionRecord, role: str, content: str, usage: dict[str, Any] | None = None, message_id: str | None = None,
                          alternatives: tuple[str, ...] = ()) -> Message: ...

    async def messages(self, session_id: str) -> list[Message]: ...

    async def rewrite_after(self, record: SessionRecord, message_id: str, content: str | None = None) -> None:
        """Drop every message after `message_id` and, with `content`, give that message this text."""

    async def search(self, terms: Sequence[str], session_ids: Sequence[str], limit: int) -> list[SearchHit]:
        """Titles, file names and messages of `session_ids` holding every term (as a word's start)."""

    async def clear_messages(self, record: SessionRecord) -> None: ...

    async def add_file(self, record: SessionRecord, file: FileRecord) -> None: ...

    async def remove_file(self, record: SessionRecord, name: str) -> None: ...

    def records(self) -> Iterable[SessionRecord]: ...
