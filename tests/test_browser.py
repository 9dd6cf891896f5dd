"""examples/flask_chat's page, end to end in headless Chromium driven by Playwright.

The browser is Debian's Chromium (see ``browser_helpers``). The app runs on a real
local port, on the in-process log, with the fake model slow enough that an
answer is still being written when the test reloads or stops it. Every check
reads what the page shows: the answer's text, its state badge and message,
and its live panel (cursor, "resumed from #N after reload", serving pid).

``test_the_screenshot_in_the_readme`` takes the README's picture; it writes
``docs/flask_chat.png`` when ``UPDATE_SCREENSHOTS=1`` (``make screenshots``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from werkzeug.serving import make_server

from examples.flask_chat.app import create_app
from examples.flask_chat.models import FakeModel, fake_answer
from resumable_stream import MemoryLog, Record, ResumableStreamContext

from .browser_helpers import browser as browser
from .support import Gate

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[1]
#: The fake model's rate: its answer (about 110 words) takes about 4 s, long enough to reload or stop it midway.
TOKENS_PER_SECOND = 25


@dataclass
class App:
    url: str
    log: MemoryLog
    model: FakeModel


@pytest.fixture(scope="module")
def app() -> Iterator[App]:
    """The chat app on a free local port, served by werkzeug on a background thread."""
    log = MemoryLog()
    ctx = ResumableStreamContext(log)
    model = FakeModel(TOKENS_PER_SECOND)
    server = make_server("127.0.0.1", 0, create_app(ctx, model), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield App(f"http://127.0.0.1:{server.server_port}", log, model)
    ctx.close(timeout=5)
    log.close()  # ends the pages' pending long-polls
    server.shutdown()
    server.server_close()
    thread.join(5)


def fresh_chat(app: App, name: str) -> str:
    return f"{app.url}/?chat={name}-{uuid.uuid4().hex[:8]}"


def open_chat(browser: BrowserContext, url: str) -> Page:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def send(page: Page, message: str) -> None:
    page.fill("#message", message)
    page.click("#send")


def answer(seq: int, part: str = "") -> str:
    return f'.answer[data-seq="{seq}"] {part}'.strip()


def wait_for_words(page: Page, seq: int, count: int) -> None:
    """Wait until the answer to message ``seq`` shows at least ``count`` words."""
    page.wait_for_function(
        """([selector, count]) => {
            const text = document.querySelector(selector)?.textContent ?? '';
            return text.split(/\\s+/).filter(Boolean).length >= count;
        }""",
        arg=[answer(seq, ".answer-body"), count],
    )


def wait_for_state(page: Page, seq: int, state: str) -> None:
    page.wait_for_selector(f'{answer(seq)}[data-state="{state}"]')


def shown(page: Page, seq: int, part: str) -> str:
    return page.locator(answer(seq, part)).text_content() or ""


def rendered(page: Page, markdown: str) -> str:
    """What the page's Markdown renderer shows of ``markdown``, as text."""
    text: str = page.evaluate("source => renderMarkdown(source).textContent", markdown)
    return text


def test_reloading_mid_answer_resumes_after_its_cursor_with_nothing_missing_or_doubled(
    browser: BrowserContext, app: App
) -> None:
    message = "Tell me about resumable streams"
    page = open_chat(browser, fresh_chat(app, "reload"))
    try:
        send(page, message)
        wait_for_words(page, 0, 8)
        assert page.get_attribute(answer(0), "data-state") == "writing"
        assert shown(page, 0, ".badge") == "writing\u2026"
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        resumed = page.locator(answer(0, ".resumed"))
        resumed.wait_for()
        before = re.fullmatch(r"resumed from #(\d+) after reload", resumed.text_content() or "")
        assert before is not None and int(before.group(1)) >= 8
        wait_for_state(page, 0, "completed")
        assert shown(page, 0, ".answer-body") == rendered(page, fake_answer(message))
        assert shown(page, 0, ".badge") == "completed"
        after = re.fullmatch(r"cursor #(\d+)", shown(page, 0, ".cursor"))
        assert after is not None and int(after.group(1)) > int(before.group(1))
        assert page.locator(".turn").count() == 1 and page.locator(".turn .bubble").text_content() == message
        assert shown(page, 0, ".served") == f"served by pid {os.getpid()}"
        assert page.is_enabled("#send") and not page.is_enabled("#stop")
    finally:
        page.close()


def test_a_second_tab_follows_the_answer_live_and_its_stop_stops_it_everywhere(
    browser: BrowserContext, app: App
) -> None:
    message = "Two tabs, one answer"
    chat_url = fresh_chat(app, "tabs")
    first, second = open_chat(browser, chat_url), open_chat(browser, chat_url)
    try:
        send(first, message)
        wait_for_words(second, 0, 5)  # the second tab learned of the answer and shows it as it is written
        wait_for_state(second, 0, "writing")
        assert second.locator(".turn .bubble").text_content() == message
        assert shown(second, 0, ".resumed") == ""  # a tab without saved progress follows from the start
        assert not second.is_enabled("#send")
        second.click("#stop")
        wait_for_state(second, 0, "stopped")
        wait_for_state(first, 0, "stopped")
        text = shown(first, 0, ".answer-body")
        assert shown(second, 0, ".answer-body") == text
        assert rendered(first, fake_answer(message)).startswith(text[:40]) and len(text) < len(fake_answer(message))
        for page in (first, second):
            assert shown(page, 0, ".badge") == "stopped" and shown(page, 0, ".answer-error") == ""
            assert page.is_enabled("#send") and not page.is_enabled("#stop")
    finally:
        first.close()
        second.close()


