"""The chat page's Markdown, themes and shortcuts, in Debian's chromium against real processes
(the deployment of tests/browser/conftest.py)."""

from __future__ import annotations

import json

import pytest

from tests.browser.conftest import ARTIFACTS, CHROMIUM, CLIENTS, SOCKET_OPEN, open_page, open_session, patch, send, session_id, shot, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (./deploy.sh test installs it)")]

# WCAG AA for normal text
MIN_CONTRAST = 4.5
CONTRAST = """() => {
  const css = getComputedStyle(document.documentElement);
  const rgb = (name) => { const d = document.createElement('div'); d.style.color = css.getPropertyValue(name); document.body.appendChild(d);
    const v = getComputedStyle(d).color.match(/\\d+/g).slice(0, 3).map(Number); d.remove(); return v; };
  const lum = (c) => { const [r, g, b] = c.map((x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const ratio = (a, b) => { const [x, y] = [lum(rgb(a)), lum(rgb(b))].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const pairs = [['--text', '--bg'], ['--text', '--panel'], ['--text', '--user'], ['--muted', '--panel'], ['--muted', '--bg'], ['--accent', '--panel'],
    ['--accent-text', '--accent'], ['--danger', '--panel'], ['--text', '--mark'], ['--hl-keyword', '--code'], ['--hl-string', '--code'],
    ['--hl-comment', '--code'], ['--muted', '--code'], ['--hl-number', '--code'], ['--hl-title', '--code'], ['--hl-builtin', '--code'], ['--text', '--code']];
  return Object.fromEntries(pairs.map(([f, b]) => [f + ' on ' + b, Math.round(ratio(f, b) * 100) / 100]));
}"""


async def test_markdown_reply_renders_tables_code_and_safe_links(deployed, seeded, browser):
    page = await open_page(browser, CLIENTS[0], fresh=False)
    await open_session(page, seeded.session_id)
    reply = page.locator(f'.message.assistant[data-id="{seeded.reply_id}"]')
    assert await reply.locator("table th").all_inner_texts() == ["Function", "Time", "Stable"]
    assert await reply.locator("table td.align-right").count() == 2
    assert await reply.locator("ol > li > ul > li").count() == 2  # a nested list
    code = reply.locator("pre.code[data-lang=python] code")
    assert await code.locator(".hljs-keyword").first.inner_text() == "def"
    assert await code.locator(".hljs-comment").inner_text() == "# stable"
    assert await reply.get_by_role("button", name="Copy this code").count() == 1
    link = reply.get_by_role("link", name="the docs")
    assert await link.get_attribute("href") == "https://docs.python.org/3/"
    assert await link.get_attribute("target") == "_blank"
    assert set((await link.get_attribute("rel")).split()) >= {"noopener", "noreferrer"}
    # the javascript: link and the raw <img onerror> stay text
    assert await reply.locator("a").count() == 1
    assert await reply.locator("img, script").count() == 0
    assert '<img src=x onerror="window.__pwned=4">' in await reply.inner_text()
    assert "[this](javascript:window.__pwned=3)" in await reply.inner_text()
    assert await page.evaluate("window.__pwned") is None
    await shot(page, "10-markdown-light")
    assert not page.errors


async def test_markdown_reply_fits_a_phone(deployed, seeded, browser):
    page = await open_page(browser, CLIENTS[0], width=360, fresh=False)
    await open_session(page, seeded.session_id)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360  # wide tables and code scroll inside the reply
    await shot(page, "10-markdown-phone")


async def test_theme_survives_reload_and_both_themes_have_contrast(deployed, seeded, browser):
    page = await open_page(browser, CLIENTS[0], fresh=False)
    await open_session(page, seeded.session_id)
    theme = page.get_by_label("Theme")
    assert await theme.input_value() == "system"
    light = await page.evaluate(CONTRAST)
    await theme.select_option("dark")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    dark = await page.evaluate(CONTRAST)
    await page.reload()
    await page.wait_for_function(f"window.agenticChat?.state.messages.length > 0 && {SOCKET_OPEN}")
    assert await page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert await page.get_by_label("Theme").input_value() == "dark"
    await shot(page, "11-markdown-dark")
    low = {f"{name} ({kind})": value for kind, ratios in (("light", light), ("dark", dark)) for name, value in ratios.items() if value < MIN_CONTRAST}
    assert not low, low
    await page.get_by_label("Theme").select_option("system")
    await page.emulate_media(color_scheme="dark")  # "system" follows the system's choice, as it changes
    await page.wait_for_function("document.documentElement.dataset.theme === 'dark'")
    await page.emulate_media(color_scheme="light")
    await page.wait_for_function("document.documentElement.dataset.theme === 'light'")


