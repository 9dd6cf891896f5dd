"""examples/flask_chat's page, end to end in headless Chromium driven by Playwright.

The browser is Debian's ``/usr/bin/chromium`` (packages ``chromium`` and
``chromium-driver``), never one Playwright downloads. The app runs on a real
local port, on the in-process log, with the fake model slow enough that an
answer is still being written when the test reloads or stops it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from werkzeug.serving import make_server

from examples.flask_chat.app import create_app
from examples.flask_chat.models import FakeModel, fake_answer
from resumable_stream import MemoryLog, ResumableStreamContext

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
#: The fake model's rate: its answer (about 106 words) takes about 4 s, long enough to reload or stop it midway.
TOKENS_PER_SECOND = 25
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    """The chat app on a free local port, served by werkzeug on a background thread."""
    log = MemoryLog()
    ctx = ResumableStreamContext(log)
    server = make_server("127.0.0.1", 0, create_app(ctx, FakeModel(TOKENS_PER_SECOND)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    ctx.close(timeout=5)
    log.close()  # ends the pages' pending long-polls
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """Headless Chromium with a fresh profile. Fails, not skips, when it is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. `make test` installs it "
            "(or run: apt-get install -y chromium chromium-driver)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the browser tests need Playwright for Python: `make test` installs it (or: pip install playwright)"
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        context.close()


def open_chat(browser: BrowserContext, url: str) -> Page:
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def answer_selector(seq: int) -> str:
    return f'.answer[data-seq="{seq}"]'


def wait_for_words(page: Page, seq: int, count: int) -> None:
    """Wait until the answer to message ``seq`` shows at least ``count`` words."""
    page.wait_for_function(
        """([selector, count]) => {
            const text = document.querySelector(selector)?.querySelector('.answer-text').textContent ?? '';
            return text.split(' ').length > count;
        }""",
        arg=[f'.turn[data-seq="{seq}"]', count],
    )


def wait_for_state(page: Page, seq: int, state: str) -> None:
    page.wait_for_selector(f'{answer_selector(seq)}[data-state="{state}"]')


def answer_text(page: Page, seq: int) -> str:
    return page.locator(f"{answer_selector(seq)} .answer-text").text_content() or ""


def test_reloading_mid_answer_continues_it_with_nothing_missing_or_doubled(
    browser: BrowserContext, app_url: str
) -> None:
    message = "Tell me about resumable streams"
    page = open_chat(browser, f"{app_url}/?chat=reload-{uuid.uuid4().hex[:8]}")
    try:
        page.fill("#message", message)
        page.click("#send")
        wait_for_words(page, 0, 3)
        assert page.get_attribute(answer_selector(0), "data-state") == "streaming"
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        wait_for_state(page, 0, "streaming")  # the reloaded page follows the answer still being written
        wait_for_state(page, 0, "completed")
        assert answer_text(page, 0) == fake_answer(message)
        assert page.locator(".turn").count() == 1
        assert page.locator(".turn .user").text_content() == message
        assert page.is_enabled("#send") and not page.is_enabled("#stop")
    finally:
        page.close()


def test_a_second_tab_follows_the_answer_live_and_its_stop_stops_it_everywhere(
    browser: BrowserContext, app_url: str
) -> None:
    message = "Two tabs, one answer"
    chat_url = f"{app_url}/?chat=tabs-{uuid.uuid4().hex[:8]}"
    first, second = open_chat(browser, chat_url), open_chat(browser, chat_url)
    try:
        first.fill("#message", message)
        first.click("#send")
        wait_for_words(second, 0, 3)  # the second tab learned of the answer and shows it as it is written
        wait_for_state(second, 0, "streaming")
        assert second.locator(".turn .user").text_content() == message
        assert not second.is_enabled("#send")
        second.click("#stop")
        wait_for_state(second, 0, "stopped")
        wait_for_state(first, 0, "stopped")
        text = answer_text(first, 0)
        assert answer_text(second, 0) == text
        full = fake_answer(message)
        assert full.startswith(text) and len(text) < len(full)
        for page in (first, second):
            assert page.locator(f"{answer_selector(0)} .answer-status").text_content() == "stopped"
            assert page.is_enabled("#send") and not page.is_enabled("#stop")
    finally:
        first.close()
        second.close()
