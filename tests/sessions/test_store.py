"""The store's guarantees, on SQLite and on PostgreSQL alike; then what only a store shared by
several servers must do (PostgreSQL: notifications, expiry handed out once)."""

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from agentic.errors import Invalid, SessionGone
from agentic.sessions import pg_store, store as sqlite_store
from agentic.sessions.backend import SchemaTooNew, Store
from agentic.sessions.factory import open_store
from agentic.sessions.models import ChatSettings, FileRecord, now
from agentic.sessions.pg_store import PostgresStore
from agentic.sessions.store import SessionStore

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


async def opened(url: str) -> Store:
    store = open_store(url, Path("unused"))
    await store.open()
    return store


async def eventually(check, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    assert check()


def test_the_factory_picks_the_backend_by_url(tmp_path):
    assert isinstance(open_store(None, tmp_path / "x.sqlite3"), SessionStore)
    assert isinstance(open_store("postgresql://u@h/db", tmp_path), PostgresStore)
    with pytest.raises(ValueError, match="DATABASE_URL"):
        open_store("mysql://u@h/db", tmp_path)


async def test_everything_written_is_back_after_reopen(store_url):
    store = await opened(store_url)
    record = await store.create(A, "c1", "be brief", ChatSettings(temperature=0.2))
    await store.add_message(record, "user", "hello")
    await store.add_message(record, "assistant", "hi", {"finish_reason": "stop"})
    await store.add_file(record, FileRecord("a.txt", 3, "text/plain", 1.0, 3, "abc"))
    await store.update(record, title="greeting")
    store.touch(record)
    touched = record.last_activity
    await store.close()

    again = await opened(store_url)
    loaded = again.sessions[record.session_id]
    assert (loaded.title, loaded.client_id, loaded.system_prompt, loaded.settings.temperature) == ("greeting", "c1", "be brief", 0.2)
    assert loaded.message_count == 2 and loaded.last_activity == pytest.approx(touched)
    messages = await again.messages(record.session_id)
    assert [(m.role, m.content, m.usage) for m in messages] == [("user", "hello", None), ("assistant", "hi", {"finish_reason": "stop"})]
    assert loaded.files == {"a.txt": FileRecord("a.txt", 3, "text/plain", 1.0, 3, "abc")}
    assert again.stats.total_created == 1 and again.stats.total_messages == 2
    await again.close()


async def test_delete_cascades_messages_and_files(store_url):
    store = await opened(store_url)
    record = await store.create(B, None, "", ChatSettings())
    await store.add_message(record, "user", "x")
    await store.add_file(record, FileRecord("a.txt", 1, "text/plain", 1.0))
    assert await store.delete(record.session_id) is record
    assert await store.delete(record.session_id) is None
    assert await store.messages(record.session_id) == []
    await store.close()
    again = await opened(store_url)
    assert again.sessions == {} and await again.live_ids() == set()
    await again.close()


async def test_writing_into_a_session_deleted_meanwhile_is_session_not_found(store_url):
    """A request that found the session before another deleted it: its message or file is
    refused in the domain's words, and nothing of it is kept."""
    store = await opened(store_url)
    record = await store.create(B, None, "", ChatSettings())
    await store.delete(record.session_id)
    with pytest.raises(SessionGone):
        await store.add_message(record, "user", "late")
    with pytest.raises(SessionGone):
        await store.add_file(record, FileRecord("late.txt", 1, "text/plain", 1.0))
    assert await store.messages(record.session_id) == [] and record.files == {}
    await store.close()


async def test_take_expired_removes_only_idle_sessions_and_counts_them(store_url):
    store = await opened(store_url)
    idle, busy = await store.create(A, None, "", ChatSettings()), await store.create(B, None, "", ChatSettings())
    await store.add_file(idle, FileRecord("a.txt", 1, "text/plain", 1.0))
    cutoff = now()
    store.touch(busy)  # in memory only: take_expired writes it before it looks
    taken = await store.take_expired(cutoff)
    assert [r.session_id for r in taken] == [A] and taken[0].files
    assert set(store.sessions) == {B} and await store.live_ids() == {B}
    assert store.stats.expired == 1
    await store.close()
    again = await opened(store_url)
    assert set(again.sessions) == {B} and again.stats.expired == 1
    await again.close()


async def test_clearing_and_removing_a_file_are_kept(store_url):
    store = await opened(store_url)
    record = await store.create(A, None, "", ChatSettings())
    await store.add_message(record, "user", "x")
    await store.add_file(record, FileRecord("a.txt", 1, "text/plain", 1.0))
    await store.add_file(record, FileRecord("a.txt", 2, "text/plain", 2.0))  # the same name again replaces it
    await store.clear_messages(record)
    assert record.message_count == 0 and record.files["a.txt"].size == 2
    await store.remove_file(record, "a.txt")
    await store.close()
    again = await opened(store_url)
    assert again.sessions[A].message_count == 0 and again.sessions[A].files == {}
    await again.close()


async def test_a_database_from_a_newer_version_is_refused(store_url, tmp_path):
    store = await opened(store_url)
    await store.close()
    if store_url.startswith("sqlite"):
        known = len(sqlite_store.MIGRATIONS)
        path = store_url[len("sqlite:///"):]
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == known
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {known + 1}")
    else:
        conn = await asyncpg.connect(store_url)
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == len(pg_store.MIGRATIONS)
        await conn.execute("INSERT INTO schema_version VALUES ($1)", len(pg_store.MIGRATIONS) + 1)
        await conn.close()
    with pytest.raises(SchemaTooNew):
        await opened(store_url)


async def test_a_sqlite_database_from_before_schema_versions_opens(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.executescript(sqlite_store.SCHEMA)
        conn.execute("INSERT INTO sessions VALUES (?, NULL, 't', 1.0, 1.0, '', '{}')", (A,))
    store = await opened(f"sqlite:///{path}")
    assert list(store.sessions) == [A]
    await store.close()


async def test_sqlite_uses_wal(tmp_path):
    store = await opened(f"sqlite:///{tmp_path}/s.sqlite3")
    await store.close()
    assert sqlite3.connect(tmp_path / "s.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- one database, several servers (PostgreSQL) ---------------------------------------------


async def test_text_postgresql_cannot_hold_is_a_domain_error(pg_url):
    store = await opened(pg_url)
    record = await store.create(A, None, "", ChatSettings())
    with pytest.raises(Invalid):
        await store.add_message(record, "user", "a\x00b")
    with pytest.raises(Invalid):
        await store.update(record, title="a\x00b")
    assert record.message_count == 0 and record.title == "New chat"
    await store.close()


async def test_without_leave_to_add_unaccent_the_store_still_opens_and_says_search_keeps_accents(pg_url, caplog):
    """A role that may create tables but not extensions (no CREATE on the database)."""
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("CREATE ROLE plain LOGIN; GRANT CREATE ON SCHEMA public TO plain")
    finally:
        await admin.close()
    store = await opened(pg_url.replace("postgres@", "plain@"))
    assert "search does not fold accents here" in caplog.text
    record = await store.create(A, None, "", ChatSettings())
    await store.add_message(record, "user", "Un café à Zürich")
    assert [h.kind for h in await store.search(["café"], [A], 10)] == ["message"]
    assert await store.search(["cafe"], [A], 10) == []
    await store.close()


async def test_unaccent_installed_in_a_schema_of_its_own_still_folds_accents(pg_url):
    """As managed hosts keep extensions: in a schema outside the search_path."""
    admin = await asyncpg.connect(pg_url)
    try:
        await admin.execute("CREATE SCHEMA extensions; CREATE EXTENSION unaccent SCHEMA extensions")
    finally:
        await admin.close()
    store = await opened(pg_url)
    record = await store.create(A, None, "", ChatSettings())
    await store.add_message(record, "user", "Un café à Zürich")
    assert [h.kind for h in await store.search(["cafe", "zurich"], [A], 10)] == ["message"]
    await store.close()


async def test_each_server_mirrors_what_the_others_change(pg_url):
    one, two = await opened(pg_url), await opened(pg_url)
    gone: list[str] = []

    async def on_gone(session_id: str) -> None:
        gone.append(session_id)

    two.on_gone = on_gone
    record = await one.create(A, "c1", "", ChatSettings())
    await eventually(lambda: A in two.sessions)
    seen = two.sessions[A]
    await one.update(record, title="renamed", settings=ChatSettings(top_k=7))
    await one.add_message(record, "user", "hello")
    await one.add_file(record, FileRecord("a.txt", 1, "text/plain", 1.0))
    await eventually(lambda: (seen.title, seen.settings.top_k, seen.message_count, list(seen.files)) == ("renamed", 7, 1, ["a.txt"]))
    assert two.sessions[A] is seen  # updated in place: views and turns may hold the record
    one.touch(record)
    await one.flush_activity()
    await eventually(lambda: seen.last_activity == pytest.approx(record.last_activity))
    assert two.stats.total_created == 1 and two.stats.total_messages == 1
    await one.delete(A)
    await eventually(lambda: A not in two.sessions)
    assert gone == [A]
    await one.close()
    await two.close()


async def test_a_session_created_elsewhere_is_found_at_once(pg_url):
    one, two = await opened(pg_url), await opened(pg_url)
    await one.create(A, None, "", ChatSettings())
    await two.ensure(A)  # what the request middleware does before a view looks a session up
    assert A in two.sessions
    await two.ensure(B)
    assert B not in two.sessions
    await one.close()
    await two.close()


async def test_expiry_on_every_server_removes_each_session_once(pg_url):
    servers = [await opened(pg_url) for _ in range(3)]
    ids = [f"{n:08x}-0000-4000-8000-000000000000" for n in range(30)]
    for sid in ids:
        await servers[0].create(sid, None, "", ChatSettings())
    await eventually(lambda: all(len(s.sessions) == 30 for s in servers))
    cutoff = now() + 1
    taken = await asyncio.gather(*(s.take_expired(cutoff) for s in servers))
    removed = [r.session_id for batch in taken for r in batch]
    assert sorted(removed) == sorted(ids)  # each once: no session is handed to two servers
    await eventually(lambda: all(not s.sessions and s.stats.expired == 30 for s in servers))
    for s in servers:
        await s.close()


async def test_a_refresh_never_undoes_a_change_made_while_it_read(pg_url):
    one, two = await opened(pg_url), await opened(pg_url)
    record = await one.create(A, None, "", ChatSettings())
    await eventually(lambda: A in two.sessions)
    refresh = asyncio.create_task(one._reload(None))  # reads the database ...
    await one.add_file(record, FileRecord("a.txt", 1, "text/plain", 1.0))  # ... while this server changes it
    await refresh
    assert list(one.sessions[A].files) == ["a.txt"]
    await one.close()
    await two.close()


async def test_copy_from_sqlite_is_complete_and_idempotent(tmp_path, pg_url):
    from agentic.sessions.copy import copy_store

    source = await opened(f"sqlite:///{tmp_path}/old.sqlite3")
    record = await source.create(A, "c1", "sys", ChatSettings(seed=3), "first")
    await source.add_message(record, "user", "hello")
    await source.add_message(record, "assistant", "hi", {"completion_tokens": 1})
    await source.add_file(record, FileRecord("a.txt", 3, "text/plain", 1.0, 3, "abc"))
    await source.create(B, None, "", ChatSettings())
    target = await opened(pg_url)
    report = await copy_store(source, target)
    assert (report.copied, report.already_there, report.messages, report.files) == (2, 0, 2, 1)
    again = await copy_store(source, target)
    assert (again.copied, again.already_there) == (0, 2)
    await target.close()

    check = await opened(pg_url)
    copied = check.sessions[A]
    assert (copied.title, copied.client_id, copied.system_prompt, copied.settings.seed, copied.created_at) == ("first", "c1", "sys", 3, record.created_at)
    assert await check.messages(A) == await source.messages(A)
    assert copied.files == record.files and copied.message_count == 2
    assert (check.stats.total_created, check.stats.total_messages) == (2, 2)
    await check.close()
    await source.close()


async def test_store_copy_command(tmp_path, pg_url):
    import subprocess
    import sys

    store = await opened(f"sqlite:///{tmp_path}/old.sqlite3")
    await store.add_message(await store.create(A, None, "", ChatSettings()), "user", "hello")
    await store.close()

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentic", "store", "copy", *command], capture_output=True, text=True, timeout=60)

    copy = ("--from", f"sqlite:///{tmp_path}/old.sqlite3", "--to", pg_url)
    first = await asyncio.to_thread(run, *copy)
    assert first.returncode == 0, first.stderr
    assert "copied 1 sessions (1 messages" in first.stdout
    second = await asyncio.to_thread(run, *copy)
    assert "copied 0 sessions" in second.stdout and "1 were there already" in second.stdout
    missing = await asyncio.to_thread(run, "--from", f"sqlite:///{tmp_path}/none.sqlite3", "--to", pg_url)
    assert missing.returncode == 2 and "no SQLite database" in missing.stderr


async def test_search_finds_words_of_titles_file_names_and_messages(store_url):
    store = await opened(store_url)
    a = await store.create(A, None, "", ChatSettings(), "Travel plans")
    b = await store.create(B, None, "", ChatSettings())
    await store.add_message(a, "user", "We should visit Lisbon in spring")
    await store.add_message(b, "user", "Lisbon is lovely")
    await store.add_file(a, FileRecord("itinerary.txt", 1, "text/plain", 1.0))
    hits = await store.search(["lisb"], [A], 10)
    assert [(h.session_id, h.kind) for h in hits] == [(A, "message")]
    assert [text for text, match in hits[0].parts if match] == ["Lisbon"]
    assert [h.kind for h in await store.search(["trav"], [A, B], 10)] == ["title"]
    assert [h.kind for h in await store.search(["itin"], [A], 10)] == ["file"]
    assert await store.search(["lisbon", "spring"], [B], 10) == []  # every term must occur
    await store.close()


async def test_search_folds_accents_both_ways_and_marks_the_words_as_written(store_url):
    store = await opened(store_url)
    record = await store.create(A, None, "", ChatSettings(), "Crème brûlée")
    await store.add_message(record, "user", "Un café à Zürich, then the Naïve museum")
    assert [text for text, match in (await store.search(["cafe"], [A], 10))[0].parts if match] == ["café"]
    assert [h.kind for h in await store.search(["zurich", "naive"], [A], 10)] == ["message"]
    assert [h.kind for h in await store.search(["Zürich"], [A], 10)] == ["message"]
    title = await store.search(["creme", "brulee"], [A], 10)
    assert [h.kind for h in title] == ["title"] and [text for text, match in title[0].parts if match] == ["Crème", "brûlée"]
    assert await store.search(["cafes"], [A], 10) == []
    await store.close()


async def test_rewrite_after_drops_later_messages_and_alternatives_are_kept(store_url):
    store = await opened(store_url)
    record = await store.create(A, None, "", ChatSettings())
    first = await store.add_message(record, "user", "one")
    await store.add_message(record, "assistant", "two", alternatives=("an earlier two",))
    await store.add_message(record, "user", "three")
    assert [m.alternatives for m in await store.messages(A)] == [(), ("an earlier two",), ()]
    await store.rewrite_after(record, first.id, "ONE")
    assert [m.content for m in await store.messages(A)] == ["ONE"] and record.message_count == 1
    await store.close()
