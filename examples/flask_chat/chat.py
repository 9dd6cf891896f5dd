"""Chats kept entirely on the log, so that every worker process sees the same thing.

A chat ``<id>`` is:

* its transcript, the plain log stream ``chats/<id>``: one JSON record
  ``{"message": "..."}`` per user message, whose sequence number ``s`` numbers
  the turn;
* for each turn, the answer: the resumable stream ``chats/<id>/<s>``, holding
  the answer's text and how it ended.

A chat answers one message at a time: a message is appended only while the
previous answer has ended, with ``match_seq_num`` so that two messages sent at
once cannot both get in. Between appending a message and claiming its answer
stream, the answer is *pending*; one still pending after ``pending_timeout``
seconds lost its creator (the process died in between) and is settled as
stopped, so the chat does not wait for it forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from resumable_stream import (
    NotFound,
    RangeNotSatisfiable,
    Record,
    ResumableStreamContext,
    SeqNumMismatch,
    StreamAbandoned,
    StreamFailed,
    StreamState,
    StreamStatus,
)
from resumable_stream.sse import ErrorMessage, client_error

__all__ = ["CHAT_ID", "Chat", "ChatBusy", "Turn"]

logger = logging.getLogger(__name__)

#: What a chat id may look like (it is part of the URL and of stream names).
CHAT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Longest user message, in characters.
MAX_MESSAGE_CHARS = 8000


class ChatBusy(Exception):
    """The chat is still answering its previous message."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"the answer to message {seq} has not ended yet")
        self.seq = seq


@dataclass(frozen=True)
class Turn:
    """One user message of a transcript: its sequence number, text and time (ms since the epoch)."""

    seq: int
    message: str
    timestamp: int