async def test_streaming_render_cost_stays_linear(deployed, browser):
    """A 2,000-token reply fed to the page's streaming view one token at a time, rendered after
    every token (the worst case: the page renders at most once a frame): the characters parsed
    in all stay a small multiple of the reply, where re-rendering the whole reply would parse
    about 1,000 times it. The timings are written to the artifacts and printed, not asserted."""
    page = await open_page(browser, CLIENTS[1], fresh=False)
    figures = await page.evaluate("""(seed) => {
      const tokens = [];
      for (let section = 0; tokens.length < 2000; section++) {
        const text = '## Part ' + section + '\\n\\nSome prose with **bold** words and `code` in it, going on for a while here.\\n\\n' +
          '- item one\\n- item two\\n  - nested\\n\\n| a | b |\\n|---|---|\\n| 1 | 2 |\\n\\n```js\\nconst x = ' + section + ';\\nfunction f() { return x; }\\n```\\n\\n';
        tokens.push(...text.match(/\\s*\\S+|\\s+/g));
      }
      tokens.length = 2000;
      const body = document.createElement('div');
      document.body.appendChild(body);
      const view = new window.agenticMarkdown.StreamView(body, () => {});
      let text = '', worst = 0;
      const start = performance.now();
      for (const token of tokens) {
        text += token;
        view.set(text);
        const t = performance.now();
        view.flush();
        worst = Math.max(worst, performance.now() - t);
      }
      const streamed = performance.now() - start;
      let t = performance.now();
      const whole = window.agenticMarkdown.render(text);
      const once = performance.now() - t;
      const naive = document.createElement('div');  // the alternative: the whole reply again at every token
      document.body.appendChild(naive);
      t = performance.now();
      for (let end = 0, i = 0; i < tokens.length; i++) { end += tokens[i].length; naive.innerHTML = window.agenticMarkdown.render(text.slice(0, end)); }
      const naiveMs = performance.now() - t;
      naive.remove();
      // what the view shows, less its copy buttons, is what rendering the whole reply at once gives
      for (const button of body.querySelectorAll('button.copy')) button.remove();
      for (const pre of body.querySelectorAll('.decorated')) pre.classList.remove('decorated');
      const d = document.createElement('div');
      d.innerHTML = whole;
      const same = [...body.children].map((part) => part.innerHTML).join('') === d.innerHTML;
      body.remove();
      return {tokens: tokens.length, chars: text.length, parsed_chars: view.parsed, streamed_ms: streamed, worst_update_ms: worst,
              full_render_ms: once, whole_reply_every_token_ms: naiveMs, same_text: same};
    }""", None)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "stream-render-cost.json").write_text(json.dumps(figures, indent=2))
    print("streaming render cost:", figures)
    assert figures["same_text"]
    assert figures["parsed_chars"] < 20 * figures["chars"], figures


async def test_each_keyboard_shortcut(deployed, browser):
    n = CLIENTS[0]
    page = await open_page(browser, n)
    await page.locator("body").click(position={"x": 700, "y": 300})
    await page.keyboard.press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    await dialog.wait_for()
    for action in ("New chat", "Focus the message field", "Stop the reply being written", "Search chats", "Regenerate the last reply"):
        assert await dialog.get_by_text(action).count() == 1
    await shot(page, "12-shortcuts-dialog")
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="hidden")

    await page.keyboard.press("Control+k")
    assert await page.evaluate("document.activeElement.id") == "search-input"
    await page.keyboard.press("Shift+Escape")
    assert await page.evaluate("document.activeElement.id") == "input"
    await page.locator("#messages").click()
    await page.keyboard.press("/")
    assert await page.evaluate("document.activeElement.id") == "search-input"

    before = await session_id(page)
    await page.keyboard.press("Alt+Shift+N")
    await page.wait_for_function(f"window.agenticChat.state.session.session_id !== '{before}' && {SOCKET_OPEN}")
    sid = await session_id(page)
    await patch(n, sid, {"settings": {"ignore_eos": True, "max_tokens": 400}})
    await send(page, "Tell me a very long story.")
    await page.wait_for_function("document.querySelector('.message.assistant .body')?.textContent.length > 20")
    await page.keyboard.press("Escape")
    await wait_idle(page)
    assert "stopped" in await page.locator(".message.assistant .figures").last.inner_text()
    assert not page.errors
