"""examples/ai_sdk_chat: its bundle of the AI SDK's client, its command, and its page in headless Chromium.

The page runs the AI SDK's own ``Chat`` class and ``DefaultChatTransport``
(``ai`` 7, bundled from npm into ``static/ai-sdk.js``) against the example's
Flask app on a real port. Node.js and npm are required to rebuild the bundle:
``make test`` installs them, and the test fails (never skips) without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from werkzeug.serving import make_server

from examples.ai_sdk_chat.app import create_app
from examples.flask_chat.models import FakeModel, fake_answer
from resumable_stream import MemoryLog, ResumableStreamContext

from .browser_helpers import browser as browser
from .chat_helpers import Command, app_env
from .readme_blocks import block, command

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ai_sdk_chat"
CLIENT = EXAMPLE / "client"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; `make test` installs Node.js and npm", pytrace=False)
    return path


def test_the_committed_bundle_is_what_the_lock_file_builds(tmp_path: Path) -> None:
    npm = _tool("npm")
    if not (CLIENT / "node_modules" / "ai" / "package.json").exists():
        ci = [npm, "ci", "--no-audit", "--no-fund"]
        done = subprocess.run(ci, cwd=CLIENT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"npm ci failed in {CLIENT}:\n{done.stdout}\n{done.stderr}"
    build = tmp_path / "client"
    build.mkdir()
    for name in ("package.json", "entry.js"):
        shutil.copy(CLIENT / name, build / name)
    (build / "node_modules").symlink_to(CLIENT / "node_modules")
    done = subprocess.run([npm, "run", "build"], cwd=build, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "static" / "ai-sdk.js").read_bytes() == (EXAMPLE / "static" / "ai-sdk.js").read_bytes()


def test_the_readme_command_serves_the_page_and_the_bundle() -> None:
    args = command(block("examples/ai_sdk_chat/README.md", "Running it"), "python -m examples.ai_sdk_chat", port="0")
    app = Command(["python", "-m", "examples.ai_sdk_chat", *args], app_env(FAKE_MODEL_TOKENS_PER_SECOND="0"))
    try:
        url = app.await_output(lambda text: re.search(r"Running on (http://\S+)", text)).group(1)
        assert "ai_sdk_chat: Flask development server; log: the in-process log" in app.output()
        assert '<script type="module" src="/static/chat.js">' in requests.get(url, timeout=10).text
        bundle = requests.get(f"{url}/static/ai-sdk.js", timeout=10)
        assert bundle.status_code == 200 and "javascript" in bundle.headers["Content-Type"]
    finally:
        assert app.stop() == 0


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    log = MemoryLog()
    ctx = ResumableStreamContext(log)
    server = make_server("127.0.0.1", 0, create_app(ctx, FakeModel(25)), threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    ctx.close(timeout=5)
    log.close()
    server.shutdown()
    server.server_close()
    thread.join(5)


def assistant(page: Page, index: int) -> str:
    return f'.message[data-role="assistant"] >> nth={index}'


def wait_for_words(page: Page, index: int, count: int) -> None:
    """Wait until the ``index``-th answer shows more than ``count`` words."""
    page.wait_for_function(
        """([index, count]) => {
            const answer = document.querySelectorAll('.message[data-role=assistant]')[index];
            return (answer?.textContent ?? '').split(' ').length > count;
        }""",
        arg=[index, count],
    )


def test_the_page_streams_resumes_after_a_reload_stops_and_shows_failures(
    browser: BrowserContext, app_url: str
) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{app_url}/?chat=ai-{uuid.uuid4().hex[:8]}")
        page.wait_for_selector("body[data-ready=true]")
        page.fill("#input", "Resume me")
        page.click("#send")
        wait_for_words(page, 0, 8)
        page.reload()
        page.wait_for_selector("body[data-resumed=true]")  # the server said an answer is being written
        page.wait_for_selector('.message[data-role="assistant"][data-state="completed"]')
        assert page.locator(".message").count() == 2  # the user's message and one answer: nothing doubled
        text = page.locator(assistant(page, 0)).evaluate("el => el.firstChild.textContent")
        assert text == fake_answer("Resume me")
        assert page.get_attribute("body", "data-status") == "ready"

        page.fill("#input", "Stop me")
        page.click("#send")
        wait_for_words(page, 1, 5)
        page.click("#stop")
        page.wait_for_selector('.message[data-role="assistant"][data-state="stopped"]')
        stopped = page.locator(assistant(page, 1)).evaluate("el => el.firstChild.textContent")
        assert fake_answer("Stop me").startswith(stopped) and len(stopped) < len(fake_answer("Stop me"))
        assert page.text_content("#error") == ""

        page.fill("#input", "/fail now")
        page.click("#send")
        page.wait_for_selector("body[data-status=error]")
        assert page.text_content("#error") == "the fake model failed, as the message asked"
        page.wait_for_selector('.message[data-role="assistant"][data-state="failed"]')
    finally:
        page.close()
