"""WebSocket chat with the real bundled model (short replies)."""

import asyncio
import json

from aiohttp import WSMsgType

from agentic import keys
from tests.chat.helpers import chat_turn, open_session_socket, receive_until_done, streamed_text
from tests.conftest import new_session


async def test_automatic_session_and_streamed_text_equals_stored_reply(model_client):
    ws, session = await open_session_socket(model_client)
    frames = await chat_turn(ws, "Say hello in three words.", max_tokens=16, id="m1")
    start, done = frames[0], frames[-1]
    assert start["type"] == "start" and start["reply_to"] == "m1" and start["seq"] == 0
    assert done["type"] == "done", done
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert all(f["message_id"] == start["message_id"] for f in frames)
    text = streamed_text(frames)
    assert text and done["message"]["content"] == text
    assert done["usage"]["completion_tokens"] <= 16 and done["usage"]["finish_reason"] in ("stop", "length")
    stored = await (await model_client.get(f"/sessions/{session['session_id']}/messages")).json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"].encode() == text.encode()
    assert stored["messages"][1]["id"] == start["message_id"]
    await ws.close()


async def test_ping_and_bad_frames_keep_the_socket_usable(model_client):
    ws, _ = await open_session_socket(model_client)
    await ws.send_json({"type": "ping"})
    assert (await ws.receive_json()) == {"type": "pong"}
    await ws.send_str("not json")
    assert (await ws.receive_json())["code"] == "bad_frame"
    await ws.send_json({"type": "dance"})
    assert (await ws.receive_json())["code"] == "unknown_type"
    await ws.send_json([1, 2])
    assert (await ws.receive_json())["code"] == "bad_frame"
    await ws.send_bytes(b"\x00\x01")
    assert (await ws.receive_json())["code"] == "bad_frame"
    await ws.send_json({"type": "chat", "content": "x" * 40_000})
    error = await ws.receive_json()
    assert error["type"] == "error" and error["code"] == "message_too_large"
    await ws.send_json({"type": "chat", "content": ""})
    assert (await ws.receive_json())["code"] == "invalid_field"
    frames = await chat_turn(ws, "Hi", max_tokens=4)
    assert frames[-1]["type"] == "done"
    await ws.close()


async def test_second_chat_while_generating_is_refused(model_client):
    ws, _ = await open_session_socket(model_client)
    await ws.send_json({"type": "chat", "content": "Write a long story about a cat.", "max_tokens": 60})
    await ws.send_json({"type": "chat", "content": "And another", "id": "second"})
    frames = await receive_until_done(ws)
    refusals = [f for f in frames if f["type"] == "error"]
    if not refusals:  # the refusal may arrive after the first turn's frames
        refusals = [await ws.receive_json()]
    assert refusals[0]["code"] == "turn_in_progress" and refusals[0]["reply_to"] == "second"
    await ws.close()


