"""The Vercel AI SDK's ``useChat``, served from resumable streams.

Three pieces, framework-free (:mod:`resumable_stream.flask` has the Flask
glue, and the README shows the routes):

* :func:`ui_message_stream` turns any text source (an LLM's tokens) into the
  AI SDK's UI message stream: a ``start`` part with the message's id,
  ``text-start``, one ``text-delta`` per piece of text, ``text-end`` and
  ``finish``. A source may also yield UI message parts of its own (dicts such
  as ``{"type": "data-weather", "data": {...}}`` or reasoning and tool parts),
  which are passed through in order. Serve it with ``sse_response(...,
  ai_sdk=True)``: a failure of the source then ends the stream with an
  ``error`` part, a stop with an ``abort`` part. The parts are written to the
  log as they are produced, so a resumed stream replays the very same parts,
  ids included.
* :func:`parse_chat_request` reads the body that ``DefaultChatTransport``
  POSTs: ``{id, messages, trigger, messageId}``.
* :class:`ChatAnswers` remembers, on the log, which answer of each chat is
  being written, so that the resume route ``GET {api}/{chatId}/stream``
  (which carries no cursor) replays that answer from its start, and answers
  204 once it has ended.

Threading: :func:`ui_message_stream` runs on the stream's producer thread,
like any source; :class:`ChatAnswers` is thread-safe, as its context is.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .context import ResumableStreamContext
from .exceptions import NotFound, RangeNotSatisfiable
from .log import Record, validate_stream_name
from .protocol import StreamStatus
from .reader import ResumableStream

__all__ = ["ChatAnswers", "ChatRequest", "Part", "message_text", "parse_chat_request", "ui_message_stream"]

#: A piece of an answer: text, or a UI message part of the source's own.
Part = str | Mapping[str, Any]
#: Longest text of one ``text-delta`` part: longer text is split, so that a part always fits a record.
MAX_DELTA_CHARS = 16_384
#: What ``DefaultChatTransport`` says it wants.
Trigger = Literal["submit-message", "regenerate-message"]
_TRIGGERS = ("submit-message", "regenerate-message")


def _part(part: Mapping[str, Any]) -> str:
    return json.dumps(part, ensure_ascii=False, separators=(",", ":"))


def ui_message_stream(
    source: Iterable[Part] | Callable[[], Iterable[Part]], *, message_id: str | None = None
) -> Iterator[str]:
    """The UI message stream of ``source``, one JSON part per chunk.

    ``source`` is an iterable of text pieces (or a zero-argument function
    returning one, called when the stream starts); it may also yield dicts,
    which are sent as UI message parts of their own (each needs a ``"type"``).
    ``message_id`` is the assistant message's id (default: a fresh one). Empty
    text is skipped; text longer than :data:`MAX_DELTA_CHARS` is split over
    several deltas. Anything else the source yields fails the stream with a
    :class:`TypeError`. A failure of the source, and a stop (which closes this
    generator), are told by ``sse_response(..., ai_sdk=True)``.
    """
    if message_id is not None and (not isinstance(message_id, str) or not message_id):
        raise ValueError(f"message_id must be a non-empty string, not {message_id!r}")
    return _parts(source, message_id)


def _parts(source: Iterable[Part] | Callable[[], Iterable[Part]], message_id: str | None) -> Iterator[str]:
    yield _part({"type": "start", "messageId": message_id or f"msg-{uuid.uuid4().hex}"})
    texts = 0
    open_text: str | None = None
    for piece in source() if callable(source) else source:
        if isinstance(piece, str):
            if not piece:
                continue
            if open_text is None:
                texts += 1
                open_text = f"text-{texts}"
                yield _part({"type": "text-start", "id": open_text})
            for start in range(0, len(piece), MAX_DELTA_CHARS):
                yield _part({"type": "text-delta", "id": open_text, "delta": piece[start : start + MAX_DELTA_CHARS]})
        elif isinstance(piece, Mapping) and isinstance(piece.get("type"), str):
            if open_text is not None:
                yield _part({"type": "text-end", "id": open_text})
                open_text = None
            yield _part(piece)
        else:
            raise TypeError(f"a UI message source yields text or parts with a 'type', not {piece!r:.100}")
    if open_text is not None:
        yield _part({"type": "text-end", "id": open_text})
    yield _part({"type": "finish"})


@dataclass(frozen=True)
class ChatRequest:
    """What ``DefaultChatTransport`` POSTs: the chat's id, its UI messages, and what to do with them.

    ``extra`` holds the other fields of the body (the transport's ``body`` option).
    """

    id: str
    messages: Sequence[Mapping[str, Any]]
    trigger: Trigger
    message_id: str | None = None
    extra: Mapping[str, Any] | None = None

    @property
    def last_user_text(self) -> str:
        """The text of the last user message (its ``text`` parts joined), or ``""`` if there is none."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message_text(message)
        return ""


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a UI message: its ``text`` parts, joined."""
    parts = message.get("parts")
    if not isinstance(parts, list):
        return ""
    texts = (p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text")
    return "".join(text for text in texts if isinstance(text, str))


def parse_chat_request(body: object) -> ChatRequest:
    """The :class:`ChatRequest` in a decoded JSON ``body``; :class:`ValueError` saying what is wrong with it."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object {id, messages, trigger}")
    chat_id, messages, trigger = body.get("id"), body.get("messages"), body.get("trigger", "submit-message")
    if not isinstance(chat_id, str) or not chat_id:
        raise ValueError("'id' must be the chat's id, a non-empty string")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of UI messages (objects)")
    if trigger not in _TRIGGERS:
        raise ValueError(f"'trigger' must be one of {', '.join(_TRIGGERS)}, not {trigger!r:.50}")
    message_id = body.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise ValueError("'messageId' must be a string")
    extra = {k: v for k, v in body.items() if k not in ("id", "messages", "trigger", "messageId")}
    return ChatRequest(chat_id, messages, trigger, message_id, extra)


