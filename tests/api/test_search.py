"""POST /search: full-text search within the sessions the caller names, never beyond them."""

from __future__ import annotations

import pytest

from agentic import keys
from agentic.api.search import MAX_SEARCH_SESSIONS
from tests.conftest import assert_error, new_session, upload


async def said(client, session_id: str, *texts: str) -> list[str]:
    """Messages stored as a finished chat turn would store them; their ids."""
    manager = client.app[keys.sessions_key]
    record = manager.get_live(session_id)
    return [(await manager.add_message(record, role, text)).id for role, text in zip(("user", "assistant") * len(texts), texts)]


async def search(client, q: str, *session_ids: str, status: int = 200, **extra) -> dict:
    resp = await client.post("/search", json={"q": q, "session_ids": list(session_ids), **extra})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_finds_messages_titles_and_file_names_of_the_named_sessions_only(client):
    mine = (await new_session(client, title="Holiday plans"))["session_id"]
    other = (await new_session(client, title="Zanzibar trip"))["session_id"]
    question, answer = await said(client, mine, "Where is Zanzibar?", "Zanzibar is an archipelago off Tanzania.")
    await said(client, other, "Zanzibar again")
    assert (await upload(client, mine, ("zanzibar-map.txt", b"a map"))).status == 201

    hits = (await search(client, "zanz", mine))["hits"]
    assert {hit["session_id"] for hit in hits} == {mine}
    assert [hit["kind"] for hit in hits] == ["file", "message", "message"]
    assert {hit.get("message_id") for hit in hits[1:]} == {question, answer}
    file_hit = hits[0]
    assert file_hit["title"] == "Holiday plans" and file_hit["snippet"] == "zanzibar-map.txt"
    assert file_hit["parts"] == [{"text": "zanzibar", "match": True}, {"text": "-map.txt", "match": False}]
    message = next(hit for hit in hits if hit.get("message_id") == question)
    assert message["role"] == "user" and message["snippet"] == "Where is Zanzibar?"
    assert {"text": "Zanzibar", "match": True} in message["parts"]

    assert [hit["kind"] for hit in (await search(client, "trip", mine, other))["hits"]] == ["title"]
    assert (await search(client, "trip", mine))["hits"] == []


async def test_every_word_must_occur_and_limit_caps_the_hits(client):
    sid = (await new_session(client))["session_id"]
    await said(client, sid, "red apples and green pears", "red cars", "green cars")
    assert [hit["snippet"] for hit in (await search(client, "RED pear", sid))["hits"]] == ["red apples and green pears"]
    assert len((await search(client, "cars", sid))["hits"]) == 2
    assert len((await search(client, "cars", sid, limit=1))["hits"]) == 1


async def test_the_index_follows_every_change(client):
    sid = (await new_session(client, title="first title"))["session_id"]
    await said(client, sid, "a walrus appears")
    assert (await client.patch(f"/sessions/{sid}", json={"title": "second title"})).status == 200
    assert (await search(client, "first", sid))["hits"] == []
    assert [hit["kind"] for hit in (await search(client, "second", sid))["hits"]] == ["title"]
    assert (await upload(client, sid, ("notes.txt", b"x"))).status == 201
    assert (await upload(client, sid, ("notes.txt", b"y"))).status == 201  # kept as "notes (2).txt"
    assert len((await search(client, "notes", sid))["hits"]) == 2
    assert (await client.delete(f"/sessions/{sid}/files/notes.txt")).status == 200
    assert [hit["snippet"] for hit in (await search(client, "notes", sid))["hits"]] == ["notes (2).txt"]
    assert (await client.post(f"/sessions/{sid}/clear")).status == 200
    assert (await search(client, "walrus", sid))["hits"] == []


async def test_gone_sessions_are_passed_over(client):
    sid = (await new_session(client))["session_id"]
    await said(client, sid, "an okapi")
    assert (await client.delete(f"/sessions/{sid}")).status == 200
    assert (await search(client, "okapi", sid, "00000000-0000-4000-8000-000000000000"))["hits"] == []
    store = client.app[keys.store_key]
    assert await store.search(["okapi"], [sid], 10) == []  # and its rows left the index with it


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"session_ids": []}, 422, "invalid_field"),
    ({"q": "x"}, 422, "invalid_field"),
    ({"q": 3, "session_ids": []}, 422, "invalid_field"),
    ({"q": "!!! ...", "session_ids": []}, 422, "invalid_field"),
    ({"q": "x" * 201, "session_ids": []}, 413, "too_large"),
    ({"q": "x", "session_ids": "not a list"}, 422, "invalid_field"),
    ({"q": "x", "session_ids": [7]}, 422, "invalid_field"),
    ({"q": "x", "session_ids": ["not-a-uuid"]}, 400, "invalid_session_id"),
    ({"q": "x", "session_ids": ["00000000-0000-4000-8000-000000000000"] * (MAX_SEARCH_SESSIONS + 1)}, 413, "too_large"),
    ({"q": "x", "session_ids": [], "limit": 0}, 422, "invalid_field"),
    ({"q": "x", "session_ids": [], "extra": 1}, 422, "invalid_field"),
])
async def test_bad_input_is_a_json_4xx(client, body, status, code):
    resp = await client.post("/search", json=body)
    assert resp.status == status
    assert_error(await resp.json(), code)


async def test_not_json_is_400(client):
    resp = await client.post("/search", data=b"q=x")
    assert resp.status == 400
    assert_error(await resp.json(), "invalid_json")
