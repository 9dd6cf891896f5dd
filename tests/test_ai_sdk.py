"""The AI SDK helpers: the UI message stream in Python, and the README's routes under the real ``ai`` client.

``tests/ai_sdk_js/client.mjs`` runs the AI SDK's own client code (the
``DefaultChatTransport``, ``readUIMessageStream`` and the ``Chat`` class that
``useChat`` wraps) in each major version (5, 6 and 7, pinned in its lock file)
against the README's Flask routes, served on a real port and on S2 (the local
server) over HTTP. Node.js and npm are required: ``make test`` installs them,
and these tests fail (they never skip) without them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from resumable_stream import MemoryLog, ResumableStreamContext, StreamState
from resumable_stream.ai_sdk import ChatAnswers, ChatRequest, message_text, parse_chat_request, ui_message_stream
from resumable_stream.sse import GENERIC_ERROR, sse_frames
from resumable_stream.testing import S2Server

from .readme_blocks import block, run_python
from .support import BASIN, Gate, parse_sse

JS_DIR = Path(__file__).resolve().parent / "ai_sdk_js"
VERSIONS = ("ai5", "ai6", "ai7")
WORDS = re.findall(r"\S+", "The quick brown fox jumps over the lazy dog, and then it runs far away")
FULL = "".join(word + " " for word in WORDS)
README_ROUTES = ("README.md", "Vercel AI SDK `useChat`", 0)


def call_the_model(prompt: str) -> Iterator[str]:
    """The test's model: ``WORDS``; slowly if the prompt says "slow"; failing after three words if it says "fail"."""
    for i, word in enumerate(WORDS):
        if "fail" in prompt and i == 3:
            raise RuntimeError("the model's backend db-7 is down")
        if "slow" in prompt:
            time.sleep(0.06)
        yield word + " "


def parts(chunks: list[str]) -> list[dict[str, Any]]:
    return [json.loads(chunk) for chunk in chunks]


# -- the UI message stream, in Python -------------------------------------------


