"""Flask helpers: serve a resumable stream as Server-Sent Events.

A resume route is one line::

    @app.get("/api/chat/<chat_id>/stream")
    def resume(chat_id):
        return sse_response(ctx.resume_existing_stream(chat_id, after=resume_cursor()))

The source of a stream runs on a background thread, after the request is
over, so it has no request context. Wrap it with :func:`with_app_context` if
it needs the application context (``current_app``, extensions, the database).
Pass request data (the user's message, their id) into the source as
arguments instead of reading ``request`` inside it.

Needs the ``flask`` extra: ``pip install 'resumable-stream-s2[flask]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from flask import Flask, Request, Response, abort, current_app
from flask import request as current_request

from .ai_sdk import ChatRequest, parse_chat_request
from .reader import ResumableStream
from .sse import AI_SDK_HEADERS, HEADERS, ErrorMessage, cursor_from, sse_frames

__all__ = ["chat_request", "resume_cursor", "sse_response", "with_app_context"]

T = TypeVar("T")


def sse_response(
    stream: ResumableStream[Any] | None,
    *,
    keepalive: float = 15.0,
    ai_sdk: bool = False,
    error_message: ErrorMessage | None = None,
) -> Response:
    """A streaming ``text/event-stream`` response for ``stream``, or an empty 204 when it is ``None``.

    204 tells an ``EventSource`` to stop reconnecting, and the Vercel AI SDK
    that there is no active stream. ``ai_sdk=True`` adds the
    ``x-vercel-ai-ui-message-stream: v1`` header and ends the stream in the
    AI SDK's terms. Clients are told a failure with a generic message unless
    ``error_message`` says otherwise (see :mod:`resumable_stream.sse`).
    """
    if stream is None:
        return Response(status=204)
    headers = {**HEADERS, **(AI_SDK_HEADERS if ai_sdk else {})}
    frames = sse_frames(stream, keepalive=keepalive, ai_sdk=ai_sdk, error_message=error_message)
    return Response(frames, mimetype="text/event-stream", headers=headers)


def resume_cursor(request: Request | None = None) -> str | None:
    """The cursor from the ``Last-Event-ID`` header or the ``from`` query parameter, or ``None``.

    An invalid cursor aborts the request with 400. Uses the current request by default.
    """
    request = request if request is not None else current_request
    try:
        return cursor_from(request.headers.get("Last-Event-ID"), request.args.get("from"))
    except ValueError as exc:
        abort(400, description=str(exc))


def chat_request(request: Request | None = None) -> ChatRequest:
    """The AI SDK ``DefaultChatTransport``'s POST body ``{id, messages, trigger}``; 400 when it is not one.

    Uses the current request by default. See :mod:`resumable_stream.ai_sdk`.
    """
    request = request if request is not None else current_request
    try:
        return parse_chat_request(request.get_json(silent=True))
    except ValueError as exc:
        abort(400, description=str(exc))


def with_app_context(
    make_stream: Iterable[T] | Callable[[], Iterable[T]], app: Flask | None = None
) -> Callable[[], Iterator[T]]:
    """Run a stream's source inside an application context of ``app`` (default: the current app).

    Call it while handling the request, and pass the result to
    ``create_new_resumable_stream``::

        ctx.create_new_resumable_stream(stream_id, with_app_context(generate))
    """
    flask_app: Flask = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]

    def run() -> Iterator[T]:
        with flask_app.app_context():
            yield from make_stream() if callable(make_stream) else make_stream

    return run
