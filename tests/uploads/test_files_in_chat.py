"""The assistant reads the session's files (real model; asserts on the prompt the engine built)."""

from tests.conftest import new_session, upload


async def test_a_small_file_goes_into_the_prompt_whole(model_client, prompts):
    sid = (await new_session(model_client))["session_id"]
    other = (await new_session(model_client))["session_id"]
    await upload(model_client, sid, ("facts.txt", b"The project codename is QUETZALCOATL-42."))
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "What is the project codename?", "max_tokens": 8})
    body = await resp.json()
    assert resp.status == 200, body
    assert "QUETZALCOATL-42" in prompts[sid]
    assert body["usage"]["files"] == [{"name": "facts.txt", "passages": "all"}]
    await model_client.post(f"/sessions/{other}/messages", json={"content": "What is the project codename?", "max_tokens": 4})
    assert "QUETZALCOATL" not in prompts[other]


async def test_large_files_contribute_their_most_relevant_passages(model_client, prompts):
    sid = (await new_session(model_client))["session_id"]
    filler = "\n\n".join(f"Section {i}: the quarterly report covers revenue, costs and staffing levels." for i in range(200))
    needle = "\n\nThe spare key is hidden under the MARMALADE flowerpot by the door.\n\n"
    await upload(model_client, sid, ("report.txt", (filler + needle + filler).encode()), ("other.md", ("# Notes\n\n" + filler).encode()))
    resp = await model_client.post(f"/sessions/{sid}/messages", json={"content": "Where is the spare key hidden? marmalade", "max_tokens": 8})
    body = await resp.json()
    assert resp.status == 200, body
    prompt = prompts[sid]
    assert "MARMALADE" in prompt
    assert len(prompt) < 6000  # passages, not whole files
    sources = {s["name"]: s["passages"] for s in body["usage"]["files"]}
    assert "report.txt" in sources and isinstance(sources["report.txt"], list)
