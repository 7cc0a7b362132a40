import sqlite3

from agentic.sessions.models import ChatSettings, FileRecord
from agentic.sessions.store import SessionStore


async def test_everything_written_is_back_after_reopen(tmp_path):
    db = tmp_path / "s.sqlite3"
    store = SessionStore(db)
    await store.open()
    record = await store.create("11111111-1111-4111-8111-111111111111", "c1", "be brief", ChatSettings(temperature=0.2))
    await store.add_message(record, "user", "hello")
    await store.add_message(record, "assistant", "hi", {"finish_reason": "stop"})
    await store.add_file(record, FileRecord("a.txt", 3, "text/plain", 1.0, 3, "abc"))
    await store.update(record, title="greeting")
    await store.close()

    again = SessionStore(db)
    await again.open()
    loaded = again.sessions[record.session_id]
    assert (loaded.title, loaded.client_id, loaded.system_prompt, loaded.settings.temperature) == ("greeting", "c1", "be brief", 0.2)
    assert loaded.message_count == 2
    assert [m.content for m in await again.messages(record.session_id)] == ["hello", "hi"]
    assert list(loaded.files) == ["a.txt"]
    assert again.stats.total_created == 1 and again.stats.total_messages == 2
    await again.close()


async def test_database_uses_wal(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    await store.open()
    await store.close()
    assert sqlite3.connect(tmp_path / "s.sqlite3").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_delete_cascades_messages_and_files(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite3")
    await store.open()
    record = await store.create("22222222-2222-4222-8222-222222222222", None, "", ChatSettings())
    await store.add_message(record, "user", "x")
    await store.add_file(record, FileRecord("a.txt", 1, "text/plain", 1.0))
    await store.delete(record.session_id, expired=True)
    assert await store.messages(record.session_id) == []
    assert store.stats.expired == 1
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    assert conn.execute("SELECT value FROM counters WHERE name='expired'").fetchone()[0] == 1
