"""Every session route and error of api.md, against the app built by the factory."""

import asyncio
import uuid

from agentic import keys
from tests.conftest import assert_error, new_session

ISO = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


async def test_create_returns_a_full_session(client):
    body = await new_session(client, client_id="alice", system_prompt="be brief", settings={"temperature": 0.1})
    assert uuid.UUID(body["session_id"]).version == 4
    assert set(body) >= {"session_id", "client_id", "title", "created_at", "last_activity", "expires_at", "message_count", "files", "system_prompt", "settings"}
    assert body["client_id"] == "alice" and body["system_prompt"] == "be brief" and body["settings"]["temperature"] == 0.1
    assert body["message_count"] == 0 and body["files"] == []
    import re
    assert all(re.match(ISO, body[k]) for k in ("created_at", "last_activity", "expires_at"))


async def test_create_without_body_uses_client_header(client):
    resp = await client.post("/sessions", headers={"x-client-id": "client-7"})
    assert resp.status == 201
    assert (await resp.json())["client_id"] == "client-7"


async def test_session_id_is_never_taken_from_the_client(client):
    resp = await client.post("/sessions", json={"session_id": str(uuid.uuid4())})
    assert resp.status == 422
    assert_error(await resp.json(), "invalid_field")


async def test_get_patch_clear_delete(client):
    sid = (await new_session(client))["session_id"]
    resp = await client.get(f"/sessions/{sid}")
    assert resp.status == 200 and (await resp.json())["session_id"] == sid

    resp = await client.patch(f"/sessions/{sid}", json={"title": "Plans", "system_prompt": "You are terse.", "settings": {"top_p": 0.5, "max_tokens": 12, "seed": 7}})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["title"] == "Plans" and body["system_prompt"] == "You are terse."
    assert body["settings"] == {"temperature": 0.7, "top_p": 0.5, "top_k": 40, "max_tokens": 12, "seed": 7, "ignore_eos": False, "stop": []}

    record = client.app[keys.store_key].sessions[sid]
    await client.app[keys.store_key].add_message(record, "user", "hello")
    resp = await client.post(f"/sessions/{sid}/clear")
    assert resp.status == 200 and (await resp.json())["message_count"] == 0
    assert (await (await client.get(f"/sessions/{sid}/messages")).json()) == {"messages": []}
    assert (await (await client.get(f"/sessions/{sid}")).json())["title"] == "Plans"

    resp = await client.delete(f"/sessions/{sid}")
    assert resp.status == 200 and await resp.json() == {"deleted": sid}
    resp = await client.get(f"/sessions/{sid}")
    assert resp.status == 404
    assert_error(await resp.json(), "session_not_found")


async def test_patch_rejects_bad_fields(client):
    sid = (await new_session(client))["session_id"]
    cases = [
        ({"settings": {"temperature": "hot"}}, 422),
        ({"settings": {"temperature": 9}}, 422),
        ({"settings": {"bogus": 1}}, 422),
        ({"settings": {"max_tokens": True}}, 422),
        ({"settings": {"ignore_eos": 1}}, 422),
        ({"title": 5}, 422),
        ({"colour": "red"}, 422),
        ({"system_prompt": "x" * 9000}, 413),
    ]
    for body, status in cases:
        resp = await client.patch(f"/sessions/{sid}", json=body)
        assert resp.status == status, (body, await resp.text())
        assert_error(await resp.json())


async def test_bad_json_and_wrong_shapes(client):
    sid = (await new_session(client))["session_id"]
    for data in (b"{bad", b"[1, 2]", b"\xff\xfe", b'"text"'):
        resp = await client.post("/sessions", data=data)
        assert resp.status == 400, data
        assert_error(await resp.json(), "invalid_json")
    resp = await client.patch(f"/sessions/{sid}", data=b"not json")
    assert resp.status == 400


async def test_huge_body_is_413_json(client):
    resp = await client.post("/sessions", data=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert resp.status == 413
    assert_error(await resp.json())


async def test_malformed_and_unknown_ids(client):
    for path in ("/sessions/not-a-uuid", "/sessions/..%2F..%2Fetc", "/sessions/00000000-0000-0000-0000-00000000000g/messages"):
        resp = await client.get(path)
        assert resp.status in (400, 404), path
        assert_error(await resp.json())
    resp = await client.get(f"/sessions/{uuid.uuid4()}")
    assert resp.status == 404
    assert_error(await resp.json(), "session_not_found")


async def test_header_must_match_path(client):
    a = (await new_session(client))["session_id"]
    b = (await new_session(client))["session_id"]
    for method, path in (("GET", f"/sessions/{a}"), ("DELETE", f"/sessions/{a}"), ("POST", f"/sessions/{a}/clear"), ("GET", f"/sessions/{a}/messages")):
        resp = await client.request(method, path, headers={"x-session-id": b})
        assert resp.status == 403, (method, path)
        assert_error(await resp.json(), "session_mismatch")
    resp = await client.get(f"/sessions/{a}", headers={"x-session-id": a})
    assert resp.status == 200
    assert a in client.app[keys.store_key].sessions  # the refused DELETE removed nothing


async def test_wrong_method_and_unknown_route_are_json(client):
    resp = await client.put("/sessions")
    assert resp.status == 405
    assert_error(await resp.json(), "method_not_allowed")
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    assert_error(await resp.json())


async def test_listing_truncates_ids_without_admin(client):
    a = (await new_session(client, client_id="c1"))["session_id"]
    b = (await new_session(client, client_id="c2"))["session_id"]
    body = await (await client.get("/sessions")).json()
    assert body["session_id"] is None
    ids = {s["session_id"] for s in body["sessions"]}
    assert ids == {a[:8], b[:8]}
    assert a not in await (await client.get("/sessions")).text()
    stats = body["stats"]
    assert stats["active_sessions"] == 2 and stats["total_created"] == 2 and stats["by_client"] == {"c1": 1, "c2": 1}
    assert {"expired", "connected_websockets", "total_messages", "uploads_bytes"} <= set(stats)

    own = await (await client.get("/sessions", headers={"x-session-id": a})).json()
    assert own["session_id"] == a
    assert b not in str(own) and a in {s["session_id"] for s in own["sessions"]}


async def test_admin_token_unlocks_full_ids(aiohttp_client, tmp_path):
    from agentic.app import create_app
    from tests.conftest import make_settings

    client = await aiohttp_client(create_app(make_settings(tmp_path / "d", admin_token="s3cret")))
    a = (await new_session(client))["session_id"]
    wrong = await (await client.get("/sessions", headers={"Authorization": "Bearer nope"})).json()
    assert wrong["sessions"][0]["session_id"] == a[:8]
    right = await (await client.get("/sessions", headers={"Authorization": "Bearer s3cret"})).json()
    assert right["admin"] is True and right["sessions"][0]["session_id"] == a


async def test_any_use_refreshes_activity(client):
    sid = (await new_session(client))["session_id"]
    record = client.app[keys.store_key].sessions[sid]
    record.last_activity -= 100
    before = record.last_activity
    await client.get(f"/sessions/{sid}/messages")
    assert record.last_activity > before + 99


async def test_concurrent_creates_get_distinct_ids(client):
    bodies = await asyncio.gather(*(new_session(client) for _ in range(30)))
    assert len({b["session_id"] for b in bodies}) == 30
