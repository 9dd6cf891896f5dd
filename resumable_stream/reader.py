"""The reader: :class:`ResumableStream`, one reader of one stream, live or from the log.

The creator's reader takes chunks straight from its producer, in bulk, as they
are produced. Every other reader (and the creator's, if it falls too far
behind) follows the log with one read session from its cursor, so a batch
written reaches it without another request, until the stream's terminal
record. The session's ``wait`` is the reader's remaining patience: when no
record arrives for that long the session ends, and the reader either returns
to its caller (a timeout) or judges the producer's silence (see
``liveness.py``), recording the stream as abandoned if the producer's claim
says it should have written by now.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from itertools import repeat
from typing import Any, Generic, TypeVar, cast

from . import _wire, liveness, protocol
from .exceptions import (
    FencingTokenMismatch,
    RangeNotSatisfiable,
    S2Error,
    SeqNumMismatch,
    StreamAbandoned,
    StreamFailed,
)
from .log import Log, ReadBatch, ReadSession, SequencedRecord, TextBatch
from .producer import OVERFLOWED, Producer
from .protocol import StreamState, StreamStatus

__all__ = ["ResumableStream", "parse_cursor"]

logger = logging.getLogger(__name__)

Chunk = TypeVar("Chunk", str, bytes)

# Largest sequence number a cursor may name.
_MAX_CURSOR = 2**63 - 1
# Longest a read session waits for a record before the reader looks around (whole seconds).
_MAX_WAIT = 60


def parse_cursor(cursor: str | int | None) -> int | None:
    """The sequence number a resume cursor names; :class:`ValueError` for anything but a non-negative integer."""
    if cursor is None:
        return None
    if isinstance(cursor, bool) or not isinstance(cursor, (str, int)):
        raise ValueError(f"invalid resume cursor {cursor!r}: expected an event id such as '42'")
    text = str(cursor).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _MAX_CURSOR:
        raise ValueError(f"invalid resume cursor {cursor!r}: expected an event id such as '42'")
    return int(text)


class ResumableStream(Generic[Chunk]):
    """One reader of a resumable stream: iterate it for the chunks.

    Iterating yields the chunks (``str``, or ``bytes`` for a bytes source),
    blocking until the next one arrives, and ends when the stream ends:
    normally for a completed or stopped stream, with
    :class:`~resumable_stream.exceptions.StreamFailed` for a failed one (the
    creator's own iterator raises the source's original exception instead)
    and with :class:`~resumable_stream.exceptions.StreamAbandoned` for an
    abandoned one. :meth:`events` yields ``(cursor, chunk)`` pairs instead;
    a cursor passed to ``resume_existing_stream(..., after=cursor)`` resumes
    strictly after that chunk. Once the stream has ended, :attr:`status` says
    how.

    Readers are made by :class:`~resumable_stream.ResumableStreamContext`.

    Threading: a reader is consumed by one thread at a time; :meth:`close`
    may be called from any thread.
    """

    def __init__(self, log: Log, stream_id: str, *, default_bound: float, after: int | None = None,
                 tail: int | None = None, silent_for: float = 0.0, token: str | None = None,
                 producer: Producer | None = None) -> None:
        self.stream_id = stream_id
        #: How the stream ended; ``None`` until then.
        self.status: StreamStatus | None = None
        self._log = log
        self._default_bound = default_bound
        self._closed = False
        self._last_seq = -1 if after is None else after  # records up to here are consumed
        # A cursor may lie beyond the end (the creator hands out cursors before they are written):
        # reading from the tail still finds the terminal record that ends this reader.
        self._next_read = self._last_seq + 1 if tail is None else min(self._last_seq + 1, tail)
        self._records: deque[SequencedRecord] = deque()
        self._local: deque[tuple[int, Any, int]] = deque()
        self._producer = producer  # the creator's: its chunks come straight from here, and its failures
        self._live = producer  # while it keeps up
        self._session: ReadSession | None = None
        self._text = True  # read as text (cheaper) until a chunk of bytes comes
        self._session_wait = 0
        self._token = token  # the claim's, once known
        self._bound = liveness.declared_bound(token) if token else None  # the producer's silence bound, if declared
        self._error_message: str | None = None
        self._quiet_since = time.monotonic() - silent_for

    def __repr__(self) -> str:
        state = self.status.state.value if self.status else ("live" if self._live is not None else "reading")
        return f"<ResumableStream {self.stream_id!r} {state}>"

    def __iter__(self) -> ResumableStream[Chunk]:
        return self

    def __next__(self) -> Chunk:
        local = self._local
        if local and not self._closed:  # a chunk in hand, live or read from the log: _next_event's first step, inlined
            seq, chunk, _ = local.popleft()
            live = self._live
            if live is None or seq < live.cut:
                self._last_seq = seq
                return chunk  # type: ignore[no-any-return]
            local.clear()  # never written: the stream ended before it reached the log
        event = self._next_event(None)
        if event is None:
            raise StopIteration
        return event[1]

    def events(self) -> Iterator[tuple[str, Chunk]]:
        """Yield ``(cursor, chunk)`` for every chunk; the cursor is an event id such as ``"17"``."""
        while (event := self._next_event(None)) is not None:
            yield str(event[0]), event[1]

    def next_event(self, timeout: float | None = None) -> tuple[str, Chunk] | None:
        """The next ``(cursor, chunk)``, waiting at most about ``timeout`` seconds (``None``: until there is one).

        Returns ``None`` when the timeout passes first (a reader of the log
        waits in whole seconds), when the stream has ended (then
        :attr:`status` is set) or when the reader is closed; a failed or
        abandoned stream raises, as iterating does.
        """
        event = self._next_event(timeout)
        return None if event is None else (str(event[0]), event[1])

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Detach this reader, from any thread (a thread waiting in it returns). The stream itself goes on."""
        self._closed = True
        if self._live is not None:
            self._live.detach()
        self._end_session()

    def __enter__(self) -> ResumableStream[Chunk]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------

    def _next_event(self, timeout: float | None) -> tuple[int, Chunk] | None:
        """The next ``(sequence number, chunk)``; None once ended or closed, or when ``timeout`` passes first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        local = self._local
        while self.status is None and not self._closed:
            if local:
                seq, chunk, _ = local.popleft()
                if self._live is not None and seq >= self._live.cut:
                    local.clear()  # never written: the stream ended before it reached the log
                    continue
                self._last_seq = seq
                return seq, chunk
            if self._live is not None:
                chunks, end = self._live.next_live(deadline)
                if chunks:
                    local.extend(chunks)
                    continue
                if end is None:
                    return None
                if end == OVERFLOWED:
                    logger.info("reader of stream %r fell behind; reading the rest from the log", self.stream_id)
                    self._live = None
                    self._next_read = self._last_seq + 1
                    self._quiet_since = time.monotonic()
                    continue
                assert isinstance(end, StreamStatus)
                self._finish(end)
                return None
            event = self._next_logged(deadline)
            if event is not None or self.status is not None or self._closed:
                return event
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def _next_logged(self, deadline: float | None) -> tuple[int, Chunk] | None:
        """The next chunk read from the log; None when ended, closed, or when ``deadline`` passes."""
        records = self._records
        while not self._closed and self.status is None:
            while records:
                record = records.popleft()
                seq = record.seq_num
                if record.body and not record.headers:  # a text chunk: the common case, kept short
                    if seq <= self._last_seq:
                        continue  # up to the cursor: skipped
                    self._last_seq = seq
                    return seq, record.body.decode("utf-8", "replace")  # type: ignore[return-value]
                entry = _wire.parse(record)
                if entry.kind == "data":
                    if seq <= self._last_seq:
                        continue
                    self._last_seq = seq
                    return seq, entry.chunk  # type: ignore[return-value]
                # Everything else is consumed even before the cursor: the terminal record must end the reader.
                self._last_seq = max(self._last_seq, seq)
                if entry.kind == "claim":
                    self._token = entry.token
                    self._bound = liveness.declared_bound(entry.token or "")
                elif entry.kind == "error":
                    self._error_message = entry.message
                elif entry.kind == "terminal":
                    state = StreamState(entry.state)
                    error = self._error_message if state is StreamState.FAILED else None
                    self._finish(StreamStatus(state, seq + 1, error))
                    return None
            if not self._read_more(deadline) or self._local:
                return None  # out of time, or text chunks in hand for _next_event
        return None

    def _read_more(self, deadline: float | None) -> bool:
        """Wait for the next batch from the read session; False when ``deadline`` passes first."""
        now = time.monotonic()
        patience = self._patience(now)
        if patience <= 0:
            self._judge_silence()
            return True
        if deadline is not None:
            if deadline <= now:
                return False
            patience = min(patience, deadline - now)
        wait = max(1, math.ceil(min(patience, _MAX_WAIT)))
        if self._session is not None and self._session_wait > wait:
            self._end_session()  # it would outlast this caller's deadline
        if self._session is None:
            self._session = self._log.read_session(self.stream_id, seq_num=self._next_read, clamp=True, wait=wait,
                                                   text=self._text)
            self._session_wait = wait
        try:
            item = next(self._session)
        except StopIteration:
            self._session = None  # no record for `wait` seconds
            return True
        except RangeNotSatisfiable:
            self._session = None
            return True
        except BaseException:
            self._session = None
            raise
        if isinstance(item, TextBatch):
            self._next_read = item.seq_nums[-1] + 1
            self._hand(list(zip(item.seq_nums, item.texts, repeat(0))))
            written = item.timestamps[-1]
        elif isinstance(item, ReadBatch) and item.records:
            self._take(item.records)
            written = item.records[-1].timestamp
        else:
            return True
        # Silence counts from when the last record was written, not from when this reader got it: a
        # reader catching up on a dead producer's old records must not take them for signs of life.
        self._quiet_since = time.monotonic() - max(0.0, time.time() - written / 1000)
        return True

    def _take(self, records: tuple[SequencedRecord, ...]) -> None:
        """Queue a batch read from the log: its leading run of text chunks straight into the chunks in
        hand (the bulk of any batch), the rest for :meth:`_next_logged` to go through one by one.

        A stream is read as text until a chunk of bytes shows up: from that record on, it is read again
        as bytes (a text session would have mangled it). Both queues are empty here: the reader reads
        only once it has gone through everything it was holding.
        """
        # A batch that starts with plain text records (nearly all do) has them decoded in one pass
        # (tuple indexing: seq_num, body, headers); the run ends at the first other record.
        decoded: list[tuple[int, str, int] | None] = []
        run = 0
        if records[0][2] and not records[0][3]:
            decoded = [(r[0], r[2].decode("utf-8", "replace"), 0) if r[2] and not r[3] else None for r in records]
            try:
                run = decoded.index(None)
            except ValueError:
                run = len(decoded)
        rest = records[run:]
        self._next_read = records[-1].seq_num + 1
        if self._text:
            binary = next((i for i, r in enumerate(rest) if r.headers == _wire.BYTES_HEADER), None)
            if binary is not None:
                self._text = False
                self._end_session()
                rest = rest[:binary]
                self._next_read = records[run + binary].seq_num
        if run:
            self._hand(cast("list[tuple[int, str, int]]", decoded[:run]))  # no None before the first None
        self._records.extend(rest)

    def _hand(self, chunks: list[tuple[int, str, int]]) -> None:
        """Put text chunks read from the log in hand, skipping those up to the cursor."""
        last = self._last_seq
        if chunks[0][0] <= last:
            chunks = [chunk for chunk in chunks if chunk[0] > last]
        self._local.extend(chunks)

    def _patience(self, now: float) -> float:
        """Seconds left before the producer's silence must be judged.

        While its claim is unknown (a reader from a cursor), the first look comes after a second of
        silence: the claim says how long this producer may be silent, and it may be shorter than ours.
        """
        if self._bound is not None:
            bound = self._bound
        elif self._token is None:
            bound = min(self._default_bound, liveness.SHORTEST_BOUND)
        else:
            bound = self._default_bound  # a claim that declares nothing: judged by our own bound
        return bound - (now - self._quiet_since)

    def _judge_silence(self) -> None:
        """No record for the producer's silence bound: record the stream abandoned, unless it moved meanwhile.

        A producer that declares no bound (another library's) is never
        fenced: this reader just ends, reporting the stream abandoned.
        """
        log = self._log
        silent_for = time.monotonic() - self._quiet_since
        token = self._token = self._token or protocol.claim_token(log, self.stream_id)
        declared = liveness.declared_bound(token) if token is not None else None
        self._bound = declared if declared is not None else self._default_bound
        if silent_for < self._bound:
            return  # its own bound is longer than this reader's guess
        if token is not None and liveness.running_here(token):
            self._quiet_since = time.monotonic()  # its producer runs in this process: alive, only slow
            return
        tail = log.check_tail(self.stream_id).seq_num
        if tail > self._next_read:
            self._quiet_since = time.monotonic()  # records arrived after all
            return
        if token is None or declared is None:
            logger.warning("stream %r has had no record for %.0f s; its producer does not heartbeat, so it is left "
                           "writable and this reader ends", self.stream_id, silent_for)
            self._finish(StreamStatus(StreamState.ABANDONED, tail))
            return
        try:
            ack = protocol.end(log, self.stream_id, token, StreamState.ABANDONED, tail)
        except SeqNumMismatch:
            self._quiet_since = time.monotonic()  # it moved after all: keep reading
            return
        except FencingTokenMismatch as exc:
            if _wire.terminal_state(exc.current_token) is not None:
                # It ended before this reader's position (a cursor beyond the end): that is the outcome.
                self._finish(protocol.read_status(log, self.stream_id, self._default_bound).status)
                return
            self._token, self._bound = exc.current_token, liveness.declared_bound(exc.current_token)
            self._quiet_since = time.monotonic()
            return
        except S2Error as exc:
            logger.warning("could not record stream %r as abandoned: %s", self.stream_id, exc)
        else:
            logger.warning("stream %r was abandoned by its producer; recorded it", self.stream_id)
            tail = ack.end.seq_num
        self._finish(StreamStatus(StreamState.ABANDONED, tail))

    def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()  # from any thread: a next() blocked in it returns

    def _finish(self, status: StreamStatus) -> None:
        """End this reader with ``status``; raise if the stream did not end well."""
        self.status = status
        self._end_session()
        self._live = None
        producer = self._producer
        if producer is not None and producer.error is not None:
            raise producer.error  # the creator sees the source's own exception
        if status.state is StreamState.FAILED:
            raise StreamFailed(self.stream_id, status.error or "unknown error")
        if status.state is StreamState.ABANDONED:
            raise StreamAbandoned(self.stream_id)