def test_a_failed_answer_says_so_with_the_message_meant_for_users(browser: BrowserContext, app: App) -> None:
    page = open_chat(browser, fresh_chat(app, "fail"))
    try:
        send(page, "/fail show me a failure")
        wait_for_state(page, 0, "failed")
        assert shown(page, 0, ".badge") == "failed"
        assert shown(page, 0, ".answer-error") == "the fake model failed, as the message asked"
        assert shown(page, 0, ".answer-body").startswith("You said:")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")  # the history tells the same
        wait_for_state(page, 0, "failed")
        assert shown(page, 0, ".answer-error") == "the fake model failed, as the message asked"
    finally:
        page.close()


def test_an_abandoned_answer_says_its_writer_stopped(browser: BrowserContext, app: App) -> None:
    """A producer that dies mid-answer: here a second context on the same log, closed while its source waits."""
    chat = f"gone-{uuid.uuid4().hex[:8]}"
    app.log.append(f"chats/{chat}", [Record(json.dumps({"message": "Will you finish?"}).encode())])
    writer = ResumableStreamContext(app.log)
    gate = Gate(["I was ", "about to ", "say "], ["more"])
    writer.create_new_resumable_stream(f"chats/{chat}/0", gate)
    page = open_chat(browser, f"{app.url}/?chat={chat}")
    try:
        wait_for_words(page, 0, 5)
        wait_for_state(page, 0, "writing")
        writer.close(timeout=0.2)  # shutting down before the source finished: recorded as abandoned
        wait_for_state(page, 0, "abandoned")
        assert shown(page, 0, ".badge") == "abandoned"
        assert shown(page, 0, ".answer-error") == "the process writing this answer stopped before it finished"
        assert shown(page, 0, ".answer-body") == "I was about to say "
    finally:
        gate.open()
        page.close()


def test_markdown_is_rendered_and_nothing_in_it_runs(browser: BrowserContext, app: App) -> None:
    hostile = '<img src=x onerror="window.pwned=1"> [click](javascript:window.pwned=1) <script>window.pwned=1</script>'
    page = open_chat(browser, fresh_chat(app, "markdown"))
    try:
        send(page, hostile)
        wait_for_words(page, 0, 20)
        body = page.locator(answer(0, ".answer-body"))
        assert hostile.split(" [")[0] in (body.text_content() or "")  # shown as text
        assert page.locator(".answer-body img, .answer-body script, .bubble img").count() == 0
        assert page.locator('a[href^="javascript"]').count() == 0
        assert page.evaluate("window.pwned") is None
        assert page.locator(answer(0, ".answer-body strong")).first.text_content() == "built-in fake model"
        page.click("#stop")
        wait_for_state(page, 0, "stopped")
    finally:
        page.close()


def test_the_screenshot_in_the_readme(browser: BrowserContext, app: App, tmp_path: Path) -> None:
    """A chat with each kind of answer, and the sidebar's list of chats; the answer being written is reloaded."""
    app.model.tokens_per_second = 0
    for earlier in ("Plan a trip to Lisbon", "Explain fencing tokens"):
        other = open_chat(browser, fresh_chat(app, "earlier"))
        send(other, earlier)
        wait_for_state(other, 0, "completed")
        other.close()
    page = open_chat(browser, fresh_chat(app, "demo"))
    try:
        send(page, "What does this library do?")
        wait_for_state(page, 0, "completed")
        send(page, "Now show me a failure /fail")
        wait_for_state(page, 1, "failed")
        app.model.tokens_per_second = TOKENS_PER_SECOND
        send(page, "And one I stop")
        wait_for_words(page, 2, 12)
        page.click("#stop")
        wait_for_state(page, 2, "stopped")
        send(page, "Keep writing while I reload")
        wait_for_words(page, 3, 30)
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.locator(answer(3, ".resumed")).wait_for()
        wait_for_words(page, 3, 45)
        titles = page.locator("#chats a").all_text_contents()
        assert titles[:3] == ["What does this library do?", "Explain fencing tokens", "Plan a trip to Lisbon"]
        assert page.locator('#chats a[aria-current="page"]').count() == 1
        path = ROOT / "docs" / "flask_chat.png" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "c.png"
        page.screenshot(path=str(path))
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page.click("#stop")
        wait_for_state(page, 3, "stopped")
    finally:
        app.model.tokens_per_second = TOKENS_PER_SECOND
        page.close()
