"""PostgreSQL store (asyncpg): the sessions of several main servers in one database.

Each server mirrors every live session, as the SQLite store does, so lookups never wait for the
database. Every change is committed before the caller's await returns and, in the same
transaction, announced with NOTIFY; the other servers re-read the sessions named and so keep
their mirrors fresh within milliseconds. A full re-read every RESYNC_S covers notifications lost
while a connection was down. Expiry deletes with `DELETE ... RETURNING`: when every server runs
it at once, each expired session comes back to exactly one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence

import asyncpg

from agentic.errors import Invalid, NotFound, SessionGone
from agentic.sessions.backend import StoreStats, pending_migrations
from agentic.sessions.models import ChatSettings, FileRecord, Message, SearchHit, SessionRecord, now
from agentic.sessions.store import MATCH_CLOSE, MATCH_OPEN, _marked

log = logging.getLogger("agentic.sessions.pg")

CHANNEL = "agentic_sessions"
RESYNC_S = 30.0
COUNTERS_RETRY_S = 0.2
MIGRATION_LOCK = 0x61676E74  # advisory lock: servers starting together migrate one at a time

SEARCH_CONFIG = "agentic_words"  # the text search configuration of POST /search (see MIGRATIONS)

# Version N is the effect of the first N scripts; a schema change is a new script at the end.
# The columns are those of the SQLite schema, so `store copy` moves rows as they are.
MIGRATIONS = [
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        client_id TEXT,
        title TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        last_activity DOUBLE PRECISION NOT NULL,
        system_prompt TEXT NOT NULL,
        settings TEXT NOT NULL
    );
    CREATE INDEX sessions_by_activity ON sessions(last_activity);
    CREATE TABLE messages (
        seq BIGSERIAL PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        usage TEXT
    );
    CREATE INDEX messages_by_session ON messages(session_id, seq);
    CREATE TABLE files (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        size BIGINT NOT NULL,
        content_type TEXT NOT NULL,
        uploaded_at DOUBLE PRECISION NOT NULL,
        extracted_chars BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        status TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (session_id, name)
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    """,
    # POST /search: words of messages through a GIN index (lower case, no stemming);
    # titles and file names are few per session and read as they are.
    "CREATE INDEX messages_words ON messages USING gin (to_tsvector('simple', content))",
    "ALTER TABLE messages ADD COLUMN alternatives TEXT",
    # Search folds accents, as SQLite's index does ("cafe" finds "café"): words go through the
    # unaccent dictionary, where the server has that extension (contrib), before 'simple'.
    # The extension may live in a schema outside the search_path (managed hosts keep extensions
    # apart): its dictionary is named with its schema.
    f"""
    DO $$
    DECLARE
        home TEXT;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS unaccent;
        SELECT extnamespace::regnamespace::text INTO home FROM pg_extension WHERE extname = 'unaccent';
        CREATE TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} (COPY = simple);
        EXECUTE format('ALTER TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} ALTER MAPPING FOR word, hword, hword_part WITH %s.unaccent, simple', home);
    EXCEPTION WHEN undefined_file OR undefined_object OR insufficient_privilege OR feature_not_supported THEN
        RAISE WARNING 'agentic: search does not fold accents here (the unaccent extension is missing or not allowed): %', SQLERRM;
        CREATE TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} (COPY = simple);
    END $$;
    DROP INDEX messages_words;
    CREATE INDEX messages_words ON messages USING gin (to_tsvector('{SEARCH_CONFIG}', content));
    """,
]

SESSION_COLUMNS = "id, client_id, title, created_at, last_activity, system_prompt, settings"
FILE_COLUMNS = "session_id, name, size, content_type, uploaded_at, extracted_chars, sha256, status, note"
BAD_TEXT = (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError)
WORD = re.compile(r"\w+")  # a search term as POST /search passes it: safe inside a tsquery


def _log_server_warning(_conn: Any, message: asyncpg.PostgresLogMessage) -> None:
    if message.severity_en == "WARNING":  # not the notices of IF NOT EXISTS
        log.warning("PostgreSQL: %s", message.message)


def session_from_row(row: Any, message_count: int = 0) -> SessionRecord:
    return SessionRecord(
        session_id=row["id"], client_id=row["client_id"], title=row["title"], created_at=row["created_at"],
        last_activity=row["last_activity"], system_prompt=row["system_prompt"],
        settings=ChatSettings(**json.loads(row["settings"])), message_count=message_count,
    )


