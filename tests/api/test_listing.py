"""GET /sessions: titles only for their owner or the admin, pages with a cursor, and a listing
built in slices so thousands of sessions never hold the event loop in one go."""

from __future__ import annotations

import asyncio

from agentic import keys
from agentic.app import create_app
from agentic.sessions import lifecycle
from agentic.sessions.models import ChatSettings, SessionRecord, now
from tests.conftest import assert_error, make_settings, new_session


async def test_titles_are_shown_only_to_their_owner_or_the_admin(aiohttp_client, tmp_path):
    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", admin_token="s3cret")))
    mine = await new_session(client, title="my salary review")
    theirs = await new_session(client, title="their medical question")

    anyone = await (await client.get("/sessions")).json()
    assert {s["title"] for s in anyone["sessions"]} == {None}
    assert "salary" not in str(anyone) and "medical" not in str(anyone)

    own = await (await client.get("/sessions", headers={"x-session-id": mine["session_id"]})).json()
    titles = {s["session_id"]: s["title"] for s in own["sessions"]}
    assert titles == {mine["session_id"]: "my salary review", theirs["session_id"][:8]: None}

    admin = await (await client.get("/sessions", headers={"Authorization": "Bearer s3cret"})).json()
    assert {s["title"] for s in admin["sessions"]} == {"my salary review", "their medical question"}


async def test_pages_follow_the_cursor_newest_first(client):
    ids = [(await new_session(client))["session_id"] for _ in range(7)]
    store = client.app[keys.store_key]
    for age, sid in enumerate(reversed(ids)):  # the last created is the most recent
        store.sessions[sid].last_activity = now() - age
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = await (await client.get("/sessions", params=query)).json()
        pages += 1
        seen += [s["session_id"] for s in body["sessions"]]
        assert body["stats"]["active_sessions"] == 7
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert ids[0] not in cursor and all(sid[8:] not in cursor for sid in ids)  # a cursor names no full id
    assert pages == 3
    assert seen == [sid[:8] for sid in reversed(ids)]
    default = await (await client.get("/sessions")).json()
    assert len(default["sessions"]) == 7 and default["next_cursor"] is None


async def test_bad_limit_or_cursor_is_400(client):
    for query in ({"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"limit": "-1"}, {"cursor": "x"}, {"cursor": "nan_abcdef12"},
                  {"cursor": "1e999_abcdef12"}, {"cursor": "1.5_ABCDEF12"}, {"cursor": "1.5_abc"}):
        resp = await client.get("/sessions", params=query)
        assert resp.status == 400, query
        assert_error(await resp.json(), "invalid_query")


async def test_expired_sessions_are_not_listed(client):
    old = (await new_session(client))["session_id"]
    live = (await new_session(client))["session_id"]
    client.app[keys.store_key].sessions[old].last_activity -= 10 * 3600
    body = await (await client.get("/sessions", headers={"x-session-id": live})).json()
    assert [s["session_id"] for s in body["sessions"]] == [live]
    assert body["stats"]["active_sessions"] == 1


async def test_a_large_listing_lets_other_work_run_between_slices(client):
    store = client.app[keys.store_key]
    at = now()
    for i in range(lifecycle.LISTING_SLICE * 4 + 10):
        sid = f"{i:08x}-0000-4000-8000-000000000000"
        store.sessions[sid] = SessionRecord(sid, "bench", "t", at, at - i, "", ChatSettings())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    listing = await client.app[keys.sessions_key].listing(5)
    ticking.cancel()
    assert ticks - before >= 4  # one turn of the loop per slice at least
    assert [r.session_id[:8] for r in listing.records] == [f"{i:08x}" for i in range(5)]
    assert listing.active == lifecycle.LISTING_SLICE * 4 + 10 and listing.next_after is not None
