"""Expiry, the cleanup loop, and what removal takes with it."""

import asyncio

from agentic import keys
from agentic.app import create_app
from tests.conftest import make_settings, new_session, upload


async def test_idle_session_expires_and_cleanup_removes_its_folder(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "d", cleanup_interval_s=0.05)
    client = await aiohttp_client(create_app(settings))
    sid = (await new_session(client))["session_id"]
    folder = settings.uploads_dir / f"session_{sid}"
    resp = await upload(client, sid, ("note.txt", b"hello"))
    assert resp.status == 201 and folder.is_dir()
    client.app[keys.sessions_key].timeout_s = 0.3  # only now: an upload may take longer than that on a busy machine
    kv_file = settings.kv_dir / f"{sid}.kv"
    settings.kv_dir.mkdir(parents=True, exist_ok=True)
    kv_file.write_bytes(b"stale")

    await asyncio.sleep(0.6)
    resp = await client.get(f"/sessions/{sid}")
    assert resp.status == 404
    for _ in range(40):
        if not folder.exists():
            break
        await asyncio.sleep(0.05)
    assert not folder.exists()
    assert not kv_file.exists()
    store = client.app[keys.store_key]
    assert sid not in store.sessions and store.stats.expired == 1
    stats = (await (await client.get("/sessions")).json())["stats"]
    assert stats["expired"] == 1 and stats["active_sessions"] == 0


async def test_activity_keeps_a_session_alive(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "d", session_timeout_min=0.01, cleanup_interval_s=0.05)  # 0.6 s
    client = await aiohttp_client(create_app(settings))
    sid = (await new_session(client))["session_id"]
    for _ in range(6):
        await asyncio.sleep(0.2)
        assert (await client.get(f"/sessions/{sid}")).status == 200
    assert sid in client.app[keys.store_key].sessions


async def test_expired_session_is_404_even_before_cleanup_runs(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "d", session_timeout_min=0.002, cleanup_interval_s=3600)
    client = await aiohttp_client(create_app(settings))
    sid = (await new_session(client))["session_id"]
    await asyncio.sleep(0.2)
    assert (await client.get(f"/sessions/{sid}")).status == 404
    listing = await (await client.get("/sessions")).json()
    assert listing["sessions"] == []


async def test_orphan_upload_folders_are_removed(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "d", cleanup_interval_s=0.05)
    orphan = settings.uploads_dir / "session_0b5c4a4e-0000-4000-8000-000000000000"
    orphan.mkdir(parents=True)
    (orphan / "left.txt").write_text("x")
    await aiohttp_client(create_app(settings))
    await asyncio.sleep(0.2)
    assert not orphan.exists()


async def test_orphan_saved_model_state_is_removed_by_the_cleanup(aiohttp_client, tmp_path):
    settings = make_settings(tmp_path / "d", cleanup_interval_s=0.05)
    client = await aiohttp_client(create_app(settings))
    sid = (await new_session(client))["session_id"]
    settings.kv_dir.mkdir(parents=True, exist_ok=True)
    live, orphan = settings.kv_dir / f"{sid}.kv", settings.kv_dir / "0b5c4a4e-0000-4000-8000-000000000000.kv"
    live.write_bytes(b"state")
    orphan.write_bytes(b"left by a crash")
    for _ in range(40):
        if not orphan.exists():
            break
        await asyncio.sleep(0.05)
    assert not orphan.exists() and live.exists()


async def test_two_servers_on_one_database_share_sessions_and_expire_each_once(aiohttp_client, tmp_path, pg_url):
    data = tmp_path / "shared"  # one DATA_DIR for both, as on a shared filesystem
    one, two = [await aiohttp_client(create_app(make_settings(data, database_url=pg_url, cleanup_interval_s=0.05, server_id=name)))
                for name in ("s1", "s2")]
    sids = [(await new_session(one))["session_id"] for _ in range(4)]
    for sid in sids:  # created on one, served by the other at once
        resp = await upload(two, sid, ("note.txt", b"hello"))
        assert resp.status == 201, await resp.text()
    folders = [data / "uploads" / f"session_{sid}" for sid in sids]
    assert all(folder.is_dir() for folder in folders)
    assert (await (await one.get(f"/sessions/{sids[0]}")).json())["files"][0]["name"] == "note.txt"

    for client in (one, two):
        client.app[keys.sessions_key].timeout_s = 0.3
    for _ in range(100):
        if not any(folder.exists() for folder in folders) and not client.app[keys.store_key].sessions:
            break
        await asyncio.sleep(0.05)
    assert not any(folder.exists() for folder in folders)
    expired_counts = []
    for client, name in ((one, "s1"), (two, "s2")):
        text = await (await client.get("/metrics")).text()
        assert f'target_info{{server="{name}"}} 1.0' in text
        expired_counts.append(float(text.split("\nagentic_sessions_expired_total ")[1].split("\n")[0]))
    assert sum(expired_counts) == 4  # each session expired by one server only
    for _ in range(50):
        stats = [(await (await c.get("/sessions")).json())["stats"] for c in (one, two)]
        if all(s["expired"] == 4 for s in stats):
            break
        await asyncio.sleep(0.05)
    assert [(s["expired"], s["total_created"], s["active_sessions"]) for s in stats] == [(4, 4, 0), (4, 4, 0)]  # cluster-wide


async def test_a_session_created_on_one_server_is_at_once_an_api_key_on_another(aiohttp_client, tmp_path, pg_url):
    """HAProxy hashes /v1 calls on the Bearer key, which may name a session another server created a moment ago."""
    one, two = [await aiohttp_client(create_app(make_settings(tmp_path / "shared", database_url=pg_url, server_id=name)))
                for name in ("s1", "s2")]
    for _ in range(5):
        sid = (await new_session(one))["session_id"]
        resp = await two.get("/v1/models", headers={"Authorization": f"Bearer {sid}"})
        assert resp.status == 200, await resp.text()
