"""The Django helpers with Django's test client, on both logs; the README's views in a generated project.

The README's ``mysite/streams.py`` runs as written in a project made by
``django-admin startproject``, under ``runserver`` and under gunicorn's
gthread workers (two, on the local S2 server), where an answer one worker
wrote is resumed by the other.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import pytest
import requests
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client
from django.urls import path

from resumable_stream import ResumableStreamContext, StreamState
from resumable_stream.django import resume_cursor, sse_response
from resumable_stream.log import Log
from resumable_stream.testing import S2Server

from .chat_helpers import ROOT, Command, app_env, free_port, sse_events
from .readme_blocks import block, blocks
from .support import BASIN, parse_sse

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
        LOGGING_CONFIG=None,
    )
    django.setup()

ANSWER = [f"token{i} " for i in range(25)]
CONTEXT: dict[str, ResumableStreamContext] = {}


def answer() -> Iterator[str]:
    for word in ANSWER:
        time.sleep(0.002)
        yield word


def create(request: HttpRequest, stream_id: str) -> HttpResponse | StreamingHttpResponse:
    return sse_response(CONTEXT["ctx"].create_new_resumable_stream(stream_id, answer))


def resume(request: HttpRequest, stream_id: str) -> HttpResponse | StreamingHttpResponse:
    ctx = CONTEXT["ctx"]
    return sse_response(ctx.resume_existing_stream(stream_id, after=resume_cursor(request)), ai_sdk="ai" in request.GET)


urlpatterns = [path("create/<path:stream_id>", create), path("resume/<path:stream_id>", resume)]


@pytest.fixture
def client(log: Log) -> Iterator[Client]:
    with ResumableStreamContext(log) as ctx:
        CONTEXT["ctx"] = ctx
        yield Client()
        CONTEXT.clear()


def body(response: StreamingHttpResponse) -> str:
    return b"".join(response.streaming_content).decode()  # type: ignore[arg-type]


def test_create_and_resume(client: Client, stream_name: str) -> None:
    response = client.post(f"/create/{stream_name}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    events, _ = parse_sse(body(response))
    assert "".join(e.data for e in events[:-1]) == "".join(ANSWER)
    assert events[-1].event == "end"
    resumed = client.get(f"/resume/{stream_name}?from=0&ai=1")
    assert resumed["x-vercel-ai-ui-message-stream"] == "v1"
    assert parse_sse(body(resumed))[0][-1].data == "[DONE]"


def test_partial_read_then_close_then_resume(client: Client, stream_name: str) -> None:
    response = client.post(f"/create/{stream_name}")
    frames = iter(response.streaming_content)
    received = b""
    while received.count(b"\n\n") < 4:
        received += next(frames)  # type: ignore[operator]
    response.close()  # a disconnect
    seen = parse_sse(received.decode())[0]
    last = seen[-1].id
    assert last is not None
    ctx = CONTEXT["ctx"]
    deadline = time.monotonic() + 20
    while ctx.stream_status(stream_name).state is StreamState.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ctx.stream_status(stream_name).state is StreamState.COMPLETED
    by_header = body(client.get(f"/resume/{stream_name}", HTTP_LAST_EVENT_ID=last))
    by_query = body(client.get(f"/resume/{stream_name}?from={last}"))
    assert by_header == by_query
    rest = [e.data for e in parse_sse(by_header)[0] if e.event == "message"]
    assert "".join(e.data for e in seen) + "".join(rest) == "".join(ANSWER)


def test_204_and_400(client: Client, stream_name: str) -> None:
    assert client.get(f"/resume/{stream_name}").status_code == 204
    events, _ = parse_sse(body(client.post(f"/create/{stream_name}")))
    assert client.get(f"/resume/{stream_name}").status_code == 204
    assert client.get(f"/resume/{stream_name}", HTTP_LAST_EVENT_ID=events[-1].id).status_code == 204
    assert client.get(f"/resume/{stream_name}", HTTP_LAST_EVENT_ID="nope").status_code == 400
    assert client.get(f"/resume/{stream_name}?from=-3").status_code == 400


# -- the README's snippet, in a project made by `django-admin startproject` ------------------

README_VIEWS = ("README.md", "Django", 0)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``django-admin startproject mysite``, with the README's ``mysite/streams.py`` and its two lines in urls.py."""
    root = tmp_path_factory.mktemp("django")
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(root)], check=True, timeout=60)
    (root / "mysite" / "streams.py").write_text(block(*README_VIEWS))
    fragment = [line for line in blocks("README.md")[README_VIEWS_INDEX + 1].code.splitlines() if line[:1] != "#"]
    urls = root / "mysite" / "urls.py"
    generated = urls.read_text()
    assert "from django.urls import path\n" in generated
    edited = re.sub(r"urlpatterns = \[.*?\]\n", fragment[1] + "\n", generated, flags=re.S)
    urls.write_text(edited.replace("from django.urls import path\n", fragment[0] + "\n"))
    return root