async def test_stop_keeps_what_was_generated(model_client):
    ws, session = await open_session_socket(model_client)
    await model_client.patch(f"/sessions/{session['session_id']}", json={"settings": {"ignore_eos": True}})  # it must not end on its own first
    await ws.send_json({"type": "chat", "content": "Count from one to one hundred in words.", "max_tokens": 200})
    frames = []
    while len([f for f in frames if f["type"] == "token"]) < 3:
        frames.append(await ws.receive_json())
    await ws.send_json({"type": "stop"})
    frames += await receive_until_done(ws)
    done = frames[-1]
    assert done["usage"]["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 200
    assert done["message"]["content"] == streamed_text(frames) != ""
    messages = (await (await model_client.get(f"/sessions/{session['session_id']}/messages")).json())["messages"]
    assert messages[-1]["content"] == streamed_text(frames)
    await ws.close()


async def test_disconnect_stops_generation_and_keeps_partial_reply(model_client):
    ws, session = await open_session_socket(model_client)
    sid = session["session_id"]
    await model_client.patch(f"/sessions/{sid}", json={"settings": {"ignore_eos": True}})  # it must not end on its own first
    await ws.send_json({"type": "chat", "content": "Count from one to one hundred in words.", "max_tokens": 300})
    got = []
    while len([f for f in got if f["type"] == "token"]) < 3:
        got.append(await ws.receive_json())
    await ws.close()
    chat = model_client.app[keys.chat_key]
    for _ in range(200):
        messages = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
        if len(messages) == 2:
            break
        await asyncio.sleep(0.05)
    assert len(messages) == 2
    assert messages[1]["usage"]["finish_reason"] == "cancelled"
    assert messages[1]["usage"]["completion_tokens"] < 300
    assert messages[1]["content"].startswith(streamed_text(got))
    assert chat.hub(sid).current is None


async def test_two_sessions_batched_and_isolated(model_client, prompts):
    engine = model_client.app[keys.engine_key]
    a, _ = await open_session_socket(model_client)
    b, _ = await open_session_socket(model_client)
    sa = (await model_client.get("/sessions")).status
    assert sa == 200
    await a.send_json({"type": "chat", "content": "My secret word is PAPAYA. Repeat it.", "max_tokens": 24})
    await b.send_json({"type": "chat", "content": "My secret word is WALRUS. Repeat it.", "max_tokens": 24})
    fa, fb = await asyncio.gather(receive_until_done(a), receive_until_done(b))
    assert fa[-1]["type"] == fb[-1]["type"] == "done"
    stats = engine.stats()
    assert stats["multi_sequence_steps"] > 0 and stats["max_sequences_in_step"] >= 2
    by_secret = {("PAPAYA" in p, "WALRUS" in p) for p in prompts.values()}
    assert by_secret == {(True, False), (False, True)}
    await a.close()
    await b.close()


async def test_next_turn_reuses_the_cached_prefix(model_client):
    ws, _ = await open_session_socket(model_client)
    first = (await chat_turn(ws, "Name a colour.", max_tokens=8))[-1]["usage"]
    second = (await chat_turn(ws, "Name another one.", max_tokens=8))[-1]["usage"]
    assert first["cached_tokens"] == 0
    assert second["prompt_tokens"] > first["prompt_tokens"]
    assert second["cached_tokens"] >= first["prompt_tokens"]
    assert second["prefill_tokens"] == second["prompt_tokens"] - second["cached_tokens"] < 30
    await ws.close()


async def test_resume_replays_missed_frames_without_gap_or_duplicate(model_client):
    sid = (await new_session(model_client, settings={"ignore_eos": True}))["session_id"]  # still streaming when we leave
    ws, _ = await open_session_socket(model_client, sid)
    await ws.send_json({"type": "chat", "content": "List five fruits.", "max_tokens": 40})
    seen = []
    while len(seen) < 4:
        seen.append(await ws.receive_json())
    watcher, _ = await open_session_socket(model_client, sid)  # keeps the turn watched meanwhile
    await ws.close()
    last = seen[-1]
    resumed, _ = await open_session_socket(model_client, sid, resume=f"{last['message_id']}:{last['seq']}")
    rest = await receive_until_done(resumed)
    frames = seen + rest
    assert [f["seq"] for f in frames] == list(range(len(frames)))
    assert frames[-1]["type"] == "done"
    assert frames[-1]["message"]["content"] == streamed_text(frames)
    tab = await receive_until_done(watcher)  # a second tab saw the same turn live
    assert streamed_text([f for f in tab if f.get("message_id") == last["message_id"]]) in streamed_text(frames)
    await watcher.close()
    await resumed.close()


async def test_unknown_and_malformed_sessions_close_with_codes(model_client):
    ws = await model_client.ws_connect("/ws", params={"session_id": "0b5c4a4e-0000-4000-8000-000000000000"})
    msg = await ws.receive()
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 4404
    ws = await model_client.ws_connect("/ws", params={"session_id": "nope"})
    await ws.receive()
    assert ws.close_code == 4400


async def test_foreign_origin_is_refused_before_upgrade(model_client):
    resp = await model_client.get("/ws", headers={"Origin": "http://evil.example", "Upgrade": "websocket", "Connection": "Upgrade",
                                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13"})
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "origin_refused"
    host = f"http://{model_client.server.host}:{model_client.server.port}"
    ws = await model_client.ws_connect("/ws", headers={"Origin": host})
    assert (await ws.receive_json())["type"] == "session"
    await ws.close()


async def test_deleting_a_session_closes_its_sockets(model_client):
    ws, session = await open_session_socket(model_client)
    await model_client.delete(f"/sessions/{session['session_id']}")
    frame = await ws.receive_json()
    assert frame["type"] == "session_closed"
    closing = await ws.receive()
    # The code as the server sent it: ws.close_code can read 1006 when aiohttp's client
    # answers the close after the server has already dropped the connection.
    assert closing.type == WSMsgType.CLOSE and closing.data == 4404


async def test_text_is_never_broken_utf8(model_client):
    ws, _ = await open_session_socket(model_client)
    frames = await chat_turn(ws, "Repeat exactly: 日本語 😀 café naïve", max_tokens=30)
    text = streamed_text(frames)
    assert "\ufffd" not in text
    assert frames[-1]["message"]["content"] == text
    json.dumps(text).encode("utf-8")
    await ws.close()


async def test_a_reply_cut_mid_character_drops_the_unfinished_character(model_client):
    """Greedy, this model answers 'Repeat exactly: 👍' with the emoji's bytes spread over three
    tokens; five tokens stop inside it."""
    ws, session = await open_session_socket(model_client)
    await model_client.patch(f"/sessions/{session['session_id']}", json={"settings": {"temperature": 0}})
    frames = await chat_turn(ws, "Repeat exactly: 👍❌👍❌👍❌", max_tokens=5)
    text = streamed_text(frames)
    assert frames[-1]["usage"]["completion_tokens"] == 5
    assert text == frames[-1]["message"]["content"] == "Repeat exactly: "  # the space, not half an emoji
    await ws.close()


async def test_rest_chat_whole_and_streamed(model_client):
    sid = (await new_session(model_client))["session_id"]
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Hi", "max_tokens": 8})
    body = await resp.json()
    assert resp.status == 200, body
    assert body["message"]["role"] == "assistant" and body["usage"]["completion_tokens"] <= 8
    assert {"prompt_tokens", "completion_tokens", "ttft_ms", "tokens_per_s", "finish_reason"} <= set(body["usage"])

    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Again", "max_tokens": 8, "stream": True})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in (await resp.text()).splitlines() if line.startswith("data: ")]
    assert events[0]["type"] == "start" and events[-1]["type"] == "done"
    assert events[-1]["message"]["content"] == streamed_text(events)
    messages = (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"]
    assert len(messages) == 4


async def test_rest_chat_validation(model_client):
    sid = (await new_session(model_client))["session_id"]
    for body, status in (({}, 422), ({"content": 5}, 422), ({"content": "x" * 40_000}, 413), ({"content": "hi", "max_tokens": 0}, 422),
                         ({"content": "hi", "stream": "yes"}, 422), ({"content": "hi", "extra": 1}, 422)):
        resp = await model_client.post(f"/sessions/{sid}/messages", json=body)
        assert resp.status == status, body
    assert (await (await model_client.get(f"/sessions/{sid}/messages")).json())["messages"] == []