class ChatAnswers:
    """Which answer of each chat is being written, kept on the log of ``ctx``, for every process.

    Each :meth:`start` creates a resumable stream with a fresh id and then
    appends that id to the chat's index stream ``{prefix}/{chat_id}``;
    :meth:`active` reads the last entry. So the resume route finds the
    answer in progress from any worker, and nothing once it has ended.
    """

    def __init__(self, ctx: ResumableStreamContext, *, prefix: str = "ai-chat") -> None:
        validate_stream_name(f"{prefix}/x")
        self.ctx = ctx
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"<ChatAnswers {self.prefix!r}>"

    def index(self, chat_id: str) -> str:
        """The log stream that lists the answers of ``chat_id``; :class:`ValueError` for an id that cannot be one."""
        if not isinstance(chat_id, str) or not chat_id or "/" in chat_id:
            raise ValueError(f"invalid chat id {chat_id!r:.80}: a non-empty string without '/'")
        return validate_stream_name(f"{self.prefix}/{chat_id}")

    def start(self, chat_id: str, make_stream: Iterable[Any] | Callable[[], Iterable[Any]]) -> ResumableStream[Any]:
        """Create the chat's next answer from ``make_stream`` and make it the active one; its live stream."""
        index = self.index(chat_id)
        answer_id = f"{index}/{uuid.uuid4().hex}"
        stream = self.ctx.create_new_resumable_stream(answer_id, make_stream)
        try:
            self.ctx.log.append(index, [Record(answer_id.encode())])
        except NotFound:  # a basin that does not create streams on append
            self.ctx.log.ensure_stream(index)
            self.ctx.log.append(index, [Record(answer_id.encode())])
        if stream is None:  # stopped before it began: serve how it ended
            stream = self.ctx.resume_existing_stream(answer_id, after=0)
            assert stream is not None
        return stream

    def active_id(self, chat_id: str) -> str | None:
        """The stream id of the chat's last answer, ended or not; None if the chat has none (or is no chat id)."""
        try:
            records = self.ctx.log.read(self.index(chat_id), tail_offset=1, count=1).records
        except (ValueError, NotFound, RangeNotSatisfiable):  # no such chat id, or no answer yet
            return None
        return records[-1].body.decode() if records else None

    def active(self, chat_id: str) -> ResumableStream[Any] | None:
        """A reader of the answer being written, from its start; None when the chat has none in progress."""
        answer_id = self.active_id(chat_id)
        return None if answer_id is None else self.ctx.resume_existing_stream(answer_id)

    def stop(self, chat_id: str) -> StreamStatus | None:
        """Stop the chat's last answer, for every reader; how it ended, or None if the chat has no answer."""
        answer_id = self.active_id(chat_id)
        return None if answer_id is None else self.ctx.stop_stream(answer_id)
