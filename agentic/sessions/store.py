"""SQLite (WAL) store for sessions, messages and file records: the default backend of
agentic.sessions.backend.Store, for one main server.

Session metadata is mirrored in memory so reads never touch the disk; every change is
committed to SQLite on the store's own thread before the caller's await returns, so
an acknowledged change survives `kill -9`. Activity times are the exception: they are
flushed once a second, because losing a second of idle time is harmless.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

from agentic.errors import SessionGone
from agentic.sessions.backend import StoreStats, pending_migrations
from agentic.sessions.models import ChatSettings, FileRecord, Message, SearchHit, SessionRecord, now

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    client_id TEXT,
    title TEXT NOT NULL,
    created_at REAL NOT NULL,
    last_activity REAL NOT NULL,
    system_prompt TEXT NOT NULL,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    usage TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_session ON messages(session_id, seq);
CREATE TABLE IF NOT EXISTS files (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    uploaded_at REAL NOT NULL,
    extracted_chars INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Full-text search (POST /search): messages through an FTS5 index kept on the messages table
# itself, titles and file names in a small index of their own; triggers keep both in step with
# every write, cascades included, whoever makes it.
SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='seq', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    INSERT INTO messages_fts(rowid, content) VALUES (new.seq, new.content);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
CREATE VIRTUAL TABLE labels_fts USING fts5(label, session_id UNINDEXED, kind UNINDEXED, tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER labels_title_insert AFTER INSERT ON sessions BEGIN
    INSERT INTO labels_fts(label, session_id, kind) VALUES (new.title, new.id, 'title');
END;
CREATE TRIGGER labels_title_update AFTER UPDATE OF title ON sessions BEGIN
    DELETE FROM labels_fts WHERE session_id = old.id AND kind = 'title';
    INSERT INTO labels_fts(label, session_id, kind) VALUES (new.title, new.id, 'title');
END;
CREATE TRIGGER labels_session_delete AFTER DELETE ON sessions BEGIN
    DELETE FROM labels_fts WHERE session_id = old.id;
END;
CREATE TRIGGER labels_file_insert AFTER INSERT ON files BEGIN
    DELETE FROM labels_fts WHERE session_id = new.session_id AND kind = 'file' AND label = new.name;
    INSERT INTO labels_fts(label, session_id, kind) VALUES (new.name, new.session_id, 'file');
END;
CREATE TRIGGER labels_file_delete AFTER DELETE ON files BEGIN
    DELETE FROM labels_fts WHERE session_id = old.session_id AND kind = 'file' AND label = old.name;
END;
INSERT INTO labels_fts(label, session_id, kind) SELECT title, id, 'title' FROM sessions;
INSERT INTO labels_fts(label, session_id, kind) SELECT name, session_id, 'file' FROM files;
"""
# snippet() and highlight() mark matches with these (private-use characters, never typed).
MATCH_OPEN, MATCH_CLOSE = "\ue000", "\ue001"

# Schema version N (PRAGMA user_version) is the effect of the first N scripts; a change of the
# schema is a new script at the end. Version 1 is also what databases from before versions hold.
MIGRATIONS = [SCHEMA, SEARCH_SCHEMA, "ALTER TABLE messages ADD COLUMN alternatives TEXT"]

