"""examples/flask_chat's routes, through Flask's test client, on the in-process log and on S2 over HTTP.

The OpenAI-compatible model is tested against a small fake chat-completions
server on a real socket, down to the stop closing the connection to it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from examples.flask_chat.app import GENERIC_FAILURE, create_app, error_message
from examples.flask_chat.models import FakeModel, Model, OpenAICompatibleModel, fake_answer, model_from_env
from resumable_stream import MemoryLog, Record, ResumableStreamContext, StreamFailed
from resumable_stream.log import Log

from .chat_helpers import AppProcess, app_env, read_answer, sse_events
from .readme_blocks import block, command
from .support import Event, parse_sse

MESSAGE = "Is this resumable?"
FULL = fake_answer(MESSAGE)


@pytest.fixture
def make_app(log: Log) -> Iterator[Callable[..., Flask]]:
    """Build the app on ``log`` (each test runs on the in-process log and on S2) with a given model."""
    contexts: list[ResumableStreamContext] = []

    def make(model: Model, **config: Any) -> Flask:
        ctx = ResumableStreamContext(log, abandon_after=5, stop_timeout=5)
        contexts.append(ctx)
        app = create_app(ctx, model)
        app.config.update(config)
        return app

    yield make
    for ctx in contexts:
        ctx.close(timeout=5)


@pytest.fixture
def chat(stream_name: str) -> str:
    return stream_name  # a fresh chat id per test


def post(client: FlaskClient, chat: str, message: str = MESSAGE) -> TestResponse:
    return client.post(f"/api/chat/{chat}", json={"message": message})


def events(response: TestResponse) -> Iterator[Event]:
    """The events of a streamed response, as they come."""
    return sse_events(response.response)  # type: ignore[arg-type]


def data_ids(body: str) -> list[int]:
    return [int(e.id) for e in parse_sse(body)[0] if e.event == "message" and e.id is not None]


def test_post_streams_the_fake_answer_as_sse(make_app: Callable[..., Flask], chat: str) -> None:
    client = make_app(FakeModel(0)).test_client()
    with post(client, chat) as response:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["X-Answer-Seq"] == "0"
        assert response.headers["X-Worker-Pid"] == str(os.getpid())
        body = response.get_data(as_text=True)
    text, cursor, final = read_answer(parse_sse(body)[0])
    assert text == FULL
    ids = data_ids(body)
    assert ids == sorted(set(ids)) and ids[0] >= 1
    assert final is not None and final.event == "end"
    assert final.id is not None and int(final.id) > int(cursor or 0)
    history = client.get(f"/api/chat/{chat}").get_json()
    assert history["messages"] == [
        {
            "seq": 0,
            "message": MESSAGE,
            "answer": {"state": "completed", "done": True, "text": FULL, "error": None, "cursor": int(final.id)},
        }
    ]
    assert history["next"] == 1


@pytest.mark.parametrize("how", ["Last-Event-ID", "from"])
def test_resume_after_a_cursor_delivers_exactly_the_rest(make_app: Callable[..., Flask], chat: str, how: str) -> None:
    client = make_app(FakeModel(200)).test_client()
    with post(client, chat) as response:
        head, cursor, final = read_answer(events(response), limit=5)
    assert final is None and cursor is not None and head
    if how == "from":
        resumed = client.get(f"/api/chat/{chat}/stream?from={cursor}")
    else:
        resumed = client.get(f"/api/chat/{chat}/stream", headers={"Last-Event-ID": cursor})
    with resumed:
        assert resumed.status_code == 200
        assert resumed.headers["X-Answer-Seq"] == "0"
        rest, _, final = read_answer(events(resumed))
    assert head + rest == FULL
    assert final is not None and final.event == "end"
    # The final event's id is the end of the answer: resuming from it finds nothing more.
    assert client.get(f"/api/chat/{chat}/stream", headers={"Last-Event-ID": final.id}).status_code == 204


def test_resume_without_a_cursor_replays_a_running_answer_from_its_start(
    make_app: Callable[..., Flask], chat: str
) -> None:
    client = make_app(FakeModel(50)).test_client()
    with post(client, chat) as response:
        read_answer(events(response), limit=2)
    with client.get(f"/api/chat/{chat}/stream") as resumed:
        assert resumed.status_code == 200
        text, _, final = read_answer(events(resumed))
    assert text == FULL
    assert final is not None and final.event == "end"
    # Once the answer has ended, there is nothing to resume without a cursor, but it can be read from 0.
    assert client.get(f"/api/chat/{chat}/stream").status_code == 204
    with client.get(f"/api/chat/{chat}/stream?answer=0&from=0") as replay:
        assert read_answer(events(replay))[0] == FULL


def test_nothing_to_resume_is_204_and_bad_requests_are_4xx(make_app: Callable[..., Flask], chat: str) -> None:
    client = make_app(FakeModel(0)).test_client()
    assert client.get(f"/api/chat/{chat}/stream").status_code == 204  # no message yet
    assert client.post(f"/api/chat/{chat}/stop").status_code == 404
    with post(client, chat) as response:
        response.get_data()
    for headers, query in [({"Last-Event-ID": "abc"}, ""), ({}, "?from=-1"), ({}, "?answer=x")]:
        bad = client.get(f"/api/chat/{chat}/stream{query}", headers=headers)
        assert bad.status_code == 400, (headers, query)
        assert "error" in bad.get_json()
    assert client.get(f"/api/chat/{chat}/stream?answer=1").status_code == 404
    assert client.get(f"/api/chat/{chat}?since=x").status_code == 400
    assert client.get("/api/chat/not%20a%20chat").status_code == 404
    assert client.post(f"/api/chat/{chat}", json={"text": "hi"}).status_code == 400
    assert client.post(f"/api/chat/{chat}", json={"message": "  "}).status_code == 400
    assert client.post(f"/api/chat/{chat}", data="hi").status_code == 400
    assert client.post(f"/api/chat/{chat}", json={"message": "x" * 8001}).status_code == 413
    assert client.post(f"/api/chat/{chat}/stop", json={"answer": -1}).status_code == 400
    assert client.get(f"/api/chat/{chat}").get_json()["next"] == 1  # none of that added a message


def test_stop_ends_the_answer_for_every_reader(make_app: Callable[..., Flask], chat: str) -> None:
    client = make_app(FakeModel(20)).test_client()
    with post(client, chat) as response, client.get(f"/api/chat/{chat}/stream") as other:
        creator_events, other_events = events(response), events(other)
        head, _, _ = read_answer(creator_events, limit=3)
        other_head, _, _ = read_answer(other_events, limit=1)
        stopped = client.post(f"/api/chat/{chat}/stop")
        assert stopped.status_code == 200
        assert stopped.get_json() == {"answer": 0, "state": "stopped"}
        rest, _, final = read_answer(creator_events)
        other_rest, _, other_final = read_answer(other_events)
    text = head + rest
    assert final is not None and final.event == "stopped"
    assert other_final is not None and other_final.event == "stopped" and other_final.id == final.id
    assert other_head + other_rest == text
    assert FULL.startswith(text) and len(text) < len(FULL)
    answer = client.get(f"/api/chat/{chat}").get_json()["messages"][0]["answer"]
    assert answer == {"state": "stopped", "done": True, "text": text, "error": None, "cursor": int(final.id or 0)}
    assert client.get(f"/api/chat/{chat}/stream").status_code == 204
    # Stopping again changes nothing.
    assert client.post(f"/api/chat/{chat}/stop", json={"answer": 0}).get_json() == {"answer": 0, "state": "stopped"}


def test_a_chat_answers_one_message_at_a_time(make_app: Callable[..., Flask], chat: str) -> None:
    model = FakeModel(20)
    client = make_app(model).test_client()
    with post(client, chat) as first:
        read_answer(events(first), limit=1)
        busy = post(client, chat, "And another thing")
        assert busy.status_code == 409
        assert busy.get_json()["answer"] == 0
        client.post(f"/api/chat/{chat}/stop")
        first.get_data()
    model.tokens_per_second = 0
    with post(client, chat, "And another thing") as second:
        assert second.status_code == 200
        assert second.headers["X-Answer-Seq"] == "1"
        assert read_answer(events(second))[0] == fake_answer("And another thing")


def test_history_long_polls_for_new_messages(make_app: Callable[..., Flask], chat: str) -> None:
    app = make_app(FakeModel(0), CHAT_POLL_SECONDS=1)
    client = app.test_client()
    # Nothing yet: the poll waits (up to CHAT_POLL_SECONDS) and returns nothing new.
    assert client.get(f"/api/chat/{chat}?since=0").get_json() == {"chat": chat, "messages": [], "next": 0}
    app.config["CHAT_POLL_SECONDS"] = 30
    polled: list[Any] = []
    poller = threading.Thread(target=lambda: polled.append(app.test_client().get(f"/api/chat/{chat}?since=0")))
    poller.start()
    for message in ("first", "second"):
        with post(client, chat, message) as response:
            response.get_data()
    poller.join(30)
    assert not poller.is_alive()
    woken = polled[0].get_json()
    assert woken["messages"][0]["seq"] == 0 and woken["messages"][0]["message"] == "first"
    history = client.get(f"/api/chat/{chat}").get_json()
    assert [(m["seq"], m["message"], m["answer"]["text"]) for m in history["messages"]] == [
        (0, "first", fake_answer("first")),
        (1, "second", fake_answer("second")),
    ]
    assert history["next"] == 2
    since_one = client.get(f"/api/chat/{chat}?since=1").get_json()
    assert [m["seq"] for m in since_one["messages"]] == [1] and since_one["next"] == 2


def test_a_pending_answer_that_never_starts_is_settled(log: Log, chat: str) -> None:
    """A message whose answer was never created (its process died in between) does not block the chat."""
    ctx = ResumableStreamContext(log, abandon_after=5, stop_timeout=5)
    try:
        app = create_app(ctx, FakeModel(0))
        app.config["CHAT_PENDING_TIMEOUT"] = 0.5
        client = app.test_client()
        # The message, as the app writes it, but no answer stream.
        ctx.log.append(f"chats/{chat}", [Record(json.dumps({"message": "lost"}).encode())])
        # The resume waits for the answer to start, then settles it as stopped: nothing to read.
        assert client.get(f"/api/chat/{chat}/stream?from=0").status_code == 204
        answer = client.get(f"/api/chat/{chat}").get_json()["messages"][0]["answer"]
        assert answer == {"state": "stopped", "done": True, "text": "", "error": None, "cursor": 0}
        with post(client, chat) as response:
            assert response.headers["X-Answer-Seq"] == "1"
            assert read_answer(events(response))[0] == FULL
    finally:
        ctx.close(timeout=5)


def test_streams_are_created_where_the_basin_does_not_create_them_on_demand(chat: str) -> None:
    log = MemoryLog(create_stream_on_append=False, create_stream_on_read=False)
    with ResumableStreamContext(log) as ctx:
        app = create_app(ctx, FakeModel(0))
        app.config["CHAT_POLL_SECONDS"] = 1
        client = app.test_client()
        assert client.get(f"/api/chat/{chat}").get_json()["messages"] == []
        assert client.get(f"/api/chat/{chat}?since=0").get_json()["messages"] == []
        with post(client, chat) as response:
            assert read_answer(events(response))[0] == FULL
        assert client.get(f"/api/chat/{chat}").get_json()["messages"][0]["answer"]["text"] == FULL


def test_the_dev_server_command_serves_the_chat_and_says_which_log_it_uses() -> None:
    """The example README's command, on a free port."""
    readme = block("examples/flask_chat/README.md", "Development server (one process)")
    args = command(readme, "python -m examples.flask_chat", port="0")
    app = AppProcess(args, app_env(FAKE_MODEL_TOKENS_PER_SECOND="0"))
    try:
        url = app.await_output(lambda text: re.search(r"Running on (http://\S+)", text)).group(1)
        banner = app.output()
        assert "Flask development server; log: the in-process log (MemoryLog)" in banner
        assert "model: the built-in fake model (no delay)" in banner
        with requests.post(f"{url}/api/chat/dev", json={"message": MESSAGE}, stream=True, timeout=30) as response:
            assert response.headers["X-Worker-Pid"] == str(app.process.pid)
            text, _, final = read_answer(sse_events(response.iter_content(chunk_size=None)))
        assert text == FULL and final is not None and final.event == "end"
    finally:
        assert app.stop() == 0


