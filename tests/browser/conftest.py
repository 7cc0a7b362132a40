"""Shared by the browser tests: one deployment (a main server and clients 4 and 5, real
processes) for the whole browser suite, Debian's chromium through Playwright, and helpers."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentic.ids import new_session_id
from agentic.sessions.models import ChatSettings
from agentic.sessions.store import SessionStore
from tests.conftest import make_settings
from tests.e2e.deployment import Deployment, http

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Screenshots of each state, for a person to look at: TEST_ARTIFACTS, default test-artifacts/ (ignored by git).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts") / "browser"
CLIENTS = (4, 5)
# The page sets state.session before it opens the socket, so state.ws may still be null.
SOCKET_OPEN = "window.agenticChat?.state.ws?.readyState === 1"

# A conversation the bundled model would not write on request: stored before the servers start,
# then served by them like any other session's history.
SEEDED_QUESTION = "Compare the two sorting functions and show the QUOKKA one."
SEEDED_REPLY = """Here is the comparison:

| Function | Time | Stable |
|:---------|-----:|:------:|
| `sorted` | O(n log n) | yes |
| QUOKKA sort | O(n²) | no |

1. First point
   - nested detail
   - another detail
2. Second point

```python
def quokka_sort(items):
    return sorted(items)  # stable
```

See [the docs](https://docs.python.org/3/) and [this](javascript:window.__pwned=3) link.
<img src=x onerror="window.__pwned=4"> stays text.
"""


@dataclass(frozen=True)
class Seeded:
    session_id: str
    reply_id: str


@pytest.fixture(scope="package")  # stopped once the browser tests are done, not at the end of the whole run
def seeded_and_deployed(tmp_path_factory) -> tuple[Deployment, Seeded]:
    data_dir = tmp_path_factory.mktemp("browser") / "data"
    seeded = asyncio.run(_seed(make_settings(data_dir).db_path))
    d = Deployment.main_with_clients(data_dir, CLIENTS)
    yield d, seeded
    d.stop_all()


async def _seed(db_path: Path) -> Seeded:
    store = SessionStore(db_path)
    await store.open()
    try:
        record = await store.create(new_session_id(), "client-4", "", ChatSettings(), "Sorting compared")
        await store.add_message(record, "user", SEEDED_QUESTION)
        reply = await store.add_message(record, "assistant", SEEDED_REPLY)
    finally:
        await store.close()
    return Seeded(record.session_id, reply.id)


@pytest.fixture
def deployed(seeded_and_deployed) -> Deployment:
    return seeded_and_deployed[0]


@pytest.fixture
def seeded(seeded_and_deployed) -> Seeded:
    return seeded_and_deployed[1]


@pytest.fixture
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        instance = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield instance
        await instance.close()


async def open_page(browser, n: int, width: int = 1280, fresh: bool = True, context=None):
    """A page on client n's frontend; `fresh` starts a new session (a new browser gets the
    client's default one). A new browser context unless `context` is given."""
    # bypass_csp lets the test harness poll with its own scripts; test_csp_forbids_inline_script checks the policy itself
    context = context or await browser.new_context(viewport={"width": width, "height": 860}, bypass_csp=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "WebSocket" not in msg.text and "Failed to load resource" not in msg.text else None)
    await page.goto(f"http://localhost:{8500 + n}/")
    await page.wait_for_function(f"window.agenticChat?.state.session && {SOCKET_OPEN}")
    page.errors = errors
    if fresh:
        await new_chat(page, width)
    return page


async def new_chat(page, width: int = 1280) -> str:
    before = await session_id(page)
    if width < 760:
        await page.click("#open-sidebar")
    await page.click("#new-session")
    if width < 760:
        await page.click("#close-sidebar")
    await page.wait_for_function(f"window.agenticChat.state.session.session_id !== '{before}' && {SOCKET_OPEN}")
    return await session_id(page)


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def session_id(page) -> str:
    return await page.evaluate("window.agenticChat.state.session.session_id")


async def send(page, text: str) -> None:
    await page.fill("#input", text)
    await page.press("#input", "Enter")


async def wait_idle(page, timeout: float = 90_000) -> None:
    await page.wait_for_function("!window.agenticChat.state.generating", timeout=timeout)


async def wait_reply(page, count: int, timeout: float = 90_000) -> None:
    """Until the conversation holds `count` finished replies with their stored ids."""
    await page.wait_for_function(
        "!window.agenticChat.state.generating && window.agenticChat.state.messages.every((m) => m.id !== 'local') && "
        f"document.querySelectorAll('.message.assistant:not(.streaming) .message-tools').length === {count}",
        timeout=timeout)


async def patch(n: int, sid: str, body: dict) -> None:
    status, _ = http("PATCH", f"http://127.0.0.1:{8000 + n}/sessions/{sid}", body, {"x-session-id": sid})
    assert status == 200


async def open_session(page, sid: str) -> None:
    """Make `sid` this browser's current session, as if it had been opened here before."""
    await page.evaluate("""sid => { const scope = 'agentic:' + (document.body.dataset.clientId || 'main');
        const known = JSON.parse(localStorage.getItem(scope + ':sessions') || '[]');
        localStorage.setItem(scope + ':sessions', JSON.stringify([{id: sid, title: ''}, ...known]));
        localStorage.setItem(scope + ':current', sid); }""", sid)
    await page.reload()
    await page.wait_for_function(f"window.agenticChat?.state.session?.session_id === '{sid}' && {SOCKET_OPEN} && window.agenticChat.state.messages.length > 0")
