"""Stop strings, regenerate and edit with the real bundled model, over the WebSocket and REST."""

from __future__ import annotations

import asyncio
import json

from agentic import keys
from tests.chat.helpers import chat_turn, open_session_socket, receive_until_done, streamed_text
from tests.conftest import assert_error, new_session

COUNTING = "Count from one to twenty in words, separated by commas."


def stop_across_a_token_boundary(frames: list[dict]) -> tuple[str, str]:
    """A stop string made of the end of one streamed piece and the start of the next, and the
    text before its first occurrence."""
    pieces = [f["text"] for f in frames if f["type"] == "token"]
    full = "".join(pieces)
    for k in range(2, len(pieces) - 1):
        if pieces[k].strip() and pieces[k + 1].strip():
            stop = pieces[k][-2:] + pieces[k + 1][:2]
            if full.find(stop) > 0:
                return stop, full[:full.find(stop)]
    raise AssertionError(f"no two long pieces in a row: {pieces}")


async def test_a_stop_string_ends_the_turn_on_every_path(model_client):
    sid = (await new_session(model_client, settings={"temperature": 0, "ignore_eos": True}))["session_id"]
    ws, _ = await open_session_socket(model_client, sid)
    plain = await chat_turn(ws, COUNTING, max_tokens=40)
    stop, before = stop_across_a_token_boundary(plain)

    await model_client.post(f"/sessions/{sid}/clear")
    frames = await chat_turn(ws, COUNTING, max_tokens=40, stop=[stop, "never appears"])
    done = frames[-1]
    assert done["usage"]["finish_reason"] == "stop", done
    assert streamed_text(frames) == done["message"]["content"] == before  # nothing sent and then taken back

    await model_client.post(f"/sessions/{sid}/clear")
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": COUNTING, "max_tokens": 40, "stop": stop})
    body = await resp.json()
    assert resp.status == 200 and body["message"]["content"] == before and body["usage"]["finish_reason"] == "stop"
    await receive_until_done(ws)  # the socket watched that turn too

    await model_client.post(f"/sessions/{sid}/clear")
    patched = await model_client.patch(f"/sessions/{sid}", json={"settings": {"stop": [stop]}})
    assert (await patched.json())["settings"]["stop"] == [stop]
    frames = await chat_turn(ws, COUNTING, max_tokens=40)
    assert streamed_text(frames) == before and frames[-1]["usage"]["finish_reason"] == "stop"
    await ws.close()


async def test_bad_stop_strings_are_refused(model_client):
    sid = (await new_session(model_client))["session_id"]
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "hi", "stop": [""]})
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_field"
    assert (await model_client.patch(f"/sessions/{sid}", json={"settings": {"stop": 3}})).status == 422
    ws, _ = await open_session_socket(model_client, sid)
    await ws.send_json({"type": "chat", "content": "hi", "stop": {"a": 1}, "id": "x"})
    error = await ws.receive_json()
    assert error["type"] == "error" and error["code"] == "invalid_field" and error["reply_to"] == "x" and error["status"] == 422
    await ws.close()


async def test_regenerate_keeps_the_old_reply_as_an_alternative_and_reuses_the_prompt(model_client):
    sid = (await new_session(model_client, settings={"temperature": 1.5, "seed": 1}))["session_id"]
    ws, _ = await open_session_socket(model_client, sid)
    other_tab, _ = await open_session_socket(model_client, sid)
    first = (await chat_turn(ws, "Name a fruit.", max_tokens=8))[-1]
    await receive_until_done(other_tab)

    await ws.send_json({"type": "regenerate", "id": "r1", "max_tokens": 8})
    frames = await receive_until_done(ws)
    history, start, done = frames[0], frames[1], frames[-1]
    assert history["type"] == "history" and [m["content"] for m in history["messages"]] == ["Name a fruit."]
    assert start["type"] == "start" and start["reply_to"] == "r1"
    assert done["message"]["alternatives"] == [first["message"]["content"]]
    assert done["message"]["content"] == streamed_text(frames)
    usage = done["usage"]
    assert usage["prompt_tokens"] == first["usage"]["prompt_tokens"]
    assert usage["cached_tokens"] == usage["prompt_tokens"] - 1  # all but the token decoded for the first logits
    assert (await receive_until_done(other_tab))[0]["type"] == "history"  # other tabs redraw

    resp = await model_client.post(f"/sessions/{sid}/regenerate", json={"max_tokens": 8})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["message"]["alternatives"] == [first["message"]["content"], done["message"]["content"]]
    assert body["usage"]["cached_tokens"] == body["usage"]["prompt_tokens"] - 1
    stored = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == body["message"]["content"] and stored[1]["alternatives"] == body["message"]["alternatives"]
    await ws.close()
    await other_tab.close()


async def test_nothing_to_regenerate(model_client):
    sid = (await new_session(model_client))["session_id"]
    resp = await model_client.post(f"/sessions/{sid}/regenerate")
    assert resp.status == 409 and (await resp.json())["error"]["code"] == "nothing_to_regenerate"
    ws, _ = await open_session_socket(model_client, sid)
    await ws.send_json({"type": "regenerate", "id": 7})
    error = await ws.receive_json()
    assert error["code"] == "nothing_to_regenerate" and error["status"] == 409 and error["reply_to"] == 7
    await ws.close()


