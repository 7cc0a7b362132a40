"""The chat page in a real browser (Debian's chromium driven by Playwright) against real processes."""

from __future__ import annotations

import asyncio

import pytest

from tests.browser.conftest import CHROMIUM, CLIENTS, SOCKET_OPEN, open_page, patch, send, session_id, shot, wait_idle
from tests.e2e.deployment import http

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./deploy.sh test installs it)")]


async def test_two_clients_chat_at_once_and_never_see_each_other(deployed, browser):
    a, b = await open_page(browser, CLIENTS[0]), await open_page(browser, CLIENTS[1])
    sa, sb = await session_id(a), await session_id(b)
    assert sa != sb
    for page, n, sid in ((a, CLIENTS[0], sa), (b, CLIENTS[1], sid_b := sb)):
        await patch(n, sid, {"settings": {"max_tokens": 24}})
    await asyncio.gather(send(a, "My favourite fruit is PAPAYA. Say hi."), send(b, "My favourite animal is WALRUS. Say hi."))
    await asyncio.gather(wait_idle(a), wait_idle(b))
    text_a, text_b = await a.inner_text("#messages"), await b.inner_text("#messages")
    assert "PAPAYA" in text_a and "WALRUS" not in text_a
    assert "WALRUS" in text_b and "PAPAYA" not in text_b
    assert await a.locator(".message.assistant .figures").count() == 1  # tokens and tok/s shown
    assert "tokens" in await a.inner_text(".message.assistant .figures")
    await shot(a, "01-chat-client-a")
    await shot(b, "02-chat-client-b")
    # reload keeps the conversation
    await a.reload()
    await a.wait_for_function("window.agenticChat.state.session && window.agenticChat.state.messages.length >= 2")
    assert await session_id(a) == sa and "PAPAYA" in await a.inner_text("#messages")
    assert sid_b == sb and not a.errors and not b.errors


async def test_stop_clear_delete_and_new_session(deployed, browser):
    n = CLIENTS[0]
    page = await open_page(browser, n)
    sid = await session_id(page)
    await patch(n, sid, {"settings": {"ignore_eos": True, "max_tokens": 400}})
    await send(page, "Tell me a very long story.")
    await page.wait_for_selector("#stop:not([hidden])")
    await page.wait_for_function("document.querySelector('.message.assistant .body') && document.querySelector('.message.assistant .body').textContent.length > 20")
    await shot(page, "03-generating")
    await page.click("#stop")
    await wait_idle(page)
    assert "stopped" in await page.locator(".message.assistant .figures").last.inner_text()
    assert await page.is_hidden("#stop")

    await page.click("#clear-session")
    await page.wait_for_function("document.querySelectorAll('#messages .message').length === 0")
    assert await session_id(page) == sid

    await page.click("#new-session")
    await page.wait_for_function(f"window.agenticChat.state.session.session_id !== '{sid}'")
    second = await session_id(page)
    assert await page.locator("#my-sessions li").count() >= 2

    await page.click("#delete-session")
    await page.click("#confirm-dialog button[value=yes]")
    await page.wait_for_selector("#notice:not([hidden])")
    assert "deleted or has expired" in await page.inner_text("#notice")
    await shot(page, "04-session-deleted")
    status, _ = http("GET", f"http://127.0.0.1:{8000 + n}/sessions/{second}", headers={"x-session-id": second})
    assert status == 404
    await page.click("#notice-new-session")
    await page.wait_for_selector("#notice", state="hidden")
    assert await session_id(page) not in (sid, second)


async def test_upload_then_ask_about_the_file(deployed, browser, tmp_path):
    n = CLIENTS[1]
    page = await open_page(browser, n)
    sid = await session_id(page)
    # one file control: a button that opens the file chooser and takes dropped files
    assert await page.locator("input[type=file]:visible").count() == 0
    control = page.get_by_role("button", name="Add files or drop them here")
    async with page.expect_file_chooser() as chooser:
        await control.click()
    assert (await chooser.value).is_multiple()
    await patch(n, sid, {"settings": {"max_tokens": 8}})
    note = tmp_path / "memo.txt"
    note.write_text("The meeting room is called ZANZIBAR.")
    await page.set_input_files("#file-input", str(note))
    await page.wait_for_selector("#file-list li >> text=memo.txt")
    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x90\x00")
    await page.set_input_files("#file-input", str(bad))
    await page.wait_for_selector("#file-error:not([hidden])")
    assert "not accepted" in await page.inner_text("#file-error")
    await send(page, "What is the meeting room called?")
    await wait_idle(page)
    _, messages = http("GET", f"http://127.0.0.1:{8000 + n}/sessions/{sid}/messages", headers={"x-session-id": sid})
    assert messages["messages"][-1]["usage"]["files"] == [{"name": "memo.txt", "passages": "all"}]
    sources = page.locator(".message.assistant details.sources")
    await sources.wait_for()
    assert "memo.txt" in await sources.locator("summary").inner_text()
    assert not await sources.locator("li").is_visible()
    await sources.locator("summary").click()
    assert "memo.txt · the whole file" in await sources.locator("li").inner_text()
    await shot(page, "05-file-uploaded-sources")
    await page.click("#file-list li button")
    await page.wait_for_function("document.querySelectorAll('#file-list li').length === 0")