def test_the_page_and_its_script_are_served(make_app: Callable[..., Flask]) -> None:
    client = make_app(FakeModel(0)).test_client()
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert '<script src="/static/chat.js"' in html and 'id="messages"' in html and 'id="stop"' in html
    for name, needle in [("chat.js", "readEvents"), ("markdown.js", "renderMarkdown")]:
        script = client.get(f"/static/{name}")
        assert script.status_code == 200 and needle in script.get_data(as_text=True)
        script.close()
    page.close()
    info = client.get("/api/info").get_json()
    assert info["pid"] == os.getpid() and "fake model" in info["model"]
    assert info["log"].startswith(("S2 basin", "the in-process log"))


def test_clients_see_a_model_error_s_words_and_nothing_of_other_failures(
    make_app: Callable[..., Flask], chat: str
) -> None:
    class Broken:
        description = "a model that breaks"

        def stream(self, messages: Any) -> Iterator[str]:
            yield "Hel"
            raise KeyError("internal state of the app")

    client = make_app(Broken()).test_client()
    with post(client, chat) as response:
        text, _, final = read_answer(events(response))
    assert text == "Hel" and final is not None and final.event == "error" and final.data == GENERIC_FAILURE
    answer = client.get(f"/api/chat/{chat}").get_json()["messages"][0]["answer"]
    assert answer["error"] == GENERIC_FAILURE
    assert error_message(StreamFailed("x", "ModelError: the model is out of tokens")) == "the model is out of tokens"
    fails = make_app(FakeModel(0)).test_client()
    with post(fails, f"{chat}-2", "/fail now") as response:
        final = read_answer(events(response))[2]
    assert final is not None and final.data == "the fake model failed, as the message asked"


