"""The Flask helpers, with Flask's test client and over real sockets, on both logs."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator

import flask
import pytest
import requests
from werkzeug.serving import make_server

from resumable_stream import ResumableStreamContext, StreamState
from resumable_stream.flask import resume_cursor, sse_response, with_app_context
from resumable_stream.log import Log

from .support import parse_sse

ANSWER = [f"word{i} " for i in range(30)]


def make_app(ctx: ResumableStreamContext, delay: float = 0.0) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config["PREFIX"] = "from the app context: "
    app.config["closed"] = threading.Event()

    def answer() -> Iterator[str]:
        yield flask.current_app.config["PREFIX"]
        for word in ANSWER:
            if delay:
                time.sleep(delay)
            yield word

    @app.post("/streams/<path:stream_id>")
    def create(stream_id: str) -> flask.Response:
        response = sse_response(ctx.create_new_resumable_stream(stream_id, with_app_context(answer)), keepalive=0.1)
        response.call_on_close(app.config["closed"].set)
        return response

    @app.get("/streams/<path:stream_id>")
    def resume(stream_id: str) -> flask.Response:
        ai_sdk = flask.request.args.get("ai") == "1"
        return sse_response(ctx.resume_existing_stream(stream_id, after=resume_cursor()), ai_sdk=ai_sdk)

    return app


@pytest.fixture
def ctx(log: Log) -> Iterator[ResumableStreamContext]:
    with ResumableStreamContext(log) as context:
        yield context


FULL = "from the app context: " + "".join(ANSWER)


def data(body: str) -> str:
    return "".join(e.data for e in parse_sse(body)[0] if e.event == "message")


def test_create_streams_sse_with_the_right_headers(ctx: ResumableStreamContext, stream_name: str) -> None:
    client = make_app(ctx).test_client()
    response = client.post(f"/streams/{stream_name}")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert "x-vercel-ai-ui-message-stream" not in response.headers
    events, _ = parse_sse(response.get_data(as_text=True))
    assert data(response.get_data(as_text=True)) == FULL
    assert events[-1].event == "end"
    resumed = client.get(f"/streams/{stream_name}?from=0&ai=1")
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert parse_sse(resumed.get_data(as_text=True))[0][-1].data == "[DONE]"


def test_partial_read_then_disconnect_and_resume(ctx: ResumableStreamContext, stream_name: str) -> None:
    client = make_app(ctx, delay=0.005).test_client()
    response = client.post(f"/streams/{stream_name}", buffered=False)
    received = b""
    frames = iter(response.response)
    while received.count(b"\n\n") < 6:  # the retry hint and five events
        received += next(frames)
    response.close()  # the browser went away
    seen = parse_sse(received.decode())[0]
    last = seen[-1].id
    assert last is not None
    deadline = time.monotonic() + 20
    while ctx.stream_status(stream_name).state is StreamState.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ctx.stream_status(stream_name).state is StreamState.COMPLETED  # generation went on
    by_header = client.get(f"/streams/{stream_name}", headers={"Last-Event-ID": last}).get_data(as_text=True)
    by_query = client.get(f"/streams/{stream_name}?from={last}").get_data(as_text=True)
    assert by_header == by_query
    assert "".join(e.data for e in seen) + data(by_header) == FULL


def test_204_when_there_is_nothing_to_resume(ctx: ResumableStreamContext, stream_name: str) -> None:
    client = make_app(ctx).test_client()
    assert client.get(f"/streams/{stream_name}").status_code == 204  # unknown
    body = client.post(f"/streams/{stream_name}").get_data(as_text=True)
    end = parse_sse(body)[0][-1]
    assert client.get(f"/streams/{stream_name}").status_code == 204  # finished, no cursor
    response = client.get(f"/streams/{stream_name}", headers={"Last-Event-ID": end.id or ""})
    assert response.status_code == 204 and response.data == b""  # reconnect after the end


@pytest.mark.parametrize("cursor", ["abc", "-1", "1.5"])
def test_400_for_an_invalid_cursor(ctx: ResumableStreamContext, stream_name: str, cursor: str) -> None:
    client = make_app(ctx).test_client()
    client.post(f"/streams/{stream_name}").close()
    response = client.get(f"/streams/{stream_name}", headers={"Last-Event-ID": cursor})
    assert response.status_code == 400
    assert "invalid resume cursor" in response.get_data(as_text=True)
    assert client.get(f"/streams/{stream_name}?from={cursor}").status_code == 400


def test_with_app_context_needs_no_request(ctx: ResumableStreamContext, stream_name: str) -> None:
    app = make_app(ctx)
    with app.app_context():
        source = with_app_context(lambda: iter([flask.current_app.config["PREFIX"]]))
    live = ctx.create_new_resumable_stream(stream_name, source)
    assert live is not None
    assert list(live) == ["from the app context: "]


@pytest.fixture
def served(log: Log) -> Iterator[tuple[str, ResumableStreamContext, flask.Flask]]:
    with ResumableStreamContext(log) as ctx:
        app = make_app(ctx, delay=0.02)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"127.0.0.1:{server.port}", ctx, app
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


Served = tuple[str, ResumableStreamContext, flask.Flask]


def test_a_real_disconnect_mid_stream(served: Served, stream_name: str) -> None:
    address, ctx, app = served
    connection = http.client.HTTPConnection(address, timeout=10)
    connection.request("POST", f"/streams/{stream_name}")
    sock = connection.sock
    response = connection.getresponse()
    lines = []
    while sum(line.startswith(b"data: ") for line in lines) < 4:
        lines.append(response.readline())
    sock.shutdown(socket.SHUT_RDWR)  # the browser tab is closed mid-answer
    response.close()
    connection.close()
    # The server notices at its next write and closes the response; generation goes on.
    assert app.config["closed"].wait(10), "the server never closed the response"
    deadline = time.monotonic() + 20
    while ctx.stream_status(stream_name).state is StreamState.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ctx.stream_status(stream_name).state is StreamState.COMPLETED
    seen = parse_sse(b"".join(lines).decode())[0]
    last = seen[-1].id
    with requests.get(f"http://{address}/streams/{stream_name}", headers={"Last-Event-ID": last}, timeout=30) as rest:
        assert rest.status_code == 200
        assert "".join(e.data for e in seen) + data(rest.text) == FULL