class SessionStore:
    def __init__(self, db_path: Path) -> None:
        self._db_path = db_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self.sessions: dict[str, SessionRecord] = {}
        self.stats = StoreStats()
        self._dirty_activity: set[str] = set()
        self.on_gone: Callable[[str], Awaitable[None]] | None = None  # one server: nothing is removed elsewhere

    # -- plumbing -------------------------------------------------------------
    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.IntegrityError as exc:  # a row for a session deleted since the caller found it
            if "FOREIGN KEY" not in str(exc):
                raise
            raise SessionGone() from None

    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "store is not open"
        return self._conn

    async def open(self) -> None:
        self._db_path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process crashes
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn
        self._migrate_sync()
        self._load_sync()

    def _migrate_sync(self) -> None:
        db = self._db()
        for version, script in pending_migrations(db.execute("PRAGMA user_version").fetchone()[0], MIGRATIONS):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {version}; COMMIT;")

    async def ensure(self, session_id: str) -> None:
        """Nothing to do: this server's mirror holds every session of its database."""

    async def live_ids(self) -> set[str]:
        return set(self.sessions)

    def _load_sync(self) -> None:
        db = self._db()
        counts = dict(db.execute("SELECT session_id, COUNT(*) FROM messages GROUP BY session_id").fetchall())
        for row in db.execute("SELECT id, client_id, title, created_at, last_activity, system_prompt, settings FROM sessions"):
            sid = row[0]
            self.sessions[sid] = SessionRecord(
                session_id=sid, client_id=row[1], title=row[2], created_at=row[3], last_activity=row[4],
                system_prompt=row[5], settings=ChatSettings(**json.loads(row[6])), message_count=counts.get(sid, 0),
            )
        for row in db.execute("SELECT session_id, name, size, content_type, uploaded_at, extracted_chars, sha256, status, note FROM files ORDER BY uploaded_at"):
            record = self.sessions.get(row[0])
            if record is not None:
                record.files[row[1]] = FileRecord(*row[1:])
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        self.stats = StoreStats(
            total_created=counters.get("total_created", len(self.sessions)),
            expired=counters.get("expired", 0),
            total_messages=counters.get("total_messages", sum(counts.values())),
        )

    async def close(self) -> None:
        await self.flush_activity()
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
            self._conn = None

    def _bump_counter(self, name: str, by: int) -> None:
        self._db().execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    # -- sessions -------------------------------------------------------------
    async def create(self, session_id: str, client_id: str | None, system_prompt: str, settings: ChatSettings, title: str = "New chat") -> SessionRecord:
        ts = now()
        record = SessionRecord(session_id, client_id, title, ts, ts, system_prompt, settings)
        await self._run(self._insert_session_sync, record)
        self.sessions[session_id] = record
        self.stats.total_created += 1
        return record

    def _insert_session_sync(self, r: SessionRecord) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (r.session_id, r.client_id, r.title, r.created_at, r.last_activity, r.system_prompt, json.dumps(r.settings.to_json())),
            )
            self._bump_counter("total_created", 1)

    async def update(self, record: SessionRecord, *, title: str | None = None, system_prompt: str | None = None, settings: ChatSettings | None = None) -> None:
        new_title = record.title if title is None else title
        new_prompt = record.system_prompt if system_prompt is None else system_prompt
        new_settings = record.settings if settings is None else settings
        await self._run(self._update_session_sync, record.session_id, new_title, new_prompt, json.dumps(new_settings.to_json()))
        record.title, record.system_prompt, record.settings = new_title, new_prompt, new_settings

    def _update_session_sync(self, sid: str, title: str, prompt: str, settings: str) -> None:
        self._db().execute("UPDATE sessions SET title = ?, system_prompt = ?, settings = ? WHERE id = ?", (title, prompt, settings, sid))

    def touch(self, record: SessionRecord) -> None:
        record.last_activity = now()
        self._dirty_activity.add(record.session_id)

    async def flush_activity(self) -> None:
        if not self._dirty_activity:
            return
        rows = [(self.sessions[s].last_activity, s) for s in self._dirty_activity if s in self.sessions]
        self._dirty_activity.clear()
        await self._run(self._flush_activity_sync, rows)

    def _flush_activity_sync(self, rows: list[tuple[float, str]]) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.executemany("UPDATE sessions SET last_activity = ? WHERE id = ?", rows)

    async def delete(self, session_id: str, expired: bool = False) -> SessionRecord | None:
        record = self.sessions.pop(session_id, None)
        self._dirty_activity.discard(session_id)
        if record is None:
            return None
        await self._run(self._delete_sync, session_id, expired)
        if expired:
            self.stats.expired += 1
        return record

    def _delete_sync(self, sid: str, expired: bool) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            if expired:
                self._bump_counter("expired", 1)

    async def take_expired(self, idle_before: float) -> list[SessionRecord]:
        await self.flush_activity()
        taken = [sid for sid, r in self.sessions.items() if r.last_activity < idle_before]
        removed = [await self.delete(sid, expired=True) for sid in taken]
        return [record for record in removed if record is not None]

    # -- messages -------------------------------------------------------------
    async def add_message(self, record: SessionRecord, role: str, content: str, usage: dict[str, Any] | None = None, message_id: str | None = None,
                          alternatives: tuple[str, ...] = ()) -> Message:
        message = Message(message_id or str(uuid.uuid4()), role, content, now(), usage, alternatives)
        await self._run(self._insert_message_sync, record.session_id, message)
        record.message_count += 1
        self.stats.total_messages += 1
        return message

    def _insert_message_sync(self, sid: str, m: Message) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO messages(id, session_id, role, content, created_at, usage, alternatives) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (m.id, sid, m.role, m.content, m.created_at, None if m.usage is None else json.dumps(m.usage), json.dumps(m.alternatives) if m.alternatives else None),
            )
            self._bump_counter("total_messages", 1)

    async def messages(self, session_id: str) -> list[Message]:
        return await self._run(self._messages_sync, session_id)

    def _messages_sync(self, sid: str) -> list[Message]:
        rows = self._db().execute(
            "SELECT id, role, content, created_at, usage, alternatives FROM messages WHERE session_id = ? ORDER BY seq", (sid,)
        ).fetchall()
        return [Message(r[0], r[1], r[2], r[3], None if r[4] is None else json.loads(r[4]), tuple(json.loads(r[5] or "[]"))) for r in rows]

    async def rewrite_after(self, record: SessionRecord, message_id: str, content: str | None = None) -> None:
        """Drop every message after `message_id` and, with `content`, give that message this text."""
        record.message_count -= await self._run(self._rewrite_after_sync, record.session_id, message_id, content)

    def _rewrite_after_sync(self, sid: str, message_id: str, content: str | None) -> int:
        db = self._db()
        with db:
            db.execute("BEGIN")
            (seq,) = db.execute("SELECT seq FROM messages WHERE session_id = ? AND id = ?", (sid, message_id)).fetchone()
            if content is not None:
                db.execute("UPDATE messages SET content = ? WHERE seq = ?", (content, seq))
            return db.execute("DELETE FROM messages WHERE session_id = ? AND seq > ?", (sid, seq)).rowcount

    async def clear_messages(self, record: SessionRecord) -> None:
        await self._run(self._clear_sync, record.session_id)
        record.message_count = 0

    def _clear_sync(self, sid: str) -> None:
        self._db().execute("DELETE FROM messages WHERE session_id = ?", (sid,))

    # -- files ----------------------------------------------------------------
    async def add_file(self, record: SessionRecord, file: FileRecord) -> None:
        await self._run(self._insert_file_sync, record.session_id, file)
        record.files[file.name] = file

    def _insert_file_sync(self, sid: str, f: FileRecord) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, f.name, f.size, f.content_type, f.uploaded_at, f.extracted_chars, f.sha256, f.status, f.note),
        )

    async def remove_file(self, record: SessionRecord, name: str) -> None:
        await self._run(self._remove_file_sync, record.session_id, name)
        record.files.pop(name, None)

    def _remove_file_sync(self, sid: str, name: str) -> None:
        self._db().execute("DELETE FROM files WHERE session_id = ? AND name = ?", (sid, name))

    # -- search ---------------------------------------------------------------
    async def search(self, terms: Sequence[str], session_ids: Sequence[str], limit: int) -> list[SearchHit]:
        """Titles, file names and messages of `session_ids` that hold every one of `terms` (each
        matched as the start of a word), titles and file names first, then the best messages."""
        if not terms or not session_ids:
            return []
        query = " ".join('"' + term.replace('"', '""') + '"*' for term in terms)
        return await self._run(self._search_sync, query, list(session_ids), limit)

    def _search_sync(self, query: str, session_ids: list[str], limit: int) -> list[SearchHit]:
        db = self._db()
        within = ",".join("?" * len(session_ids))
        labels = db.execute(
            f"SELECT session_id, kind, highlight(labels_fts, 0, ?, ?) FROM labels_fts "
            f"WHERE labels_fts MATCH ? AND session_id IN ({within}) ORDER BY rank LIMIT ?",
            (MATCH_OPEN, MATCH_CLOSE, query, *session_ids, limit),
        ).fetchall()
        messages = db.execute(
            f"SELECT m.session_id, m.id, m.role, snippet(messages_fts, 0, ?, ?, '…', 24) FROM messages_fts "
            f"JOIN messages m ON m.seq = messages_fts.rowid WHERE messages_fts MATCH ? AND m.session_id IN ({within}) ORDER BY rank LIMIT ?",
            (MATCH_OPEN, MATCH_CLOSE, query, *session_ids, limit - len(labels)),
        ).fetchall()
        return [SearchHit(sid, kind, _marked(text)) for sid, kind, text in labels] + [
            SearchHit(sid, "message", _marked(text), message_id, role) for sid, message_id, role, text in messages
        ]

    # -- queries --------------------------------------------------------------
    def records(self) -> Iterable[SessionRecord]:
        return self.sessions.values()


def _marked(text: str) -> tuple[tuple[str, bool], ...]:
    """snippet()/highlight() output as (text, is_match) pieces."""
    pieces = re.split(f"{MATCH_OPEN}(.*?){MATCH_CLOSE}", text, flags=re.S)
    return tuple((piece, i % 2 == 1) for i, piece in enumerate(pieces) if piece)
