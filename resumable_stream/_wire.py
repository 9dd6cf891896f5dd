"""How a resumable stream is laid out on the log.

The layout is the one of ``@s2-dev/resumable-stream``, so that its resumer
reads our streams (same chunks, clean end) and we read its streams::

    seq 0     fence "session-<hex>"        the claim: appended with fencing_token="" and
                                           match_seq_num=0, so exactly one creator wins
    ...       data records                 body = one chunk (UTF-8 text); a bytes chunk
                                           also carries the header ("rs", "bytes")
    ...       metadata records             empty body, so that package skips them:
                                           ("rs", "heartbeat")  the producer is alive
                                           ("rs", "error"), ("rs-message", text)
                                                                why the stream failed
    last      terminal fence               "end-<hex>"              completed
                                           "end-stopped-<hex>"      stopped
                                           "error-<hex>"            failed
                                           "error-abandoned-<hex>"  abandoned

Every append after the claim carries the session token as its fencing token
and the next sequence number as ``match_seq_num``, so the producer knows each
record's sequence number before the append is acknowledged, and a terminal
fence written by anyone else shuts the producer out.

Stop requests travel on a separate control stream (:data:`CONTROL_STREAM`):
one JSON record ``{"stop": <stream id>, "session": <token>}`` per request,
read by every process that is producing streams.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from .log import Record, SequencedRecord

#: The stream that carries stop requests; no resumable stream may use this id.
CONTROL_STREAM = "resumable-stream.control"

SESSION = "session-"
COMPLETED = "end-"
STOPPED = "end-stopped-"
FAILED = "error-"
ABANDONED = "error-abandoned-"

_META = b"rs"
_MESSAGE = b"rs-message"
BYTES_HEADER = ((_META, b"bytes"),)
HEARTBEAT = Record(b"", ((_META, b"heartbeat"),))
#: Longest failure message recorded, in UTF-8 bytes.
MAX_MESSAGE_BYTES = 8192


def new_token(prefix: str) -> str:
    """A fencing token: ``prefix`` and random hex, at most 36 bytes."""
    return prefix + secrets.token_hex((36 - len(prefix)) // 2)


# Outcome names, as in StreamState, and their fence prefixes (longest first: "end-stopped-" before "end-").
_TERMINAL_PREFIXES = (("stopped", STOPPED), ("completed", COMPLETED), ("abandoned", ABANDONED), ("failed", FAILED))


def terminal_state(token: str) -> str | None:
    """The outcome (``"completed"``, ``"stopped"``, ``"failed"``, ``"abandoned"``) a fencing token records.

    ``None`` for a claim or a token this library does not write.
    """
    return next((state for state, prefix in _TERMINAL_PREFIXES if token.startswith(prefix)), None)


def recordable_message(message: str) -> str:
    """``message`` as it is recorded (and read back): at most 8 KiB of UTF-8, cut at a character."""
    return message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")


def terminal_records(state: str, message: str | None = None) -> list[Record]:
    """The records that end a stream in ``state``: the failure message, if any, then the fence."""
    records = []
    if message is not None:
        text = recordable_message(message)
        records.append(Record(b"", ((_META, b"error"), (_MESSAGE, text.encode()))))
    records.append(Record.fence(new_token(dict(_TERMINAL_PREFIXES)[state])))
    return records


def data_record(body: bytes, is_bytes: bool) -> Record:
    return Record(body, BYTES_HEADER if is_bytes else ())


@dataclass(frozen=True, slots=True)
class Entry:
    """One record, as the engine understands it."""

    kind: str  # "data", "claim", "terminal", "error", "other"
    chunk: str | bytes | None = None
    token: str | None = None
    state: str | None = None
    message: str | None = None


def parse(record: SequencedRecord) -> Entry:
    """Classify a record read from a resumable stream."""
    command = record.command
    if command == "fence":
        token = record.body.decode("utf-8", "replace")
        state = terminal_state(token)
        if state is not None:
            return Entry("terminal", token=token, state=state)
        if token.startswith(SESSION):
            return Entry("claim", token=token)
        return Entry("other")
    if command is not None:
        return Entry("other")
    if record.body:
        if record.headers == BYTES_HEADER:
            return Entry("data", chunk=record.body)
        return Entry("data", chunk=record.body.decode("utf-8", "replace"))
    headers = dict(record.headers)
    if headers.get(_META) == b"error":
        return Entry("error", message=headers.get(_MESSAGE, b"").decode("utf-8", "replace"))
    return Entry("other")


def stop_request(stream_id: str, token: str) -> Record:
    return Record(json.dumps({"stop": stream_id, "session": token}).encode())


def parse_stop_request(record: SequencedRecord) -> tuple[str, str] | None:
    """``(stream id, session token)`` of a control record, or ``None`` for anything else."""
    try:
        data = json.loads(record.body)
        return str(data["stop"]), str(data["session"])
    except (ValueError, KeyError, TypeError):
        return None