async def test_markup_in_messages_stays_text(deployed, browser):
    page = await open_page(browser, CLIENTS[0])
    sid = await session_id(page)
    await patch(CLIENTS[0], sid, {"settings": {"max_tokens": 4}})
    payload = '<img src=x onerror="window.__pwned=1"> **bold** <script>window.__pwned=2</script>'
    await send(page, payload)
    await wait_idle(page)
    assert await page.evaluate("window.__pwned") is None
    assert payload in await page.inner_text(".message.user .body")
    assert await page.locator("#messages img, #messages script").count() == 0
    rendered = await page.evaluate("""() => { const d = document.createElement('div');
        d.innerHTML = window.renderMarkdown('<img src=x onerror=alert(1)> [x](javascript:alert(1)) **b** `c`\\n```\\n<b>code</b>\\n```');
        return {imgs: d.querySelectorAll('img').length, links: d.querySelectorAll('a').length, strong: d.querySelectorAll('strong').length, html: d.innerHTML}; }""")
    assert rendered["imgs"] == 0 and rendered["links"] == 0 and rendered["strong"] == 1
    assert "&lt;b&gt;code&lt;/b&gt;" in rendered["html"]


async def test_second_tab_sees_the_stream_live(deployed, browser):
    n = CLIENTS[0]
    first = await open_page(browser, n)
    sid = await session_id(first)
    await patch(n, sid, {"settings": {"ignore_eos": True, "max_tokens": 60}})
    second = await first.context.new_page()
    await second.goto(f"http://localhost:{8500 + n}/")
    await second.wait_for_function(f"window.agenticChat?.state.session?.session_id === '{sid}' && {SOCKET_OPEN}")
    await send(first, "Count slowly.")
    await second.wait_for_selector(".message.assistant.streaming", timeout=30_000)
    await wait_idle(first)
    await second.wait_for_function("!window.agenticChat.state.generating")
    assert await first.inner_text(".message.assistant .body") == await second.inner_text(".message.assistant .body")


async def test_killed_server_shows_a_banner_and_recovers(deployed, browser):
    n = CLIENTS[1]
    page = await open_page(browser, n)
    sid = await session_id(page)
    await patch(n, sid, {"settings": {"max_tokens": 6}})
    await send(page, "First message.")
    await wait_idle(page)
    deployed.kill9()
    await page.wait_for_selector("#banner:not([hidden])", timeout=30_000)
    await shot(page, "06-backend-down")
    deployed.deploy("main")
    await page.wait_for_function(f"{SOCKET_OPEN} && document.getElementById('banner').hidden", timeout=60_000)
    await send(page, "Second message after the restart.")
    await wait_idle(page)
    _, messages = http("GET", f"http://127.0.0.1:{8000 + n}/sessions/{sid}/messages", headers={"x-session-id": sid})
    assert [m["content"] for m in messages["messages"] if m["role"] == "user"] == ["First message.", "Second message after the restart."]
    await shot(page, "07-recovered")


async def test_phone_width_and_keyboard(deployed, browser):
    page = await open_page(browser, CLIENTS[0], width=360)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    assert await page.is_hidden("#sidebar") or await page.evaluate("getComputedStyle(document.getElementById('sidebar')).transform !== 'none'")
    await page.click("#open-sidebar")
    await page.wait_for_timeout(300)
    await shot(page, "08-phone-sidebar")
    await page.click("#close-sidebar")
    await page.focus("#input")
    await page.keyboard.type("line one")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("line two")
    assert await page.input_value("#input") == "line one\nline two"
    await shot(page, "09-phone-chat")


async def test_csp_forbids_inline_script(deployed, browser):
    context = await browser.new_context()
    page = await context.new_page()
    response = await page.goto(f"http://localhost:{8500 + CLIENTS[0]}/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    verdict = await page.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
        document.body.appendChild(s); return window.__inline === 1 ? 'ran' : 'blocked'; }""")
    assert verdict == "blocked"
    await context.close()
