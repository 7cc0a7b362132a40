"""Search, edit and regenerate on the chat page, in Debian's chromium against real processes
(the deployment of tests/browser/conftest.py)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import CHROMIUM, CLIENTS, new_chat, open_page, patch, send, session_id, shot, wait_idle
from tests.e2e.deployment import http

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./deploy.sh test installs it)")]


async def test_search_finds_an_older_session_of_this_browser_only(deployed, seeded, browser):
    n = CLIENTS[1]
    page = await open_page(browser, n)
    older = await session_id(page)
    await patch(n, older, {"settings": {"max_tokens": 8}})
    await send(page, "Remember the code word QUOKKA please.")
    await wait_idle(page)
    await new_chat(page)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.post_data or "") if r.url.endswith("/search") else None)
    await page.get_by_label("Search chats").fill("?!")
    await page.get_by_label("Search chats").press("Enter")  # no word yet: nothing is asked
    await page.get_by_label("Search chats").fill("quok")
    results = page.locator("#search-results li")
    await results.first.wait_for()
    # the seeded session also says QUOKKA, but this browser does not hold its id
    assert set(await results.evaluate_all("items => items.map(i => i.dataset.sessionId)")) == {older}
    # the reply may say the word too (the model samples it): any match of this session will do
    assert (await results.locator("mark").first.inner_text()).lower() == "quokka"
    assert asked and all('"quok"' in body for body in asked), asked
    await shot(page, "13-search-results")
    await page.locator("#search-results li[data-kind=message]").first.get_by_role("button").click()
    await page.wait_for_function(f"window.agenticChat.state.session.session_id === '{older}'")
    highlighted = page.locator(".message.highlight")
    await highlighted.wait_for()
    assert "quokka" in (await highlighted.inner_text()).lower()
    assert await highlighted.evaluate("e => e === document.activeElement")
    await shot(page, "14-search-opened")
    # the route itself: only the sessions named are searched
    url = f"http://127.0.0.1:{8000 + n}/search"
    status, body = http("POST", url, {"q": "quokka", "session_ids": [seeded.session_id]})
    assert status == 200 and {hit["session_id"] for hit in body["hits"]} == {seeded.session_id}
    status, body = http("POST", url, {"q": "quokka", "session_ids": [older]})
    assert status == 200 and {hit["session_id"] for hit in body["hits"]} == {older}
    assert not page.errors