class Chat:
    """One chat's transcript and answers, on the log of ``ctx``."""

    def __init__(
        self,
        ctx: ResumableStreamContext,
        chat_id: str,
        *,
        pending_timeout: float = 5.0,
        error_message: ErrorMessage | None = None,
    ) -> None:
        if not CHAT_ID.match(chat_id):
            raise ValueError(f"invalid chat id {chat_id!r}: use 1 to 64 letters, digits, '-' or '_'")
        self.ctx = ctx
        self.chat_id = chat_id
        self.transcript = f"chats/{chat_id}"
        self.pending_timeout = pending_timeout
        self.error_message = error_message

    def answer_id(self, seq: int) -> str:
        """The resumable stream that holds the answer to message ``seq``."""
        return f"{self.transcript}/{seq}"

    # -- the transcript --------------------------------------------------

    def turns(self, since: int = 0, wait: int = 0) -> list[Turn]:
        """The messages from sequence number ``since`` on; with ``wait``, long-poll that long for one."""
        log, start = self.ctx.log, since
        if wait:
            try:
                batch = log.read(self.transcript, seq_num=since, wait=wait, clamp=True)
            except NotFound:
                log.ensure_stream(self.transcript)  # a long-poll needs the stream to exist
                batch = log.read(self.transcript, seq_num=since, wait=wait, clamp=True)
            records = list(batch.records)
            since = records[-1].seq_num + 1 if records else since
        else:
            records = []
        while True:  # read the rest, 1000 records at a time
            try:
                batch = log.read(self.transcript, seq_num=since)
            except (NotFound, RangeNotSatisfiable):
                break
            if not batch.records:
                break
            records.extend(batch.records)
            since = batch.records[-1].seq_num + 1
        return [_turn(record.seq_num, record.body, record.timestamp) for record in records if record.seq_num >= start]

    def turn(self, seq: int) -> Turn | None:
        """Message ``seq``, or None if there is no such message."""
        try:
            records = self.ctx.log.read(self.transcript, seq_num=seq, count=1).records
        except (NotFound, RangeNotSatisfiable):
            return None
        return _turn(records[0].seq_num, records[0].body, records[0].timestamp) if records else None

    def latest(self) -> int | None:
        """The sequence number of the last message, or None for an empty chat."""
        try:
            tail = self.ctx.log.check_tail(self.transcript).seq_num
        except NotFound:
            return None
        return tail - 1 if tail else None

    def post(self, message: str) -> tuple[int, list[dict[str, str]]]:
        """Append the user's ``message``: its sequence number, and the conversation to answer.

        The conversation holds the earlier turns (the user's messages and the
        text of their answers) and ``message`` last. Raises :class:`ChatBusy`
        while the previous answer runs.
        """
        turns = self.turns()
        conversation: list[dict[str, str]] = []
        for turn in turns:
            answer = self.answer(turn)
            if not answer["done"]:
                raise ChatBusy(turn.seq)
            conversation.append({"role": "user", "content": turn.message})
            if answer["text"]:
                conversation.append({"role": "assistant", "content": answer["text"]})
        conversation.append({"role": "user", "content": message})
        record = Record(json.dumps({"message": message}).encode())
        seq = len(turns)
        try:
            self._append(record, seq)
        except SeqNumMismatch:
            raise ChatBusy(seq) from None  # another message got in first
        return seq, conversation

    def _append(self, record: Record, seq: int) -> None:
        try:
            self.ctx.log.append(self.transcript, [record], match_seq_num=seq)
        except NotFound:
            self.ctx.log.ensure_stream(self.transcript)
            self.ctx.log.append(self.transcript, [record], match_seq_num=seq)

    # -- answers ---------------------------------------------------------

    def status(self, turn: Turn) -> StreamStatus:
        """The status of the answer to ``turn``; a pending answer older than ``pending_timeout`` is settled."""
        status = self.ctx.stream_status(self.answer_id(turn.seq))
        if status.state is StreamState.MISSING and time.time() - turn.timestamp / 1000 > self.pending_timeout:
            return self._settle(turn)
        return status

    def await_start(self, turn: Turn) -> StreamStatus:
        """The status of the answer to ``turn`` once it is no longer pending; settled if it stays pending too long."""
        deadline = time.monotonic() + self.pending_timeout
        while (status := self.status(turn)).state is StreamState.MISSING:
            if time.monotonic() >= deadline:
                return self._settle(turn)
            time.sleep(0.05)
        return status

    def _settle(self, turn: Turn) -> StreamStatus:
        """End the answer to ``turn`` as stopped: its creator never claimed it (and a late one will find it ended)."""
        logger.warning(
            "the answer to message %d of chat %r never started; settling it as stopped", turn.seq, self.chat_id
        )
        return self.ctx.stop_stream(self.answer_id(turn.seq))

    def answer(self, turn: Turn) -> dict[str, Any]:
        """The answer to ``turn``, for the page: ``state`` and ``done``; once done, ``text``, ``error`` and ``cursor``.

        ``state`` is ``pending`` (not started yet), ``active``, or how it ended:
        ``completed``, ``stopped``, ``failed`` or ``abandoned``. ``error`` is what
        clients may see of a failure (as the answer's own stream tells it), and
        ``cursor`` the id of the answer's final event.
        """
        status = self.status(turn)
        if status.state is StreamState.MISSING:
            return {"state": "pending", "done": False}
        if not status.done:
            return {"state": status.state.value, "done": False}
        text: list[str] = []
        reader = self.ctx.resume_existing_stream(self.answer_id(turn.seq), after=0)
        if reader is not None:
            # A failed or abandoned answer's text is what was written; the status says how it ended.
            with reader, contextlib.suppress(StreamFailed, StreamAbandoned):
                text.extend(reader)
            status = reader.status or status
        failed = status.state is StreamState.FAILED
        error = client_error(self.answer_id(turn.seq), status.error, self.error_message) if failed else None
        state = status.state.value
        return {"state": state, "done": True, "text": "".join(text), "error": error, "cursor": status.tail - 1}


def _turn(seq: int, body: bytes, timestamp: int) -> Turn:
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        message = ""
    return Turn(seq, message if isinstance(message, str) else "", timestamp)
