"""Constants and helpers shared by the test modules."""

from __future__ import annotations

import contextlib
import http.server
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from resumable_stream import RetryPolicy

#: The basin the session's local S2 server pre-creates.
BASIN = "test-basin"
#: Fast retries keep fault tests short; the budget still covers a few attempts.
FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=5.0, initial_backoff=0.01, max_backoff=0.05)


class Event(NamedTuple):
    """One parsed Server-Sent Event."""

    id: str | None
    event: str
    data: str


def parse_sse(body: str) -> tuple[list[Event], list[str]]:
    """Parse an event-stream body as a browser would: the events, and the comments seen.

    Follows the WHATWG rules: one optional space after the colon, ``data``
    lines joined with newlines, events dispatched on a blank line, ``id``
    kept only on the event that carries it here (for assertions).
    """
    events: list[Event] = []
    comments: list[str] = []
    event_id: str | None = None
    name = ""
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", body):
        if line == "":
            if data:
                events.append(Event(event_id, name or "message", "\n".join(data)))
            event_id, name, data = None, "", []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "event":
            name = value
    return events, comments


class Gate:
    """A stream source that yields ``before``, waits (at most 10 s) until :meth:`open`, then yields ``after``."""

    def __init__(self, before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
        self.before, self.after = before, after
        self._opened = threading.Event()

    def __call__(self) -> Iterator[str]:
        yield from self.before
        self._opened.wait(10)
        yield from self.after

    def open(self) -> None:
        self._opened.set()


def run_to_end(stream: Any, timeout: float = 20) -> tuple[list[Any], BaseException | None]:
    """Read ``stream`` on a thread; its chunks and the exception it ended with. Fails if it does not end."""
    chunks: list[Any] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            chunks.extend(stream)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), "the reader never ended"
    return chunks, errors[0] if errors else None


@contextlib.contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A plain HTTP/1.1 server that answers every request with ``handler``: its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Answering(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and the class's ``body`` and ``content_type``; ``calls`` counts them."""

    protocol_version = "HTTP/1.1"
    body = b""
    content_type = "text/event-stream"
    calls = 0

    def do_GET(self) -> None:
        type(self).calls += 1
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def answering(body: bytes, content_type: str = "text/event-stream") -> type[Answering]:
    """A handler class of its own that answers every GET with ``body``."""
    return type("Answer", (Answering,), {"body": body, "content_type": content_type})


def run_racing(threads: Sequence[threading.Thread], timeout: float = 60) -> None:
    """Start ``threads`` and wait for each (up to ``timeout`` seconds) while CPython switches threads as
    often as it can, so that races between any two steps come up."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout)
    finally:
        sys.setswitchinterval(interval)
