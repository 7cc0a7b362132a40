"""The text read from an upload belongs to its session: it goes with the file, with the session,
on expiry, and what no live session owns is swept when the server starts."""

import asyncio
import hashlib

from agentic import keys
from agentic.app import create_app
from tests.conftest import make_settings, new_session, upload


LIVE_TEXT = "the live session's text".encode()


def texts_of(settings, session_id: str) -> list[str]:
    folder = settings.data_dir / "extracted" / f"session_{session_id}"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


async def test_a_text_goes_with_the_last_file_that_has_it(client, settings):
    sid = (await new_session(client))["session_id"]
    other = (await new_session(client))["session_id"]
    await upload(client, sid, ("a.txt", b"alpha"), ("b.txt", b"beta"), ("copy of a.txt", b"alpha"))
    await upload(client, other, ("a.txt", b"alpha"))
    assert texts_of(settings, sid) == sorted([f"{sha(b'alpha')}.txt", f"{sha(b'beta')}.txt"])  # the copy was read once
    assert (await client.delete(f"/sessions/{sid}/files/a.txt")).status == 200
    assert texts_of(settings, sid) == sorted([f"{sha(b'alpha')}.txt", f"{sha(b'beta')}.txt"])  # the copy still uses it
    assert (await client.delete(f"/sessions/{sid}/files/copy of a.txt")).status == 200
    assert texts_of(settings, sid) == [f"{sha(b'beta')}.txt"]
    assert texts_of(settings, other) == [f"{sha(b'alpha')}.txt"]  # another session's copy is its own


async def test_texts_go_with_their_session(client, settings):
    sid = (await new_session(client))["session_id"]
    await upload(client, sid, ("a.txt", b"alpha"))
    assert texts_of(settings, sid)
    assert (await client.delete(f"/sessions/{sid}")).status in (200, 204)
    assert not (settings.data_dir / "extracted" / f"session_{sid}").exists()
    assert not (settings.uploads_dir / f"session_{sid}").exists()


async def test_texts_go_when_their_session_expires(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "data", session_timeout_min=0.005, cleanup_interval_s=0.05)  # 0.3 s
    client = await aiohttp_client(create_app(settings))
    sid = (await new_session(client))["session_id"]
    await upload(client, sid, ("a.txt", b"alpha"))
    folder = settings.data_dir / "extracted" / f"session_{sid}"
    assert folder.is_dir()
    for _ in range(60):
        await asyncio.sleep(0.1)
        if not folder.exists():
            break
    assert not folder.exists()
    assert not (settings.uploads_dir / f"session_{sid}").exists()


async def test_what_no_live_session_owns_is_swept_at_start(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "data", cleanup_interval_s=3600)
    first = await aiohttp_client(create_app(settings))
    sid = (await new_session(first))["session_id"]
    await upload(first, sid, ("kept.txt", LIVE_TEXT))
    await first.close()
    extracted = settings.data_dir / "extracted"
    dead = "0b5c4a4e-0000-4000-8000-000000000000"
    for folder in (extracted / f"session_{dead}", settings.uploads_dir / f"session_{dead}"):
        folder.mkdir(parents=True)
        (folder / "left.txt").write_text("left by a crash mid-delete")
    # the old layout kept every text in one shared folder, named by content only
    own = extracted / f"session_{sid}" / f"{sha(LIVE_TEXT)}.txt"
    shared = extracted / f"{sha(LIVE_TEXT)}.txt"
    own.rename(shared)
    (extracted / f"{sha(b'nobody')}.txt").write_text("nobody's")

    client = await aiohttp_client(create_app(settings))
    assert sorted(p.name for p in extracted.iterdir()) == [f"session_{sid}"]
    assert sorted(p.name for p in settings.uploads_dir.iterdir()) == [f"session_{sid}"]
    assert own.read_text() == "the live session's text"  # moved to its session
    record = client.app[keys.store_key].sessions[sid]
    context, _ = await client.app[keys.uploads_key].context_for(record, "text")
    assert "the live session's text" in context