def _merge(into: SessionRecord, fresh: SessionRecord) -> None:
    """Update a mirrored record in place: views and turns may hold it."""
    into.title, into.system_prompt, into.settings = fresh.title, fresh.system_prompt, fresh.settings
    into.last_activity = max(into.last_activity, fresh.last_activity)
    into.message_count = fresh.message_count
    into.files.clear()
    into.files.update(fresh.files)


@dataclass
class _Snapshot:
    sessions: dict[str, SessionRecord]
    counters: dict[str, int]


class PostgresStore:
    def __init__(self, url: str, pool_size: int = 8) -> None:
        self._url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._token = uuid.uuid4().hex[:12]  # tells this store's own notifications from the others'
        self.sessions: dict[str, SessionRecord] = {}
        self.stats = StoreStats()
        self.on_gone: Callable[[str], Awaitable[None]] | None = None
        self._dirty_activity: set[str] = set()
        self._stale: set[str] = set()
        self._stale_event = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        # A refresh must not overwrite what this server changed while it read: each change
        # takes a number, and sessions changed after the refresh began (or during it) are skipped.
        self._seq = 0
        self._last_change: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._counters_behind = False  # a refresh read them while this server was changing them

    # -- plumbing -------------------------------------------------------------
    def _db(self) -> asyncpg.Pool:
        assert self._pool is not None, "store is not open"
        return self._pool

    def _hold(self, session_ids: list[str]) -> list[str]:
        """Mark these sessions as being changed here, until `_release`."""
        self._seq += 1
        for sid in session_ids:
            self._last_change[sid] = self._seq
            self._in_flight[sid] = self._in_flight.get(sid, 0) + 1
        return session_ids

    def _release(self, session_ids: list[str]) -> None:
        for sid in session_ids:
            self._in_flight[sid] -= 1
            if not self._in_flight[sid]:
                del self._in_flight[sid]

    async def _notify(self, conn: asyncpg.Connection, session_ids: list[str]) -> None:
        """Sent when the transaction commits: the other servers re-read these sessions."""
        await conn.execute("SELECT pg_notify($1, $2 || ' ' || id) FROM unnest($3::text[]) AS id", CHANNEL, self._token, session_ids)

    @contextlib.asynccontextmanager
    async def _change(self, *session_ids: str) -> AsyncIterator[asyncpg.Connection]:
        """A transaction changing these sessions. The caller updates its mirror right after it
        (no await between), while the sessions still count as being changed here."""
        held = self._hold(list(session_ids))
        try:
            async with self._db().acquire() as conn, conn.transaction():
                yield conn
                await self._notify(conn, held)
        except BAD_TEXT as exc:  # PostgreSQL text cannot hold NUL, which SQLite's can
            raise Invalid("invalid_field", "text must not contain NUL characters") from exc
        except asyncpg.ForeignKeyViolationError:  # a row for a session deleted since the caller found it
            raise SessionGone() from None
        finally:
            self._release(held)

    @staticmethod
    async def _bump_counter(conn: asyncpg.Connection, name: str, by: int) -> None:
        await conn.execute(
            "INSERT INTO counters(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = counters.value + EXCLUDED.value",
            name, by,
        )

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=self._pool_size, command_timeout=60)
        try:
            await self._migrate()
            await self._listen()
            await self._reload(None)
        except BaseException:  # a schema too new, the database going away: leave no connection open
            await self._disconnect()
            raise
        self._refresher = asyncio.create_task(self._refresh_loop(), name="store-refresh")

    async def _migrate(self) -> None:
        async with self._db().acquire() as conn:
            conn.add_log_listener(_log_server_warning)  # a migration that cannot do all it would says so
            try:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                    current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
                    for version, script in pending_migrations(current, MIGRATIONS):
                        await conn.execute(script)
                        await conn.execute("INSERT INTO schema_version VALUES ($1)", version)
            finally:
                conn.remove_log_listener(_log_server_warning)

    async def _listen(self) -> None:
        self._listener = await asyncpg.connect(self._url)
        await self._listener.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        token, _, session_id = payload.partition(" ")
        if token != self._token:
            self._stale.add(session_id)
            self._stale_event.set()

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.flush_activity()
        await self._disconnect()

    async def _disconnect(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        await self._db().close()
        self._pool = None

    # -- keeping the mirror fresh ---------------------------------------------
    async def _refresh_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stale_event.wait(), COUNTERS_RETRY_S if self._counters_behind else RESYNC_S)
                full = False
            except TimeoutError:
                full = not self._counters_behind
            self._stale_event.clear()
            ids, self._stale = self._stale, set()
            try:
                if full and (self._listener is None or self._listener.is_closed()):
                    await self._listen()
                await self._reload(None if full else ids)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("refreshing sessions from PostgreSQL failed; retrying at the next resync")

    async def ensure(self, session_id: str) -> None:
        if session_id not in self.sessions:
            await self._reload({session_id})

    async def _reload(self, ids: set[str] | None) -> None:
        """Re-read `ids` (None: every session) and bring the mirror in line."""
        async with self._reload_lock:
            start, busy = self._seq, set(self._in_flight)
            snapshot = await self._read(ids)
            gone = self._apply(snapshot, set(self.sessions) | set(snapshot.sessions) if ids is None else ids, start, busy)
            self._last_change = {sid: seq for sid, seq in self._last_change.items() if seq > start}
        for session_id in gone:
            if self.on_gone is not None:
                await self.on_gone(session_id)

    async def _read(self, ids: set[str] | None) -> _Snapshot:
        where = "" if ids is None else "WHERE {} = ANY($1::text[])"
        args = () if ids is None else (list(ids),)
        async with self._db().acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(f"SELECT {SESSION_COLUMNS} FROM sessions {where.format('id')}", *args)
            counts = dict(await conn.fetch(f"SELECT session_id, count(*) FROM messages {where.format('session_id')} GROUP BY session_id", *args))
            files = await conn.fetch(f"SELECT {FILE_COLUMNS} FROM files {where.format('session_id')} ORDER BY uploaded_at", *args)
            counters = dict(await conn.fetch("SELECT name, value FROM counters"))
        sessions = {row["id"]: session_from_row(row, counts.get(row["id"], 0)) for row in rows}
        for row in files:
            if row["session_id"] in sessions:
                sessions[row["session_id"]].files[row["name"]] = FileRecord(*list(row.values())[1:])
        return _Snapshot(sessions, counters)

    def _apply(self, snapshot: _Snapshot, ids: Iterable[str], start: int, busy: set[str]) -> list[str]:
        gone = []
        for sid in ids:
            if sid in busy or self._last_change.get(sid, 0) > start:
                continue
            fresh, held = snapshot.sessions.get(sid), self.sessions.get(sid)
            if fresh is None:
                if held is not None:
                    del self.sessions[sid]
                    self._dirty_activity.discard(sid)
                    gone.append(sid)
            elif held is None:
                self.sessions[sid] = fresh
            else:
                _merge(held, fresh)
        self._counters_behind = bool(self._seq != start or busy or self._in_flight)
        if not self._counters_behind:
            c = snapshot.counters
            self.stats = StoreStats(c.get("total_created", 0), c.get("expired", 0), c.get("total_messages", 0))
        return gone

    async def live_ids(self) -> set[str]:
        return {row["id"] for row in await self._db().fetch("SELECT id FROM sessions")}

    # -- sessions -------------------------------------------------------------
    async def create(self, session_id: str, client_id: str | None, system_prompt: str, settings: ChatSettings, title: str = "New chat") -> SessionRecord:
        ts = now()
        record = SessionRecord(session_id, client_id, title, ts, ts, system_prompt, settings)
        async with self._change(session_id) as conn:
            await self._insert_session(conn, record)
            await self._bump_counter(conn, "total_created", 1)
        self.sessions[session_id] = record
        self.stats.total_created += 1
        return record

    @staticmethod
    async def _insert_session(conn: asyncpg.Connection, r: SessionRecord) -> str | None:
        """The id when inserted, None when the session was there already."""
        return await conn.fetchval(
            f"INSERT INTO sessions({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING id",
            r.session_id, r.client_id, r.title, r.created_at, r.last_activity, r.system_prompt, json.dumps(r.settings.to_json()),
        )

    async def update(self, record: SessionRecord, *, title: str | None = None, system_prompt: str | None = None, settings: ChatSettings | None = None) -> None:
        new_title = record.title if title is None else title
        new_prompt = record.system_prompt if system_prompt is None else system_prompt
        new_settings = record.settings if settings is None else settings
        async with self._change(record.session_id) as conn:
            await conn.execute(
                "UPDATE sessions SET title = $1, system_prompt = $2, settings = $3 WHERE id = $4",
                new_title, new_prompt, json.dumps(new_settings.to_json()), record.session_id,
            )
        record.title, record.system_prompt, record.settings = new_title, new_prompt, new_settings

    def touch(self, record: SessionRecord) -> None:
        record.last_activity = now()
        self._dirty_activity.add(record.session_id)

    async def flush_activity(self) -> None:
        ids = [s for s in self._dirty_activity if s in self.sessions]
        self._dirty_activity.clear()
        if not ids:
            return
        times = [self.sessions[s].last_activity for s in ids]
        async with self._change(*ids) as conn:
            # GREATEST: a server whose clock or flush lags never moves a session's activity back
            await conn.execute(
                "UPDATE sessions SET last_activity = GREATEST(last_activity, v.ts) FROM unnest($1::text[], $2::float8[]) AS v(id, ts) WHERE sessions.id = v.id",
                ids, times,
            )

    async def delete(self, session_id: str, expired: bool = False) -> SessionRecord | None:
        async with self._change(session_id) as conn:
            row = await conn.fetchrow(f"DELETE FROM sessions WHERE id = $1 RETURNING {SESSION_COLUMNS}", session_id)
            if row is not None and expired:
                await self._bump_counter(conn, "expired", 1)
        held = self._forget(session_id)
        if row is None:
            return None
        if expired:
            self.stats.expired += 1
        return held or session_from_row(row)

    def _forget(self, session_id: str) -> SessionRecord | None:
        self._dirty_activity.discard(session_id)
        return self.sessions.pop(session_id, None)

    async def take_expired(self, idle_before: float) -> list[SessionRecord]:
        await self.flush_activity()
        held: list[str] = []
        try:
            async with self._db().acquire() as conn, conn.transaction():
                rows = await conn.fetch(f"DELETE FROM sessions WHERE last_activity < $1 RETURNING {SESSION_COLUMNS}", idle_before)
                held = self._hold([row["id"] for row in rows])
                if rows:
                    await self._bump_counter(conn, "expired", len(rows))
                    await self._notify(conn, held)
        finally:
            self._release(held)
        self.stats.expired += len(rows)
        return [self._forget(row["id"]) or session_from_row(row) for row in rows]

    # -- messages -------------------------------------------------------------
    async def add_message(self, record: SessionRecord, role: str, content: str, usage: dict[str, Any] | None = None, message_id: str | None = None,
                          alternatives: tuple[str, ...] = ()) -> Message:
        message = Message(message_id or str(uuid.uuid4()), role, content, now(), usage, alternatives)
        async with self._change(record.session_id) as conn:
            await self._insert_messages(conn, record.session_id, [message])
            await self._bump_counter(conn, "total_messages", 1)
        record.message_count += 1
        self.stats.total_messages += 1
        return message

    @staticmethod
    async def _insert_messages(conn: asyncpg.Connection, sid: str, messages: list[Message]) -> None:
        await conn.executemany(
            "INSERT INTO messages(id, session_id, role, content, created_at, usage, alternatives) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            [(m.id, sid, m.role, m.content, m.created_at, None if m.usage is None else json.dumps(m.usage), json.dumps(m.alternatives) if m.alternatives else None)
             for m in messages],
        )

    async def messages(self, session_id: str) -> list[Message]:
        rows = await self._db().fetch("SELECT id, role, content, created_at, usage, alternatives FROM messages WHERE session_id = $1 ORDER BY seq", session_id)
        return [Message(r["id"], r["role"], r["content"], r["created_at"], None if r["usage"] is None else json.loads(r["usage"]), tuple(json.loads(r["alternatives"] or "[]")))
                for r in rows]

    async def rewrite_after(self, record: SessionRecord, message_id: str, content: str | None = None) -> None:
        """Drop every message after `message_id` and, with `content`, give that message this text."""
        async with self._change(record.session_id) as conn:
            seq = await conn.fetchval("SELECT seq FROM messages WHERE session_id = $1 AND id = $2", record.session_id, message_id)
            if seq is None:
                raise NotFound("message_not_found", "no such message in this session")
            if content is not None:
                await conn.execute("UPDATE messages SET content = $1 WHERE seq = $2", content, seq)
            dropped = await conn.fetchval("WITH gone AS (DELETE FROM messages WHERE session_id = $1 AND seq > $2 RETURNING 1) SELECT count(*) FROM gone",
                                          record.session_id, seq)
        record.message_count -= dropped

    async def clear_messages(self, record: SessionRecord) -> None:
        async with self._change(record.session_id) as conn:
            await conn.execute("DELETE FROM messages WHERE session_id = $1", record.session_id)
        record.message_count = 0

    # -- files ----------------------------------------------------------------
    async def add_file(self, record: SessionRecord, file: FileRecord) -> None:
        async with self._change(record.session_id) as conn:
            await self._insert_files(conn, record.session_id, [file])
        record.files[file.name] = file

    @staticmethod
    async def _insert_files(conn: asyncpg.Connection, sid: str, files: list[FileRecord]) -> None:
        await conn.executemany(
            f"INSERT INTO files({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (session_id, name) DO UPDATE SET "
            "size = EXCLUDED.size, content_type = EXCLUDED.content_type, uploaded_at = EXCLUDED.uploaded_at, "
            "extracted_chars = EXCLUDED.extracted_chars, sha256 = EXCLUDED.sha256, status = EXCLUDED.status, note = EXCLUDED.note",
            [(sid, f.name, f.size, f.content_type, f.uploaded_at, f.extracted_chars, f.sha256, f.status, f.note) for f in files],
        )

    async def remove_file(self, record: SessionRecord, name: str) -> None:
        async with self._change(record.session_id) as conn:
            await conn.execute("DELETE FROM files WHERE session_id = $1 AND name = $2", record.session_id, name)
        record.files.pop(name, None)

    # -- search ---------------------------------------------------------------
    async def search(self, terms: Sequence[str], session_ids: Sequence[str], limit: int) -> list[SearchHit]:
        """Titles, file names and messages of `session_ids` that hold every one of `terms` (each
        matched as the start of a word), titles and file names first, then the best messages."""
        words = [t for t in terms if WORD.fullmatch(t)]
        if not words or not session_ids:
            return []
        query = " & ".join(f"{w}:*" for w in words)
        marks = f"StartSel={MATCH_OPEN}, StopSel={MATCH_CLOSE}"
        async with self._db().acquire() as conn:
            labels = await conn.fetch(
                f"WITH q AS (SELECT to_tsquery('{SEARCH_CONFIG}', $1) AS q), "
                "labels AS (SELECT id AS session_id, 'title' AS kind, title AS label FROM sessions WHERE id = ANY($2::text[]) "
                "UNION ALL SELECT session_id, 'file', name FROM files WHERE session_id = ANY($2::text[])) "
                f"SELECT session_id, kind, ts_headline('{SEARCH_CONFIG}', label, q.q, $3) AS text FROM labels, q "
                f"WHERE to_tsvector('{SEARCH_CONFIG}', label) @@ q.q ORDER BY kind DESC, ts_rank(to_tsvector('{SEARCH_CONFIG}', label), q.q) DESC LIMIT $4",
                query, list(session_ids), f"{marks}, HighlightAll=true", limit,
            )
            messages = await conn.fetch(
                f"WITH q AS (SELECT to_tsquery('{SEARCH_CONFIG}', $1) AS q) "
                f"SELECT session_id, id, role, ts_headline('{SEARCH_CONFIG}', content, q.q, $3) AS text FROM messages, q "
                f"WHERE session_id = ANY($2::text[]) AND to_tsvector('{SEARCH_CONFIG}', content) @@ q.q "
                f"ORDER BY ts_rank(to_tsvector('{SEARCH_CONFIG}', content), q.q) DESC LIMIT $4",
                query, list(session_ids), f"{marks}, MaxWords=24, MinWords=8, ShortWord=0, FragmentDelimiter=…, MaxFragments=1", limit - len(labels),
            )
        return [SearchHit(r["session_id"], r["kind"], _marked(r["text"])) for r in labels] + [
            SearchHit(r["session_id"], "message", _marked(r["text"]), r["id"], r["role"]) for r in messages
        ]

    # -- copying in -----------------------------------------------------------
    async def import_session(self, record: SessionRecord, messages: list[Message]) -> bool:
        """Add a session from another store as it is (ids, times, messages, files) in one
        transaction; False, and nothing changed, when this store has it already."""
        async with self._change(record.session_id) as conn:
            if await self._insert_session(conn, record) is None:
                return False
            await self._insert_messages(conn, record.session_id, messages)
            await self._insert_files(conn, record.session_id, list(record.files.values()))
        self.sessions[record.session_id] = record
        return True

    async def import_counters(self, stats: StoreStats) -> None:
        """Counters at least as high as `stats`: copying the same store twice counts it once."""
        async with self._db().acquire() as conn:
            await conn.executemany(
                "INSERT INTO counters(name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = GREATEST(counters.value, EXCLUDED.value)",
                [("total_created", stats.total_created), ("expired", stats.expired), ("total_messages", stats.total_messages)],
            )

    # -- queries --------------------------------------------------------------
    def records(self) -> Iterable[SessionRecord]:
        return self.sessions.values()