def test_text_becomes_start_text_parts_and_finish() -> None:
    assert parts(list(ui_message_stream(["Hel", "", "lo"], message_id="m1"))) == [
        {"type": "start", "messageId": "m1"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "Hel"},
        {"type": "text-delta", "id": "text-1", "delta": "lo"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish"},
    ]
    generated = parts(list(ui_message_stream(lambda: iter([]))))
    assert [p["type"] for p in generated] == ["start", "finish"] and generated[0]["messageId"].startswith("msg-")


def test_parts_of_the_source_pass_through_between_text_blocks() -> None:
    weather = {"type": "data-weather", "data": {"city": "Oslo", "temp": -3}}
    got = parts(list(ui_message_stream(iter(["a", weather, "b\n\u2713"]), message_id="m")))
    assert [(p["type"], p.get("id")) for p in got] == [
        ("start", None), ("text-start", "text-1"), ("text-delta", "text-1"), ("text-end", "text-1"),
        ("data-weather", None), ("text-start", "text-2"), ("text-delta", "text-2"), ("text-end", "text-2"),
        ("finish", None),
    ]  # fmt: skip
    assert got[4] == weather and got[6]["delta"] == "b\n\u2713"
    assert all("\n" not in chunk for chunk in ui_message_stream(iter(["b\n"])))  # one SSE data line per part


def test_long_text_is_split_and_bad_pieces_fail_clearly() -> None:
    long = "x" * 40_000
    deltas = [p["delta"] for p in parts(list(ui_message_stream(iter([long])))) if p["type"] == "text-delta"]
    assert "".join(deltas) == long and max(map(len, deltas)) <= 16_384
    with pytest.raises(TypeError, match="text or parts"):
        list(ui_message_stream(iter([b"bytes"])))  # type: ignore[list-item]
    with pytest.raises(TypeError, match="text or parts"):
        list(ui_message_stream(iter([{"no": "type"}])))
    with pytest.raises(ValueError, match="message_id"):
        ui_message_stream(iter([]), message_id="")


def test_what_the_transport_posts_is_parsed_or_refused() -> None:
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}
    body = {"id": "chat1", "messages": [user], "trigger": "submit-message", "messageId": None, "model": "small"}
    request = parse_chat_request(body)
    assert request == ChatRequest("chat1", [user], "submit-message", None, {"model": "small"})
    assert request.last_user_text == "Hi there" and message_text({"parts": "nope"}) == ""
    for bad, why in [
        ([], "JSON object"),
        ({"messages": []}, "'id'"),
        ({"id": "c", "messages": "hi"}, "'messages'"),
        ({"id": "c", "messages": [], "trigger": "resume"}, "'trigger'"),
        ({"id": "c", "messages": [], "messageId": 3}, "'messageId'"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_chat_request(bad)


def test_chat_answers_track_the_latest_answer_of_each_chat() -> None:
    log = MemoryLog(create_stream_on_append=False, create_stream_on_read=False)
    with ResumableStreamContext(log, abandon_after=2, stop_timeout=2) as ctx:
        answers = ChatAnswers(ctx)
        assert answers.active("c") is None and answers.stop("c") is None
        assert answers.active("not/one") is None  # a chat id that cannot be: nothing to resume
        with pytest.raises(ValueError, match="chat id"):
            answers.start("not/one", iter(["x"]))
        gate = Gate(["a"], ["b"])
        live = answers.start("c", gate)
        resumed = answers.active("c")
        assert resumed is not None
        gate.open()
        assert list(live) == list(resumed) == ["a", "b"]
        assert answers.active("c") is None  # ended: 204
        stopping = Gate(["x"], ["never"])
        second = answers.start("c", stopping)
        assert next(second) == "x"
        status = answers.stop("c")
        stopping.open()
        assert status is not None and status.state is StreamState.STOPPED
        assert list(second) == []


def test_a_failure_is_an_error_part_and_a_stop_an_abort_part() -> None:
    with ResumableStreamContext(MemoryLog(), abandon_after=2, stop_timeout=2) as ctx:
        failed = ctx.create_new_resumable_stream("f", lambda: ui_message_stream(call_the_model("fail")))
        assert failed is not None
        events, _ = parse_sse(b"".join(sse_frames(failed, ai_sdk=True)).decode())
        assert [json.loads(e.data) for e in events[-2:-1]] == [{"type": "error", "errorText": GENERIC_ERROR}]
        assert events[-1].data == "[DONE]"
        assert ctx.stream_status("f").error == "RuntimeError: the model's backend db-7 is down"


# -- the README's routes under the AI SDK's own client ---------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; `make test` installs Node.js and npm", pytrace=False)
    return path


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the pinned AI SDK versions installed from the lock file (``npm ci``)."""
    node = _tool("node")
    if not all((JS_DIR / "node_modules" / version / "package.json").exists() for version in VERSIONS):
        done = subprocess.run(
            [_tool("npm"), "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return node


@pytest.fixture(scope="module")
def readme_app(s2_server: S2Server) -> Iterator[str]:
    """The README's AI SDK block, as written, on S2 (the local server) and a real port."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in s2_server.env(BASIN).items():
            env.setenv(name, value)
        _, scope = run_python(block(*README_ROUTES))
    scope["call_the_model"] = call_the_model  # the routes call the test's model in place of the stand-in
    server = make_server("127.0.0.1", 0, scope["app"], threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)
    scope["ctx"].close(timeout=5)


def run_client(node: str, url: str, version: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, "client.mjs", version, url, f"{version}-{time.monotonic_ns()}"],
        cwd=JS_DIR, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, f"{version}:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def client_results(node: str, readme_app: str) -> dict[str, dict[str, Any]]:
    """Each major version's client, run at once against the same server."""
    with ThreadPoolExecutor(len(VERSIONS)) as pool:
        return dict(zip(VERSIONS, pool.map(lambda v: run_client(node, readme_app, v), VERSIONS), strict=True))


def text_types(count: int) -> list[str]:
    return ["start", "text-start", *["text-delta"] * count, "text-end", "finish"]


@pytest.mark.parametrize("version", VERSIONS)
def test_the_ai_sdk_reads_the_whole_answer_and_nothing_after_its_end(
    client_results: dict[str, dict[str, Any]], version: str
) -> None:
    whole = client_results[version]["whole"]
    assert whole["text"] == FULL and whole["errors"] == []
    assert whole["types"] == text_types(len(WORDS))
    assert whole["reconnectAfterEnd"] is True  # the GET answered 204: reconnectToStream gave null
    assert client_results[version]["neverUsed"] is True


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reconnect_mid_answer_replays_it_once_with_the_same_ids(
    client_results: dict[str, dict[str, Any]], version: str
) -> None:
    reload = client_results[version]["reload"]
    head, resumed = reload["head"], reload["resumed"]
    assert 3 <= head["types"].count("text-delta") < len(WORDS) and FULL.startswith(head["text"])
    assert resumed["text"] == FULL and resumed["types"] == text_types(len(WORDS))  # from the start, not doubled
    assert resumed["messageId"] == head["messageId"]
    assert reload["reconnectAfterEnd"] is True


@pytest.mark.parametrize("version", VERSIONS)
def test_failure_and_stop_reach_the_client_in_its_terms(
    client_results: dict[str, dict[str, Any]], version: str
) -> None:
    fail, stop = client_results[version]["fail"], client_results[version]["stop"]
    assert fail["types"] == ["start", "text-start", "text-delta", "text-delta", "text-delta", "error"]
    assert fail["errorTexts"] == [GENERIC_ERROR] and fail["errors"] == [GENERIC_ERROR]  # never the backend's text
    assert fail["text"] == "".join(word + " " for word in WORDS[:3])
    assert stop["stopStatus"] == 204 and stop["types"][-1] == "abort" and "error" not in stop["types"]
    assert FULL.startswith(stop["text"]) and len(stop["text"]) < len(FULL)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_chat_class_resumes_on_a_reloaded_page(client_results: dict[str, dict[str, Any]], version: str) -> None:
    chat = client_results[version]["chat"]
    assert chat["writer"] == [FULL] and chat["reloaded"] == [FULL]  # one assistant message, the whole text once
    assert chat["sameId"] is True and chat["status"] == "ready" and chat["error"] is None
    assert chat["idleMessages"] == 0  # after the end, resumeStream finds nothing (204)
    assert chat["failStatus"] == "error" and chat["failError"] == GENERIC_ERROR
