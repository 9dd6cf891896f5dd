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
  ``id``: ``event: end`` (completed), ``event: error`` (failed), ``event:
  stopped`` or ``event: abandoned``. A browser that reconnects with that id
  gets 204 and stops reconnecting.

Every byte sent is valid UTF-8: text that is not valid Unicode (lone
surrogates) gets U+FFFD in their place, and ``bytes`` chunks are decoded with
U+FFFD for invalid sequences.

What a client sees of a failure: the data of ``event: error`` is
:data:`GENERIC_ERROR` unless the application passes ``error_message``, a
function of a :class:`~resumable_stream.StreamFailed` whose ``message`` is
the recorded failure (``"ValueError: boom"``) and that returns the text to
send. It is called with the same recorded message in the creator's process
and in every resumer's, so every client sees the same text. The full message
stays in ``stream_status(...).error`` and in the library's log.

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
from collections.abc import Callable, Iterator
from typing import Any

from .chunks import describe_failure, valid_text
from .exceptions import StreamError, StreamFailed
from .protocol import StreamState
from .reader import ResumableStream, parse_cursor

__all__ = [
    "ABANDONED_MESSAGE",
    "AI_SDK_HEADERS",
    "GENERIC_ERROR",
    "HEADERS",
    "ErrorMessage",
    "client_error",
    "cursor_from",
    "format_event",
    "sse_frames",
]

logger = logging.getLogger(__name__)

#: Response headers of an event stream. ``X-Accel-Buffering`` turns nginx's buffering off.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: The extra header the Vercel AI SDK expects on a UI message stream.
AI_SDK_HEADERS = {"x-vercel-ai-ui-message-stream": "v1"}
RETRY_MS = 1000
#: What clients are told of a failed stream, unless the application says otherwise (``error_message``).
GENERIC_ERROR = "the stream failed"
#: What clients are told of an abandoned stream.
ABANDONED_MESSAGE = "the stream was abandoned: the process writing it stopped before it finished"
#: Turns a failure into the text clients see; see :func:`client_error`.
ErrorMessage = Callable[[StreamFailed], str]
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
    return _utf8("\n".join(lines) + "\n\n")


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, with U+FFFD for lone surrogates (which UTF-8 cannot carry) and surrogate pairs joined."""
    return valid_text(text).encode("utf-8")


def client_error(stream_id: str, error: str | None, error_message: ErrorMessage | None = None) -> str:
    """The text clients see for stream ``stream_id`` that failed with the recorded message ``error``.

    :data:`GENERIC_ERROR` without ``error_message``; else what it returns for
    ``StreamFailed(stream_id, error)`` (:data:`GENERIC_ERROR` if it raises,
    which is logged). Use it wherever the application shows a failure itself
    (a history endpoint), so that clients see the same text there.
    """
    if error_message is None:
        return GENERIC_ERROR
    try:
        return str(error_message(StreamFailed(stream_id, error or "unknown error")))
    except Exception:
        logger.exception("error_message raised for stream %r; sending the generic message", stream_id)
        return GENERIC_ERROR


def cursor_from(last_event_id: str | None, query_from: str | None) -> str | None:
    """The cursor a client resumes from: ``Last-Event-ID`` if sent, else the ``from`` query parameter.

    Raises :class:`ValueError` for a cursor that is not an event id.
    """
    for value in (last_event_id, query_from):
        if value is not None and value.strip():
            parse_cursor(value)
            return value.strip()
    return None


def sse_frames(
    stream: ResumableStream[Any],
    *,
    keepalive: float = 15.0,
    ai_sdk: bool = False,
    error_message: ErrorMessage | None = None,
) -> Iterator[bytes]:
    """The event-stream body for ``stream``, as bytes to send one by one.

    ``error_message`` chooses what clients see of a failure (see the module's
    documentation); by default they see :data:`GENERIC_ERROR`. Closing the
    generator (the client went away) detaches the reader; the stream itself
    goes on. Closing the reader ends the body.
    """
    if not 0 < keepalive < math.inf:
        raise ValueError(f"keepalive must be a positive number of seconds, not {keepalive!r}")
    if error_message is not None and not callable(error_message):
        raise TypeError(f"error_message must be a function of the failure, not {error_message!r}")
    return _frames(stream, keepalive, ai_sdk, error_message)


def _frames(
    stream: ResumableStream[Any], keepalive: float, ai_sdk: bool, error_message: ErrorMessage | None
) -> Iterator[bytes]:
    try:
        yield f"retry: {RETRY_MS}\n\n".encode()
        while True:
            try:
                event = stream.next_event(keepalive)
            except Exception as exc:
                if stream.status is None:  # the log failed, not the stream: let the client reconnect
                    logger.warning("reading stream %r failed: %s; ending the response", stream.stream_id, exc)
                    return
                if not isinstance(exc, StreamError):  # the creator: the source's own exception, with its traceback
                    logger.warning("stream %r failed: %s", stream.stream_id, describe_failure(exc), exc_info=exc)
                yield _end(stream, ai_sdk, error_message)
                return
            if event is not None:
                chunk = event[1]
                text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
                yield format_event(text, id=event[0])
            elif stream.status is not None:
                yield _end(stream, ai_sdk, error_message)
                return
            elif stream.closed:
                return
            else:
                yield b": keep-alive\n\n"
    finally:
        stream.close()


def _end(stream: ResumableStream[Any], ai_sdk: bool, error_message: ErrorMessage | None) -> bytes:
    """The final event(s): how the stream ended, as every reader of it is told."""
    status = stream.status
    assert status is not None
    cursor = str(status.tail - 1)
    message = ""
    if status.state is StreamState.FAILED:
        message = client_error(stream.stream_id, status.error, error_message)
    elif status.state is StreamState.ABANDONED:
        message = ABANDONED_MESSAGE
    if not ai_sdk:
        return format_event(message, id=cursor, event=_END_EVENTS[status.state])
    parts = []
    if status.state in (StreamState.FAILED, StreamState.ABANDONED):  # an error part even for an empty message:
        # without one, the AI SDK's client takes a failure for a finished answer
        parts.append(format_event(json.dumps({"type": "error", "errorText": message}, ensure_ascii=False)))
    elif status.state is StreamState.STOPPED:
        parts.append(format_event(json.dumps({"type": "abort"})))
    parts.append(format_event("[DONE]", id=cursor))
    return b"".join(parts)
