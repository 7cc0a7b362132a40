"""Uploaded files' text goes with the question that asked for it and stays there, so each turn's
prompt begins with the whole previous one (real model; cache reuse read from usage)."""

from __future__ import annotations

import pytest

from agentic import keys
from agentic.app import create_app
from tests.conftest import make_settings, new_session, upload

MEMO = ("Memo about the harbour project. " * 8 + "\n\n") * 4 + "The project codename is QUETZALCOATL-42.\n"


async def ask(client, sid: str, question: str) -> dict:
    resp = await client.post(f"/sessions/{sid}/messages", json={"content": question, "max_tokens": 8})
    body = await resp.json()
    assert resp.status == 200, body
    return body["usage"]


async def test_a_file_stays_cached_from_one_turn_to_the_next(model_client, prompts):
    sid = (await new_session(model_client, system_prompt="Be brief."))["session_id"]
    await upload(model_client, sid, ("memo.txt", MEMO.encode()))
    first = await ask(model_client, sid, "What is the project codename?")
    assert first["files"] == first["files_added"] == [{"name": "memo.txt", "passages": "all"}]
    second = await ask(model_client, sid, "Say it again.")
    assert second["cached_tokens"] >= first["prompt_tokens"]  # turn 2 reuses all of turn 1's prompt
    assert second["cached_tokens"] >= 0.9 * second["prompt_tokens"]
    assert second["files"] == first["files"] and "files_added" not in second  # the conversation already holds the file
    prompt = prompts[sid]
    assert prompt.count("QUETZALCOATL-42") == 1
    assert prompt.index("Be brief.") < prompt.index("QUETZALCOATL-42") < prompt.index("What is the project codename?")


@pytest.fixture
async def long_context_client(aiohttp_client, tmp_path):
    app = create_app(make_settings(tmp_path / "data", load_model=True, engine_ctx_per_session=4096))
    client = await aiohttp_client(app)
    await app[keys.engine_key].wait_loaded()
    return client


async def test_passages_of_a_large_file_stay_with_the_question_that_chose_them(long_context_client, prompts):
    client = long_context_client
    sid = (await new_session(client))["session_id"]
    filler = "\n\n".join(f"Section {i}: quarterly revenue, costs and staffing levels." for i in range(120))
    text = filler + "\n\nSpare key: under the MARMALADE flowerpot.\n\n" + filler + "\n\nBoat name: PELICAN-9.\n\n" + filler
    await upload(client, sid, ("report.txt", text.encode()))
    first = await ask(client, sid, "Spare key? marmalade flowerpot")
    assert "MARMALADE" in prompts[sid] and "PELICAN" not in prompts[sid]
    second = await ask(client, sid, "Boat name? pelican")
    prompt = prompts[sid]
    assert prompt.count("MARMALADE") == prompt.count("PELICAN") == 1
    assert prompt.index("MARMALADE") < prompt.index("Spare key?") < prompt.index("PELICAN-9") < prompt.index("Boat name?")
    assert second["cached_tokens"] >= first["prompt_tokens"]  # the new passages came after the history, not before it
    third = await ask(client, sid, "Spare key? marmalade flowerpot")
    assert third["cached_tokens"] >= 0.9 * third["prompt_tokens"]  # passages the conversation holds are not added again
