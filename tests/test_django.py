"""The Django helpers with Django's test client, on both logs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import django
import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import Client
from django.urls import path

from resumable_stream import ResumableStreamContext, StreamState
from resumable_stream.django import resume_cursor, sse_response
from resumable_stream.log import Log

from .support import parse_sse

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
