"""The chat's Flask application: :func:`create_app`.

Routes (the answer routes follow the AI SDK's conventions):

=====================================  ==================================================
``GET  /``                             the page (``?chat=<id>`` names the chat)
``POST /api/chat/<id>``                ``{"message": "..."}``: start an answer, stream it as
                                       SSE (header ``X-Answer-Seq``: the message's number);
                                       409 while the previous answer runs
``GET  /api/chat/<id>/stream``         resume the latest answer (or ``?answer=<n>``) as SSE,
                                       after ``Last-Event-ID`` or ``?from=<cursor>``, or from
                                       its start without a cursor; 204 when there is nothing
                                       to resume
``POST /api/chat/<id>/stop``           stop the latest answer (or ``{"answer": n}``), for
                                       every reader; returns how it ended
``GET  /api/chat/<id>``                the history: each message and its answer; with
                                       ``?since=<n>``, the messages from ``n`` on,
                                       long-polling until there is one
=====================================  ==================================================

``GET /api/info`` says which log, model and server the app runs on. Every
response carries ``X-Worker-Pid``, the process that served it, and
``X-Server-Software`` (gunicorn or Werkzeug). All state is on the log (see
:mod:`examples.flask_chat.chat`), so with S2 any worker serves any request.

Clients see the message of a failed answer only when the model raised a
:class:`~examples.flask_chat.models.ModelError`, whose messages are written
for users; any other failure shows as a generic line, and its full message
stays in the log and in ``stream_status``.

Run it with ``python -m examples.flask_chat`` (see the README), or under
gunicorn with ``gunicorn 'examples.flask_chat.app:create_app()'``.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import HTTPException

from resumable_stream import ResumableStreamContext, S2Client, S2Error, StreamFailed
from resumable_stream.flask import resume_cursor, sse_response

from .chat import MAX_MESSAGE_CHARS, Chat, ChatBusy, Turn
from .models import Model, ModelError, model_from_env

#: What the page shows of a failure that is not a ModelError.
GENERIC_FAILURE = "the model failed; try again"


def error_message(failure: StreamFailed) -> str:
    """What clients see of a failed answer: a :class:`ModelError`'s own words, else :data:`GENERIC_FAILURE`."""
    prefix = f"{ModelError.__name__}: "
    return failure.message[len(prefix) :] if failure.message.startswith(prefix) else GENERIC_FAILURE

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(ctx: ResumableStreamContext | None = None, model: Model | None = None) -> Flask:
    """The chat application, on ``ctx`` (default: S2 if configured, else this process's memory).

    ``model`` defaults to :func:`~examples.flask_chat.models.model_from_env`.
    Settings in ``app.config``: ``CHAT_POLL_SECONDS`` (longest long-poll of
    the history, default 20), ``CHAT_PENDING_TIMEOUT`` (seconds before an
    answer that never started is settled, default 5) and ``SSE_KEEPALIVE``
    (seconds between keep-alive comments, default 15).
    """
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.config.from_mapping(CHAT_POLL_SECONDS=20, CHAT_PENDING_TIMEOUT=5.0, SSE_KEEPALIVE=15.0)
    streams = ctx if ctx is not None else ResumableStreamContext()
    answers = model if model is not None else model_from_env()

    def open_chat(chat_id: str) -> Chat:
        try:
            return Chat(
                streams, chat_id, pending_timeout=app.config["CHAT_PENDING_TIMEOUT"], error_message=error_message
            )
        except ValueError as exc:
            abort(404, description=str(exc))

    def find_turn(chat: Chat, seq: int | None) -> Turn:
        seq = chat.latest() if seq is None else seq
        turn = None if seq is None else chat.turn(seq)
        if turn is None:
            abort(404, description="no such message in this chat")
        return turn

    @app.after_request
    def tag_worker(response: Response) -> Response:
        response.headers["X-Worker-Pid"] = str(os.getpid())
        response.headers["X-Server-Software"] = request.environ.get("SERVER_SOFTWARE", "")
        return response

    @app.errorhandler(HTTPException)
    def json_error(exc: HTTPException) -> Any:
        if not request.path.startswith("/api/"):
            return exc
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(S2Error)
    def log_unavailable(exc: S2Error) -> Any:
        logger.warning("%s %s: the log failed: %s", request.method, request.path, exc)
        return jsonify(error=f"the log is unavailable: {exc}"), 503

    @app.get("/")
    def page() -> Response:
        response = app.send_static_file("index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/api/info")
    def info() -> Any:
        log = streams.log
        where = f"S2 basin {log.basin}" if isinstance(log, S2Client) else f"the in-process log ({type(log).__name__})"
        return jsonify(log=where, model=answers.description, pid=os.getpid())

    @app.get("/api/chat/<chat_id>")
    def history(chat_id: str) -> Any:
        chat = open_chat(chat_id)
        since = _int_arg("since")
        wait = 0 if since is None else int(app.config["CHAT_POLL_SECONDS"])
        turns = chat.turns(since or 0, wait=wait)
        messages = [{"seq": t.seq, "message": t.message, "answer": chat.answer(t)} for t in turns]
        next_seq = turns[-1].seq + 1 if turns else (since or 0)
        return jsonify(chat=chat_id, messages=messages, next=next_seq)

    @app.post("/api/chat/<chat_id>")
    def send(chat_id: str) -> Any:
        chat = open_chat(chat_id)
        body = request.get_json(silent=True)
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, str) or not message.strip():
            abort(400, description='send JSON {"message": "..."} with a non-empty message')
        if len(message) > MAX_MESSAGE_CHARS:
            abort(413, description=f"a message may have at most {MAX_MESSAGE_CHARS} characters")
        try:
            seq, conversation = chat.post(message)
        except ChatBusy as exc:
            return jsonify(error="the previous answer is still being written; stop it or wait", answer=exc.seq), 409
        answer_id = chat.answer_id(seq)
        # The model runs on the stream's own thread, with the conversation passed in: no request context there.
        stream = streams.create_new_resumable_stream(answer_id, functools.partial(answers.stream, conversation))
        if stream is None:  # stopped before it could start: serve what was recorded
            stream = streams.resume_existing_stream(answer_id, after=0)
        response = sse_response(stream, keepalive=app.config["SSE_KEEPALIVE"], error_message=error_message)
        response.headers["X-Answer-Seq"] = str(seq)
        return response

    @app.get("/api/chat/<chat_id>/stream")
    def resume(chat_id: str) -> Response:
        chat = open_chat(chat_id)
        cursor = resume_cursor()
        seq = _int_arg("answer")
        if seq is None and chat.latest() is None:
            return Response(status=204)
        turn = find_turn(chat, seq)
        chat.await_start(turn)
        stream = streams.resume_existing_stream(chat.answer_id(turn.seq), after=cursor)
        response = sse_response(stream, keepalive=app.config["SSE_KEEPALIVE"], error_message=error_message)
        response.headers["X-Answer-Seq"] = str(turn.seq)
        return response

    @app.post("/api/chat/<chat_id>/stop")
    def stop(chat_id: str) -> Any:
        chat = open_chat(chat_id)
        body = request.get_json(silent=True)
        seq = body.get("answer") if isinstance(body, dict) else None
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            abort(400, description="answer must be a message number")
        turn = find_turn(chat, seq)
        status = streams.stop_stream(chat.answer_id(turn.seq))
        logger.info("chat %r: answer %d is %s", chat_id, turn.seq, status.state.value)
        return jsonify(answer=turn.seq, state=status.state.value)

    return app


def _int_arg(name: str) -> int | None:
    """A non-negative integer query parameter, or None; 400 for anything else."""
    raw = request.args.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        abort(400, description=f"{name} must be a non-negative integer")
    return int(raw)