# -- the OpenAI-compatible model, against a fake endpoint ----------------------


class FakeCompletions(ThreadingHTTPServer):
    """A chat-completions endpoint that streams ``pieces`` (or, if ``endless``, pieces until the client leaves)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CompletionsHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"
        self.requests: list[dict[str, Any]] = []
        self.pieces = ["Hel", "lo", ", wor", "ld", "!\n"]
        self.endless = False
        self.status = 200
        self.disconnected = threading.Event()


class _CompletionsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeCompletions

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "authorization": self.headers["Authorization"], "body": body})
        if self.server.status != 200:
            error = json.dumps({"error": {"message": "Incorrect API key provided"}}).encode()
            self.send_response(self.server.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._chunk({"role": "assistant", "content": ""})
            if self.server.endless:
                for i in range(500):  # bounded, in case the client never leaves
                    self._chunk({"content": f"w{i} "})
                    time.sleep(0.02)
            else:
                for piece in self.server.pieces:
                    self._chunk({"content": piece})
                self._chunk({}, finish="stop")
                self.wfile.write(b"data: [DONE]\n\n")
        except OSError:
            self.server.disconnected.set()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> None:
        chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())


@pytest.fixture
def completions() -> Iterator[FakeCompletions]:
    server = FakeCompletions()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_openai_compatible_model_streams_the_endpoints_answer_with_the_conversation(
    make_app: Callable[..., Flask], chat: str, completions: FakeCompletions
) -> None:
    client = make_app(OpenAICompatibleModel(completions.url, "sk-test", "tiny-model")).test_client()
    with post(client, chat, "Say hello") as response:
        text, _, final = read_answer(events(response))
    assert text == "Hello, world!\n"
    assert final is not None and final.event == "end"
    with post(client, chat, "Again") as response:
        assert read_answer(events(response))[0] == "Hello, world!\n"
    first, second = completions.requests
    assert first["path"] == "/v1/chat/completions" and first["authorization"] == "Bearer sk-test"
    assert first["body"] == {
        "model": "tiny-model",
        "stream": True,
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    assert second["body"]["messages"] == [
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": "Hello, world!\n"},
        {"role": "user", "content": "Again"},
    ]


def test_stop_closes_the_connection_to_the_model_endpoint(
    make_app: Callable[..., Flask], chat: str, completions: FakeCompletions
) -> None:
    completions.endless = True
    client = make_app(OpenAICompatibleModel(completions.url, "sk-test")).test_client()
    with post(client, chat) as response:
        answer = events(response)
        head, _, _ = read_answer(answer, limit=3)
        assert client.post(f"/api/chat/{chat}/stop").get_json()["state"] == "stopped"
        rest, _, final = read_answer(answer)
    assert final is not None and final.event == "stopped"
    assert (head + rest).startswith("w0 w1 w2 ")
    # The generator was closed at its next yield, which closed the HTTP response: the endpoint sees the hang-up.
    assert completions.disconnected.wait(10), "the connection to the model endpoint stayed open after the stop"


def test_an_endpoint_error_fails_the_answer(
    make_app: Callable[..., Flask], chat: str, completions: FakeCompletions, caplog: pytest.LogCaptureFixture
) -> None:
    completions.status = 401
    client = make_app(OpenAICompatibleModel(completions.url, "sk-wrong")).test_client()
    with caplog.at_level("WARNING"), post(client, chat) as response:
        text, _, final = read_answer(events(response))
    assert text == ""
    assert final is not None and final.event == "error"
    assert final.data == "the model endpoint answered 401"  # the endpoint's own words stay in the log
    assert "Incorrect API key" in caplog.text
    answer = client.get(f"/api/chat/{chat}").get_json()["messages"][0]["answer"]
    assert answer["state"] == "failed" and answer["error"] == "the model endpoint answered 401"


def test_the_model_comes_from_the_environment() -> None:
    real = model_from_env({"OPENAI_BASE_URL": "https://llm.example/v1/", "OPENAI_API_KEY": "sk-secret"})
    assert isinstance(real, OpenAICompatibleModel)
    assert real.url == "https://llm.example/v1/chat/completions" and real.model == "gpt-4o-mini"
    assert "sk-secret" not in real.description and "sk-secret" not in repr(real)
    named = model_from_env({"OPENAI_BASE_URL": "http://x/v1", "OPENAI_API_KEY": "k", "OPENAI_MODEL": "m"})
    assert isinstance(named, OpenAICompatibleModel) and named.model == "m"
    fake = model_from_env({"FAKE_MODEL_TOKENS_PER_SECOND": "7.5"})
    assert isinstance(fake, FakeModel) and fake.tokens_per_second == 7.5
    assert isinstance(model_from_env({"OPENAI_API_KEY": "only-a-key"}), FakeModel)
    assert model_from_env({}).tokens_per_second == 20  # type: ignore[attr-defined]
    for bad in ("fast", "-1", "nan"):
        with pytest.raises(ValueError, match="FAKE_MODEL_TOKENS_PER_SECOND"):
            model_from_env({"FAKE_MODEL_TOKENS_PER_SECOND": bad})
    assert "".join(FakeModel(0).stream([{"role": "user", "content": "x"}])) == fake_answer("x")