README_VIEWS_INDEX = next(i for i, b in enumerate(blocks("README.md")) if b.key == README_VIEWS)


def post_answer(url: str, message: str) -> tuple[requests.Response, list[Any]]:
    with requests.post(f"{url}/api/chat/7", json={"message": message}, stream=True, timeout=30) as response:
        assert response.status_code == 200, response.text
        return response, list(sse_events(response.iter_content(chunk_size=None)))


def text_of(events: list[Any]) -> str:
    return "".join(e.data for e in events if e.event == "message")


def test_the_readme_views_under_runserver(project: Path) -> None:
    port = free_port()
    server = Command([sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], app_env(), project)
    try:
        server.await_output(lambda text: re.search(r"Quit the server with", text))
        url = f"http://127.0.0.1:{port}"
        first, first_events = post_answer(url, "hello")
        second, second_events = post_answer(url, "again")  # a second message of the same chat gets its own answer
        assert text_of(first_events) == "You said: hello. That is all I know. " and first_events[-1].event == "end"
        assert text_of(second_events).startswith("You said: again.") and second_events[-1].event == "end"
        answer_id = first.headers["X-Answer-Id"]
        assert answer_id.startswith("7/") and answer_id != second.headers["X-Answer-Id"]
        with requests.get(f"{url}/api/answers/{answer_id}", headers={"Last-Event-ID": "2"}, timeout=30) as rest:
            assert text_of(parse_sse(rest.text)[0]) == "hello. That is all I know. "
        assert requests.get(f"{url}/api/chat/7", timeout=10).status_code == 405
    finally:
        server.stop()


def test_the_readme_views_under_gunicorn_resume_on_the_other_worker(project: Path, s2_server: S2Server) -> None:
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    command = re.search(r"`(gunicorn -k gthread [^`]*mysite\.wsgi)`", readme)
    assert command is not None
    port = free_port()
    log_format = "%(p)s %(r)s"  # each request's worker pid, in the access log
    server = Command(
        [*shlex.split(command.group(1)), "--bind", f"127.0.0.1:{port}", "--access-logfile", "-",
         "--access-logformat", log_format],
        app_env(**s2_server.env(BASIN)), project,
    )  # fmt: skip
    try:
        server.await_output(lambda text: re.search("Booting worker", text) if text.count("Booting") >= 2 else None)
        url = f"http://127.0.0.1:{port}"
        first, events = post_answer(url, "hello")
        answer_id = first.headers["X-Answer-Id"]
        creator = server.await_output(lambda text: re.search(r"^<(\d+)> POST /api/chat/7 ", text, re.M)).group(1)
        for attempt in range(40):  # fresh connections, until the other worker serves one
            probe = f"/api/answers/{answer_id}?from=2&attempt={attempt}"
            with requests.get(url + probe, timeout=30) as rest:
                assert text_of(parse_sse(rest.text)[0]) == "hello. That is all I know. "
            pid = server.await_output(lambda text, p=probe: re.search(rf"^<(\d+)> GET {re.escape(p)} ", text, re.M))
            if pid.group(1) != creator:
                break
        else:
            raise AssertionError(f"40 fresh connections all reached worker {creator}")
        assert text_of(events) == "You said: hello. That is all I know. "
    finally:
        assert server.stop() == 0