async def test_edit_drops_what_follows_and_answers_again_from_the_cached_prefix(model_client):
    sid = (await new_session(model_client))["session_id"]
    ws, _ = await open_session_socket(model_client, sid)
    first = (await chat_turn(ws, "My name is Ann.", max_tokens=8))[-1]
    await chat_turn(ws, "What is my name?", max_tokens=8)
    stored = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
    question = stored[2]

    await ws.send_json({"type": "edit", "message_id": question["id"], "content": "Spell my name.", "max_tokens": 8})
    frames = await receive_until_done(ws)
    assert frames[0]["type"] == "history"
    assert [m["content"] for m in frames[0]["messages"]] == ["My name is Ann.", stored[1]["content"], "Spell my name."]
    usage = frames[-1]["usage"]
    assert first["usage"]["prompt_tokens"] <= usage["cached_tokens"] < usage["prompt_tokens"]
    after = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
    assert [m["content"] for m in after[:3]] == ["My name is Ann.", stored[1]["content"], "Spell my name."]
    assert after[2]["id"] == question["id"] and len(after) == 4

    resp = await model_client.post(f"/sessions/{sid}/messages/{stored[0]['id']}/edit", json={"content": "My name is Bo.", "max_tokens": 8})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["usage"]["cached_tokens"] > 0  # the system part of the template at least
    after = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
    assert [m["content"] for m in after][:1] == ["My name is Bo."] and len(after) == 2
    session = await (await model_client.get(f"/sessions/{sid}")).json()
    assert session["message_count"] == 2
    await ws.close()


async def test_edit_refusals(model_client):
    sid = (await new_session(model_client))["session_id"]
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Hi", "max_tokens": 2})
    reply_id = (await resp.json())["message"]["id"]
    missing = await model_client.post(f"/sessions/{sid}/messages/nope/edit", json={"content": "x"})
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "message_not_found"
    not_user = await model_client.post(f"/sessions/{sid}/messages/{reply_id}/edit", json={"content": "x"})
    assert not_user.status == 422 and (await not_user.json())["error"]["code"] == "not_a_user_message"
    empty = await model_client.post(f"/sessions/{sid}/messages/{reply_id}/edit", json={"content": " "})
    assert empty.status == 422
    other = (await new_session(model_client))["session_id"]
    foreign = await model_client.post(f"/sessions/{other}/messages/{reply_id}/edit", json={"content": "x"})
    assert foreign.status == 404  # a message of another session is not found there


async def test_a_turn_whose_session_is_deleted_before_it_starts_is_session_not_found(model_client, monkeypatch):
    """The delete lands after the message is stored and before the turn reaches the engine
    (whose state for the session is already dropped): 404, and the engine runs nothing."""
    sid = (await new_session(model_client))["session_id"]
    sessions = model_client.app[keys.sessions_key]
    engine = model_client.app[keys.engine_key]
    stored = sessions.messages

    async def deleted_first(session_id):
        await sessions.remove(session_id)
        return await stored(session_id)

    monkeypatch.setattr(sessions, "messages", deleted_first)
    started = engine.stats()["turns_started"]
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Hello there.", "max_tokens": 4})
    assert resp.status == 404, await resp.text()
    assert_error(await resp.json(), "session_not_found")
    await asyncio.sleep(0.2)
    assert engine.stats()["turns_started"] == started


async def test_a_turn_whose_session_is_deleted_while_it_runs_is_session_not_found(model_client):
    sid = (await new_session(model_client, settings={"ignore_eos": True}))["session_id"]
    engine = model_client.app[keys.engine_key]
    generated = engine.stats()["tokens_generated"]
    pending = asyncio.create_task(model_client.post(f"/sessions/{sid}/messages", json={"content": "Tell me a long story.", "max_tokens": 200}))
    async with asyncio.timeout(30):
        while engine.stats()["tokens_generated"] == generated:
            await asyncio.sleep(0.01)
    assert (await model_client.delete(f"/sessions/{sid}")).status == 200
    resp = await pending
    assert resp.status == 404, await resp.text()
    assert_error(await resp.json(), "session_not_found")


async def test_a_streamed_turn_whose_session_is_deleted_ends_with_session_not_found(model_client):
    """Not a `done` frame whose message is null, nor a stream that just stops."""
    sid = (await new_session(model_client, settings={"ignore_eos": True}))["session_id"]
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Tell me a long story.", "max_tokens": 200, "stream": True})
    assert resp.status == 200
    async with asyncio.timeout(30):
        while not (await resp.content.readline()).startswith(b"event: token"):
            pass
    assert (await model_client.delete(f"/sessions/{sid}")).status == 200
    events = [json.loads(line[6:]) for line in (await resp.text()).splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events if e["type"] != "token"] == ["error"]
    assert events[-1]["code"] == "session_not_found" and events[-1]["message_id"]


async def test_a_turn_whose_session_is_deleted_while_its_reply_is_stored_is_session_not_found(model_client, monkeypatch):
    """The delete lands between the check that the session is there and the reply's insert."""
    sid = (await new_session(model_client))["session_id"]
    sessions = model_client.app[keys.sessions_key]
    add = sessions.add_message

    async def deleted_meanwhile(record, role, *args, **kwargs):
        if role == "assistant":
            await sessions.remove(record.session_id)
        return await add(record, role, *args, **kwargs)

    monkeypatch.setattr(sessions, "add_message", deleted_meanwhile)
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Hello there.", "max_tokens": 4})
    assert resp.status == 404, await resp.text()
    assert_error(await resp.json(), "session_not_found")
