"""The AI SDK chat's Flask application: :func:`create_app`.

The three routes ``DefaultChatTransport`` and ``useChat({ resume: true })``
call, as the main README shows them, and two for the page:

=====================================  ==================================================
``GET  /``                             the page (``?chat=<id>`` names the chat)
``POST /api/chat``                     ``{id, messages, trigger}``: answer the last user
                                       message as a UI message stream
``GET  /api/chat/<id>/stream``         the answer being written, from its start; 204 if none
``POST /api/chat/<id>/stop``           stop the answer being written, for every reader
``GET  /api/chat/<id>``                the chat so far: ``{messages, active}``, the UI
                                       messages (the last answer once it has ended, with
                                       ``metadata.state``) and whether one is being written
=====================================  ==================================================

Each POST records the messages it answered, with the id of its answer, on
the log stream ``ai-chat-history/<id>``, so a reloaded page (in any worker
process) gets the chat back and resumes the answer being written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, abort, jsonify

from examples.flask_chat.app import error_message
from examples.flask_chat.models import Model, model_from_env
from resumable_stream import (
    NotFound,
    RangeNotSatisfiable,
    Record,
    ResumableStreamContext,
    StreamAbandoned,
    StreamFailed,
)
from resumable_stream.ai_sdk import ChatAnswers, message_text, ui_message_stream
from resumable_stream.flask import chat_request, sse_response
from resumable_stream.sse import client_error

__all__ = ["create_app"]


def create_app(ctx: ResumableStreamContext | None = None, model: Model | None = None) -> Flask:
    """The application, on ``ctx`` (default: S2 if configured, else this process's memory) and ``model``."""
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    streams = ctx if ctx is not None else ResumableStreamContext()
    answerer = model if model is not None else model_from_env()
    answers = ChatAnswers(streams)

    def history_stream(chat_id: str) -> str:
        answers.index(chat_id)  # the same rules for a chat id
        return f"ai-chat-history/{chat_id}"

    @app.get("/")
    def page() -> Response:
        response = app.send_static_file("index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.post("/api/chat")
    def chat() -> Response:
        body = chat_request()
        conversation = [
            {"role": m["role"], "content": message_text(m)}
            for m in body.messages
            if m.get("role") in ("user", "assistant")
        ]
        if not conversation or conversation[-1]["role"] != "user":
            abort(400, description="the last message must be the user's")
        try:
            answer = answers.start(body.id, lambda: ui_message_stream(answerer.stream(conversation)))
        except ValueError as exc:
            abort(400, description=str(exc))
        record = Record(json.dumps({"messages": body.messages, "answer": answer.stream_id}).encode())
        _append(streams, history_stream(body.id), record)
        return sse_response(answer, ai_sdk=True, error_message=error_message)

    @app.get("/api/chat/<chat_id>/stream")
    def chat_stream(chat_id: str) -> Response:
        return sse_response(answers.active(chat_id), ai_sdk=True, error_message=error_message)

    @app.post("/api/chat/<chat_id>/stop")
    def chat_stop(chat_id: str) -> Response:
        answers.stop(chat_id)
        return Response(status=204)

    @app.get("/api/chat/<chat_id>")
    def chat_history(chat_id: str) -> Any:
        try:
            name = history_stream(chat_id)
        except ValueError as exc:
            abort(404, description=str(exc))
        try:
            records = streams.log.read(name, tail_offset=1, count=1).records
        except (NotFound, RangeNotSatisfiable):
            records = []
        if not records:
            return jsonify(messages=[], active=False)
        last = json.loads(records[-1].body)
        status = streams.stream_status(last["answer"])
        if not status.done:
            return jsonify(messages=last["messages"], active=True)
        return jsonify(messages=[*last["messages"], _assistant_message(streams, last["answer"])], active=False)

    return app


def _append(ctx: ResumableStreamContext, stream: str, record: Record) -> None:
    try:
        ctx.log.append(stream, [record])
    except NotFound:  # a basin that does not create streams on append
        ctx.log.ensure_stream(stream)
        ctx.log.append(stream, [record])


def _assistant_message(ctx: ResumableStreamContext, answer_id: str) -> dict[str, Any]:
    """The finished answer ``answer_id`` as a UI message, with how it ended in ``metadata``."""
    parts: list[Mapping[str, Any]] = []
    reader = ctx.resume_existing_stream(answer_id, after=0)
    assert reader is not None
    with reader, contextlib.suppress(StreamFailed, StreamAbandoned):
        parts.extend(json.loads(chunk) for chunk in reader)
    status = reader.status or ctx.stream_status(answer_id)
    message_id = next((p["messageId"] for p in parts if p.get("type") == "start"), answer_id)
    text = "".join(p["delta"] for p in parts if p.get("type") == "text-delta")
    metadata: dict[str, Any] = {"state": status.state.value}
    if status.error is not None:
        metadata["error"] = client_error(answer_id, status.error, error_message)
    return {"id": message_id, "role": "assistant", "parts": [{"type": "text", "text": text}], "metadata": metadata}
