"""Django helpers: serve a resumable stream as Server-Sent Events (WSGI).

A resume view is one line::

    def resume(request, chat_id):
        return sse_response(ctx.resume_existing_stream(chat_id, after=resume_cursor(request)))

Keep event-stream views out of middleware that buffers or compresses
responses (``GZipMiddleware``), and serve them with a threaded WSGI server
(``runserver``, gunicorn ``gthread``): each open stream holds a thread. Under
ASGI, Django would consume the synchronous body before sending it.

Database connections: the source of a stream runs on a background thread,
after the request is over, and Django's request signals never close the
connections that thread opens. A source that uses the ORM should close them
when it ends::

    from django.db import connections

    def generate(prompt):
        try:
            yield from answer(prompt)          # may query the database
        finally:
            connections.close_all()            # this thread's connections only

Pass request data into the source as arguments; do not read ``request``
inside it.

Needs the ``django`` extra: ``pip install 'resumable-stream-s2[django]'``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from .reader import ResumableStream
from .sse import AI_SDK_HEADERS, HEADERS, ErrorMessage, cursor_from, sse_frames

__all__ = ["resume_cursor", "sse_response"]


def sse_response(
    stream: ResumableStream[Any] | None,
    *,
    keepalive: float = 15.0,
    ai_sdk: bool = False,
    error_message: ErrorMessage | None = None,
) -> HttpResponse | StreamingHttpResponse:
    """A ``StreamingHttpResponse`` of ``text/event-stream`` for ``stream``, or an empty 204 when it is ``None``.

    204 tells an ``EventSource`` to stop reconnecting, and the Vercel AI SDK
    that there is no active stream. ``ai_sdk=True`` adds the
    ``x-vercel-ai-ui-message-stream: v1`` header and ends the stream in the
    AI SDK's terms. Clients are told a failure with a generic message unless
    ``error_message`` says otherwise (see :mod:`resumable_stream.sse`).
    """
    if stream is None:
        return HttpResponse(status=204)
    frames = sse_frames(stream, keepalive=keepalive, ai_sdk=ai_sdk, error_message=error_message)
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    for name, value in {**HEADERS, **(AI_SDK_HEADERS if ai_sdk else {})}.items():
        response[name] = value
    return response


def resume_cursor(request: HttpRequest) -> str | None:
    """The cursor from the ``Last-Event-ID`` header or the ``from`` query parameter, or ``None``.

    An invalid cursor raises :class:`django.core.exceptions.BadRequest`, which Django answers with 400.
    """
    try:
        return cursor_from(request.headers.get("Last-Event-ID"), request.GET.get("from"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
