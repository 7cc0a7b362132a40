"""Edit and regenerate on the chat page, in Debian's chromium against real processes
(the deployment of tests/browser/conftest.py)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import CHROMIUM, CLIENTS, open_page, patch, send, session_id, shot, wait_reply
from tests.e2e.deployment import http

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./deploy.sh test installs it)")]


async def test_regenerate_and_edit(deployed, browser):
    n = CLIENTS[0]
    page = await open_page(browser, n)
    sid = await session_id(page)
    await patch(n, sid, {"settings": {"max_tokens": 6, "temperature": 1.5}})
    await send(page, "Name a colour.")
    await wait_reply(page, 1)
    first = await page.locator(".message.assistant .body").inner_text()
    assert await page.get_by_role("button", name="Edit").count() == 1
    await page.get_by_role("button", name="Regenerate").click()
    await wait_reply(page, 1)
    assert await page.locator(".message.assistant").count() == 1
    nav = page.get_by_role("group", name="Replies")
    assert "2/2" in await nav.inner_text()
    await shot(page, "15-regenerated")
    await nav.get_by_role("button", name="Previous reply").click()
    assert await page.locator(".message.assistant .body").inner_text() == first
    assert "1/2" in await nav.inner_text()
    await page.keyboard.press("Alt+Shift+R")  # the shortcut regenerates too
    await page.get_by_role("group", name="Replies").get_by_text("3/3").wait_for(timeout=90_000)
    await wait_reply(page, 1)

    await send(page, "And a fruit?")
    await wait_reply(page, 2)
    assert await page.get_by_role("button", name="Regenerate").count() == 1  # the last reply only
    await page.get_by_role("button", name="Edit").first.click()
    await page.get_by_label("Edit your message").fill("Name an animal.")
    await shot(page, "16-editing")
    await page.get_by_label("Edit your message").press("Enter")
    await page.wait_for_function("document.querySelectorAll('.message.user').length === 1", timeout=90_000)  # the later turn is gone
    await wait_reply(page, 1)
    users = await page.locator(".message.user .body").all_inner_texts()
    assert users == ["Name an animal."]
    _, history = http("GET", f"http://127.0.0.1:{8000 + n}/sessions/{sid}/messages", headers={"x-session-id": sid})
    assert [m["content"] for m in history["messages"] if m["role"] == "user"] == ["Name an animal."]
    await shot(page, "17-edited")
    assert not page.errors

