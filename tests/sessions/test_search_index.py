"""The SQLite store's full-text index: filled from what a database held before it existed, and
kept in step by every later write, whoever makes it."""

from __future__ import annotations

import sqlite3

from agentic.sessions.models import ChatSettings, FileRecord
from agentic.sessions.store import MIGRATIONS, SEARCH_SCHEMA, SessionStore

SID = "11111111-1111-4111-8111-111111111111"


def older_database(path) -> None:
    """A database written by the agentic before the index: every migration but the index's."""
    before = MIGRATIONS.index(SEARCH_SCHEMA)
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:before]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {before}")
    db.execute("INSERT INTO sessions VALUES (?, NULL, 'Old capybara notes', 0, 0, '', '{}')", (SID,))
    db.execute("INSERT INTO messages(id, session_id, role, content, created_at) VALUES ('m1', ?, 'user', 'capybaras swim well', 0)", (SID,))
    db.execute("INSERT INTO files VALUES (?, 'capybara.pdf', 1, 'application/pdf', 0, 0, '', 'ok', '')", (SID,))
    db.commit()
    db.close()


async def test_the_migration_indexes_what_was_there(tmp_path):
    path = tmp_path / "agentic.sqlite3"
    older_database(path)
    store = SessionStore(path)
    await store.open()
    try:
        hits = await store.search(["capybara"], [SID], 10)
        assert sorted(hit.kind for hit in hits) == ["file", "message", "title"]
        assert next(hit for hit in hits if hit.kind == "message").message_id == "m1"
        assert await store.search(["capybara"], ["22222222-2222-4222-8222-222222222222"], 10) == []
    finally:
        await store.close()


async def test_writes_keep_the_index_in_step(tmp_path):
    store = SessionStore(tmp_path / "agentic.sqlite3")
    await store.open()
    try:
        record = await store.create(SID, None, "", ChatSettings(), "tapir")
        question = await store.add_message(record, "user", "tapirs and okapis")
        answer = await store.add_message(record, "assistant", "okapis only")
        assert len(await store.search(["okapi"], [SID], 10)) == 2
        db = store._db()  # an edit, as any code might write it: the later turn dropped, the question changed
        db.execute("DELETE FROM messages WHERE id = ?", (answer.id,))
        db.execute("UPDATE messages SET content = 'tapirs alone' WHERE id = ?", (question.id,))
        assert await store.search(["okapi"], [SID], 10) == []
        assert [hit.message_id for hit in await store.search(["alone"], [SID], 10)] == [question.id]
        for status in ("ok", "unreadable"):  # a file record written again (its text extracted) stays one entry
            await store.add_file(record, FileRecord("tapir.txt", 1, "text/plain", 0.0, status=status))
        assert [hit.kind for hit in await store.search(["tapir"], [SID], 10)] == ["title", "file", "message"]
        await store.delete(SID)
        assert await store.search(["tapir"], [SID], 10) == []
        assert store._db().execute("SELECT count(*) FROM labels_fts").fetchone()[0] == 0
        store._db().execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        await store.close()
