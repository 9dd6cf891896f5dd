"""The claim and status protocol: how a stream is claimed, read for its state, and ended, on the log.

Every function here is one or a few requests to the :class:`~resumable_stream.log.Log`
and holds no state; they are thread-safe as the log is. The record layout
they read and write is the one of ``_wire.py``.

* :func:`claim` appends the session fence as record 0, conditional on an
  empty, unfenced stream, so exactly one creator wins.
* :func:`read_end` reads the last two records: the outcome if one is
  recorded, else how long the producer has been silent; :func:`read_status`
  also judges that silence (see ``liveness.py``), which takes a second
  read (of the claim) for a producer silent for over a second.
* :func:`end` appends the terminal records, conditional on the stream still
  being held by a given token at a given tail, so that it can only end a
  stream that nobody else has moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from . import _wire, liveness
from .exceptions import FencingTokenMismatch, NotFound, RangeNotSatisfiable, ResumableStreamError, SeqNumMismatch
from .log import AppendAck, Log, Record, SequencedRecord

__all__ = ["StreamState", "StreamStatus", "claim", "claim_token", "end", "read_end", "read_status"]

T = TypeVar("T")


class StreamState(str, Enum):
    """Where a resumable stream is in its life."""

    MISSING = "missing"  #: nothing was ever written under this id
    ACTIVE = "active"  #: a producer is writing it
    COMPLETED = "completed"  #: the source ran to its end
    FAILED = "failed"  #: the source raised an exception, or the log could not be written
    STOPPED = "stopped"  #: :meth:`~resumable_stream.ResumableStreamContext.stop_stream` ended it
    ABANDONED = "abandoned"  #: the producer stopped writing without finishing (its process died)


@dataclass(frozen=True)
class StreamStatus:
    """A stream's state, as every process sees it.

    :attr:`tail` is the log's next sequence number (0 for a missing stream);
    for a finished stream, ``tail - 1`` is the cursor of its terminal record.
    :attr:`error` is the recorded failure message of a failed stream.
    """

    state: StreamState
    tail: int = 0
    error: str | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended, however it ended."""
        return self.state not in (StreamState.MISSING, StreamState.ACTIVE)


@dataclass(frozen=True)
class Observed:
    """What :func:`read_status` saw: the status, and what a reader needs to judge the producer's liveness."""

    status: StreamStatus
    #: Seconds since the last record was written (by the log's clock), 0 for a missing stream.
    silent_for: float = 0.0
    #: True when the outcome is recorded on the log (not inferred from silence).
    recorded: bool = False
    #: The claim's session token, when this read learned it.
    token: str | None = None


def ensuring(log: Log, stream: str, operation: Callable[[], T]) -> T:
    """Run ``operation``; if ``stream`` does not exist (the basin creates no streams on demand), create it first."""
    try:
        return operation()
    except NotFound:
        log.ensure_stream(stream)
        return operation()


def claim(log: Log, stream_id: str, token: str) -> AppendAck | None:
    """Append the fence ``token`` as the stream's first record.

    Raises :class:`FencingTokenMismatch` when someone else holds or ended the
    stream; returns ``None`` when our own claim turns out to have landed
    earlier (a retried request).
    """
    try:
        return ensuring(
            log, stream_id, lambda: log.append(stream_id, [Record.fence(token)], fencing_token="", match_seq_num=0)
        )
    except FencingTokenMismatch as exc:
        if exc.current_token != token:
            raise
        return None
    except SeqNumMismatch as exc:
        raise ResumableStreamError(
            f"stream {stream_id!r} holds records that resumable_stream did not write; use another id"
        ) from exc


def read_end(log: Log, stream_id: str) -> Observed:
    """The stream's recorded outcome, or (for a stream still active) how long its producer has been silent.

    One read, of the last two records; the silence is not judged here (see :func:`read_status`).
    """
    try:
        records = log.read(stream_id, tail_offset=2, count=2).records
    except (NotFound, RangeNotSatisfiable):
        return Observed(StreamStatus(StreamState.MISSING))
    if not records:
        return Observed(StreamStatus(StreamState.MISSING))
    last = records[-1]
    entry = _wire.parse(last)
    silent_for = max(0.0, time.time() - last.timestamp / 1000)
    if entry.kind == "terminal":
        state = StreamState(entry.state)
        error = _wire.parse(records[0]).message if state is StreamState.FAILED and len(records) == 2 else None
        return Observed(StreamStatus(state, last.seq_num + 1, error), silent_for, True)
    token = entry.token if entry.kind == "claim" else None
    return Observed(StreamStatus(StreamState.ACTIVE, last.seq_num + 1), silent_for, token=token)


def read_status(log: Log, stream_id: str, default_bound: float) -> Observed:
    """The stream's status: :func:`read_end`, and a producer silent for longer than its bound reported abandoned.

    The bound is the one the producer declares in its claim (see ``liveness.py``), or ``default_bound``
    for one that declares none; reading the claim is a second request, made only for a producer that
    has been silent for over a second.
    """
    observed = read_end(log, stream_id)
    status, silent_for, token = observed.status, observed.silent_for, observed.token
    if status.state is not StreamState.ACTIVE or silent_for <= liveness.SHORTEST_BOUND:
        return observed
    token = token or claim_token(log, stream_id)
    bound = liveness.declared_bound(token) if token is not None else None
    if silent_for > (default_bound if bound is None else bound):
        status = StreamStatus(StreamState.ABANDONED, status.tail)
    return Observed(status, silent_for, token=token)


def claim_token(log: Log, stream_id: str) -> str | None:
    """The session token of the stream's claim (its first record), if it has one."""
    try:
        records = log.read(stream_id, seq_num=0, count=1).records
    except (NotFound, RangeNotSatisfiable):
        return None
    return claim_of(records[0]) if records else None


def claim_of(record: SequencedRecord) -> str | None:
    """The session token ``record`` claims the stream with, if it is a claim."""
    entry = _wire.parse(record)
    return entry.token if entry.kind == "claim" else None


def end(log: Log, stream_id: str, token: str | None, state: StreamState, tail: int,
        message: str | None = None) -> AppendAck:
    """Append the records that end the stream in ``state``, if ``token`` holds it and its tail is ``tail``.

    Raises :class:`FencingTokenMismatch` or :class:`SeqNumMismatch` when it does not.
    """
    return log.append(stream_id, _wire.terminal_records(state.value, message), fencing_token=token,
                      match_seq_num=tail)
