"""Server-Sent Events for resumable streams, independent of any web framework.

:func:`sse_frames` turns a :class:`~resumable_stream.ResumableStream` into
the bytes of an ``text/event-stream`` body:

* ``retry: 1000`` first, so browsers reconnect quickly after a drop;
* one event per chunk, ``id:`` = the chunk's resume cursor, the chunk in
  ``data:`` lines (a chunk with line breaks becomes several ``data:`` lines,
  so no chunk can inject a field or end an event early; ``bytes`` chunks are
  decoded as UTF-8);
* a comment (``: keep-alive``) after every ``keepalive`` seconds without
  one, so proxies keep the connection and a departed client is noticed;
* one final event, with the cursor of the stream's terminal record as its
  ``id``: ``event: end`` (completed), ``event: error`` with the failure
  message, ``event: stopped`` or ``event: abandoned``. A browser that
  reconnects with that id gets 204 and stops reconnecting.

With ``ai_sdk=True`` the chunks are taken to be parts of the Vercel AI SDK's
UI message stream (JSON text), and the end is told in its terms: failures as
an ``{"type": "error"}`` part, stops as an ``{"type": "abort"}`` part, then
``data: [DONE]``.

If reading the log fails mid-way (not the stream: the infrastructure), the
body just ends without a final event; the client reconnects with its last
cursor and continues where it was.

The Flask and Django modules wrap this in a response; :func:`cursor_from`
picks the cursor of a reconnecting client.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from typing import Any

from .protocol import StreamState
from .reader import ResumableStream, parse_cursor

__all__ = ["AI_SDK_HEADERS", "HEADERS", "cursor_from", "format_event", "sse_frames"]

logger = logging.getLogger(__name__)

#: Response headers of an event stream. ``X-Accel-Buffering`` turns nginx's buffering off.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The extra header the Vercel AI SDK expects on a UI message stream.
AI_SDK_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
RETRY_MS = 1000
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_END_EVENTS = {
    StreamState.COMPLETED: "end",
    StreamState.FAILED: "error",
    StreamState.STOPPED: "stopped",
    StreamState.ABANDONED: "abandoned",
}


def format_event(data: str, *, id: str | None = None, event: str | None = None) -> bytes:
    """One SSE event. Line breaks in ``data`` become separate ``data:`` lines."""
    lines = []
    if id is not None:
        if _LINE_BREAK.search(id) or "\0" in id:
            raise ValueError(f"an event id cannot contain line breaks or NUL: {id!r}")
        lines.append(f"id: {id}")
    if event is not None:
        if _LINE_BREAK.search(event):
            raise ValueError(f"an event name cannot contain line breaks: {event!r}")
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8", "surrogatepass")


def cursor_from(last_event_id: str | None, query_from: str | None) -> str | None:
    """The cursor a client resumes from: ``Last-Event-ID`` if sent, else the ``from`` query parameter.

    Raises :class:`ValueError` for a cursor that is not an event id.
    """
    for value in (last_event_id, query_from):
        if value is not None and value.strip():
            parse_cursor(value)
            return value.strip()
    return None


def sse_frames(stream: ResumableStream[Any], *, keepalive: float = 15.0, ai_sdk: bool = False) -> Iterator[bytes]:
    """The event-stream body for ``stream``, as bytes to send one by one.

    Closing the generator (the client went away) detaches the reader; the
    stream itself goes on. Closing the reader ends the body.
    """
    if not 0 < keepalive < math.inf:
        raise ValueError(f"keepalive must be a positive number of seconds, not {keepalive!r}")
    return _frames(stream, keepalive, ai_sdk)


def _frames(stream: ResumableStream[Any], keepalive: float, ai_sdk: bool) -> Iterator[bytes]:
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                event = stream.next_event(keepalive)
            except Exception as exc:
                if stream.status is None:  # the log failed, not the stream: let the client reconnect
                    logger.warning("reading stream %r failed: %s; ending the response", stream.stream_id, exc)
                    return
                yield _end(stream, stream.status.error or str(exc), ai_sdk)
                return
            if event is not None:
                chunk = event[1]
                text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                yield format_event(text, id=event[0])
            elif stream.status is not None:
                yield _end(stream, None, ai_sdk)
                return
            elif stream.closed:
                return
            else:
                yield b": keep-alive\n\n"
    finally:
        stream.close()


def _end(stream: ResumableStream[Any], message: str | None, ai_sdk: bool) -> bytes:
    status = stream.status
    assert status is not None
    cursor = str(status.tail - 1)
    if not ai_sdk:
        return format_event(message or "", id=cursor, event=_END_EVENTS[status.state])
    parts = []
    if status.state is StreamState.FAILED or status.state is StreamState.ABANDONED:
        parts.append(format_event(json.dumps({"type": "error", "errorText": message or "stream failed"})))
    elif status.state is StreamState.STOPPED:
        parts.append(format_event(json.dumps({"type": "abort"})))
    parts.append(format_event("[DONE]", id=cursor))
    return b"".join(parts)
