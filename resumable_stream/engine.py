"""The engine: :class:`ResumableStreamContext` and :class:`ResumableStream`.

Creating a stream claims it on the log with a conditional fence, so exactly
one creator (thread, process or machine) runs the source. The winner's source
runs on a daemon thread; every chunk goes to the creator's iterator at once,
through an in-memory queue, and to a daemon writer thread that appends it to
the log in batches, fenced and with ``match_seq_num``. Everybody else, and
anybody later, reads the log: from the start, or strictly after a cursor, then
long-polling until the stream's terminal record. A client that goes away
never stops the source; :meth:`ResumableStreamContext.stop_stream` does,
from any process.

The record layout on the log is described in ``resumable_stream/_wire.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from . import _wire
from ._fork import reset_after_fork
from .exceptions import (
    ConfigurationError,
    FencingTokenMismatch,
    NotFound,
    RangeNotSatisfiable,
    ResumableStreamError,
    S2Error,
    SeqNumMismatch,
    StreamAbandoned,
    StreamFailed,
)
from .log import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_READ_WAIT, AppendAck, Log, Record, validate_stream_name
from .memory import MemoryLog

__all__ = ["ResumableStream", "ResumableStreamContext", "StreamState", "StreamStatus"]

logger = logging.getLogger(__name__)

Chunk = TypeVar("Chunk", str, bytes)
T = TypeVar("T")

# Largest data record body. A full record with its headers and the stream's terminal fence (at most
# 8 + 2 + 5 + 36 bytes) must still fit the 1 MiB of one read, which stream_status relies on.
_MAX_CHUNK_BYTES = MAX_BATCH_BYTES - 128
# Seconds to keep trying to fence a stream whose producer keeps writing.
_FENCE_PATIENCE = 10.0
# Largest sequence number a cursor may name.
_MAX_CURSOR = 2**63 - 1
# Most bytes waiting to be written before the source is paused (backpressure on a source faster than the log).
_MAX_PENDING_BYTES = 4 * MAX_BATCH_BYTES
# Longest a thread waits on a condition before it checks again (every notification also wakes it).
_RECHECK = 1.0
_S2_SETTINGS = ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT")


class StreamState(str, Enum):
    """Where a resumable stream is in its life."""

    MISSING = "missing"  #: nothing was ever written under this id
    ACTIVE = "active"  #: a producer is writing it
    COMPLETED = "completed"  #: the source ran to its end
    FAILED = "failed"  #: the source raised an exception
    STOPPED = "stopped"  #: :meth:`~ResumableStreamContext.stop_stream` ended it
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


def describe_failure(exc: BaseException) -> str:
    """The message recorded for a source that raised ``exc``: ``"ValueError: boom"``."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


def _setting(argument: str, value: float | None, variable: str, default: float, low: float, high: float) -> float:
    """A number from the constructor argument, or else the environment variable, or else the default."""
    name = argument
    if value is None:
        name = variable
        raw = os.environ.get(variable, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(variable, f"must be a number, not {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigurationError(name, f"must be a number from {low:g} to {high:g}, not {value!r}")
    return value


def _split(value: str | bytes) -> list[tuple[str | bytes, bytes]]:
    """Split a chunk into pieces whose bodies fit a record: ``(piece, encoded piece)`` pairs.

    Text that is not valid Unicode (lone surrogates) gets U+FFFD in their place, for the creator and
    every reader alike.
    """
    if isinstance(value, bytes):
        slices = (value[i : i + _MAX_CHUNK_BYTES] for i in range(0, len(value), _MAX_CHUNK_BYTES))
        return [(piece, piece) for piece in slices]
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        data = value.encode("utf-8")
    if len(data) <= _MAX_CHUNK_BYTES:
        return [(value, data)]
    pieces: list[tuple[str | bytes, bytes]] = []
    start = 0
    while start < len(data):
        end = min(start + _MAX_CHUNK_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # do not cut a character in two
            end -= 1
        pieces.append((data[start:end].decode("utf-8"), data[start:end]))
        start = end
    return pieces


class _LiveBuffer:
    """Chunks waiting for the creator's iterator. Guarded by the producer's condition."""

    __slots__ = ("items", "overflowed", "size")

    def __init__(self) -> None:
        self.items: deque[tuple[int, str | bytes, int]] = deque()
        self.size = 0
        self.overflowed = False

    def put(self, seq_num: int, chunk: str | bytes, size: int, limit: int) -> None:
        if self.overflowed:
            return
        if self.items and self.size + size > limit:
            # The reader is not keeping up: drop the queue; it will read the rest from the log.
            self.items.clear()
            self.size = 0
            self.overflowed = True
            return
        self.items.append((seq_num, chunk, size))
        self.size += size

    def keep_before(self, seq_num: int) -> None:
        """Drop the chunks at or after ``seq_num``."""
        while self.items and self.items[-1][0] >= seq_num:
            self.size -= self.items.pop()[2]


class _Producer:
    """Runs one stream's source and writes it to the log, on two daemon threads.

    The source thread pulls the source and queues every chunk, with the
    sequence number it will have, for the writer and the live reader. The
    writer thread appends queued records in batches and heartbeats while the
    source is idle. Everything below is guarded by :attr:`cond`.
    """

    def __init__(self, ctx: ResumableStreamContext, stream_id: str, token: str,
                 source: Iterable[Any] | Callable[[], Iterable[Any]]) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.token = token
        self.cond = threading.Condition()
        self.pending: deque[tuple[int, Record, float]] = deque()  # (sequence number, record, queued at)
        self.pending_bytes = 0
        self.next_seq = 1  # the claim is record 0
        # End of the last successful append: the claim, backdated by the linger so the first chunk goes out at once.
        self.last_append = time.monotonic() - ctx.linger
        self.buffers: list[_LiveBuffer] = []
        self.finishing: StreamState | None = None  # the outcome being recorded
        self.terminal_seq: int | None = None
        self.message: str | None = None
        self.outcome: StreamStatus | None = None  # set once recorded, or once recording is impossible
        self.error: BaseException | None = None  # the source's exception, or why writing failed
        self.done = threading.Event()
        self._source = source
        self._is_bytes: bool | None = None

    def start(self) -> None:
        """Start the source and writer threads, once the claim has landed."""
        name = f"resumable-stream {self.stream_id!r}"
        threading.Thread(target=self._pump, name=f"{name} source", daemon=True).start()
        threading.Thread(target=self._write, name=f"{name} writer", daemon=True).start()

    def discard(self) -> None:
        """The claim was lost: this producer never starts."""
        self.done.set()
        self.ctx._forget(self)

    # -- source thread ---------------------------------------------------

    def _pump(self) -> None:
        iterator: Iterator[Any] | None = None
        try:
            if self.finishing is not None:
                return  # stopped while claiming: never start the work
            source = self._source
            if callable(source) and not isinstance(source, Iterable):
                source = source()
            if not isinstance(source, Iterable) or isinstance(source, (str, bytes)):
                raise TypeError(
                    "make_stream must be an iterable of str or bytes, or a function returning one; "
                    f"got {type(source).__name__}"
                )
            iterator = iter(source)
            for chunk in iterator:
                if not self._offer(chunk):
                    break
        except BaseException as exc:  # the stream fails whatever the source raised
            self._finish(StreamState.FAILED, exc)
        else:
            self._finish(StreamState.COMPLETED)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                try:
                    close()  # after a stop, this cancels the work inside the source (GeneratorExit)
                except Exception:
                    logger.warning("closing the source of stream %r raised", self.stream_id, exc_info=True)

    def _offer(self, chunk: object) -> bool:
        """Queue a chunk; False once the stream is finishing (stopped), so the source is closed."""
        if isinstance(chunk, str):
            is_bytes = False
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            chunk, is_bytes = bytes(chunk), True
        else:
            raise TypeError(f"the stream's source yielded {type(chunk).__name__}; it must yield str or bytes")
        if self._is_bytes is None:
            self._is_bytes = is_bytes
        elif self._is_bytes != is_bytes:
            first, now = ("bytes", "str") if self._is_bytes else ("str", "bytes")
            raise TypeError(f"the stream's source yielded {now} after {first}; a stream carries one or the other")
        pieces = _split(chunk) if chunk else []
        with self.cond:
            while self.pending_bytes > _MAX_PENDING_BYTES and self.finishing is None:
                self.cond.wait(_RECHECK)  # the log is slower than the source: let the writer catch up
            if self.finishing is not None:
                return False
            now_t = time.monotonic()
            for piece, body in pieces:
                seq = self._queue(_wire.data_record(body, is_bytes), now_t)
                for buffer in self.buffers:
                    buffer.put(seq, piece, len(body), self.ctx.live_buffer_bytes)
            self.cond.notify_all()
        return True

    def _queue(self, record: Record, now: float) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.pending.append((seq, record, now))
        self.pending_bytes += record.metered_size
        return seq

    def _finish(self, state: StreamState, exc: BaseException | None = None) -> None:
        """Queue the terminal records for ``state``, unless the stream is already finishing."""
        with self.cond:
            if self.finishing is not None:
                return
            self.finishing = state
            if exc is not None:
                self.error = exc
                self.message = describe_failure(exc)
            now = time.monotonic()
            for record in _wire.terminal_records(state.value, self.message):
                self.terminal_seq = self._queue(record, now)
            self.cond.notify_all()
        if state is StreamState.FAILED:
            logger.info("stream %r failed: %s", self.stream_id, self.message)

    def request_stop(self) -> None:
        """End the stream as stopped: flush what was produced, record the stop, close the source at its next yield."""
        logger.info("stopping stream %r", self.stream_id)
        self._finish(StreamState.STOPPED)

    def abandon(self) -> None:
        """End the stream as abandoned (the process is shutting down before the source finished)."""
        logger.warning("abandoning stream %r: the process is shutting down before its source finished", self.stream_id)
        self._finish(StreamState.ABANDONED)

    # -- writer thread ---------------------------------------------------

    def _write(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self._append(batch)
        except BaseException as exc:  # never leave readers waiting on a dead writer
            logger.exception("the writer of stream %r crashed", self.stream_id)
            self._give_up(exc)

    def _next_batch(self) -> list[tuple[int, Record, float]] | None:
        """Wait until a batch should go out (or a heartbeat is due) and take it; None when done.

        A batch goes out as soon as there is no append in flight and either
        the records are final, the batch is full, or ``linger`` has passed
        since the earlier of the oldest record's arrival and the last append.
        After a quiet spell that means at once; under a steady flow, records
        coalesce for at most ``linger``.
        """
        ctx = self.ctx
        with self.cond:
            while self.outcome is None:
                now = time.monotonic()
                if self.pending:
                    send_at = min(self.pending[0][2], self.last_append) + ctx.linger
                    if self.finishing is not None or len(self.pending) >= ctx.batch_size or now >= send_at:
                        return self._take()
                    self.cond.wait(send_at - now)
                elif now - self.last_append >= ctx.heartbeat_interval:
                    self._queue(_wire.HEARTBEAT, now)
                else:
                    self.cond.wait(self.last_append + ctx.heartbeat_interval - now)
            return None

    def _take(self) -> list[tuple[int, Record, float]]:
        batch: list[tuple[int, Record, float]] = []
        size = 0
        while self.pending and len(batch) < min(self.ctx.batch_size, MAX_BATCH_RECORDS):
            record_size = self.pending[0][1].metered_size
            if batch and size + record_size > MAX_BATCH_BYTES:
                break
            batch.append(self.pending.popleft())
            size += record_size
        self.pending_bytes -= size
        self.cond.notify_all()  # a source paused by backpressure may go on
        return batch

    def _append(self, batch: list[tuple[int, Record, float]]) -> None:
        first = batch[0][0]
        try:
            ack = self.ctx.log.append(
                self.stream_id, [record for _, record, _ in batch], match_seq_num=first, fencing_token=self.token
            )
        except FencingTokenMismatch as exc:
            self._shut_out(exc)
            return
        except Exception as exc:
            self._give_up(exc)
            return
        logger.debug("stream %r: appended %d records at %d", self.stream_id, len(batch), first)
        with self.cond:
            self.last_append = time.monotonic()
            if self.terminal_seq is not None and ack.end.seq_num > self.terminal_seq:
                assert self.finishing is not None
                error = self.message if self.finishing is StreamState.FAILED else None
                self._end(StreamStatus(self.finishing, self.terminal_seq + 1, error))

    def _end(self, outcome: StreamStatus) -> None:
        """Record the final outcome; call with :attr:`cond` held.

        Chunks queued for the creator at or after the terminal record never reached the log (another
        writer fenced the stream, or writing failed): the creator does not get them either.
        """
        self.outcome = outcome
        self.pending.clear()
        self.pending_bytes = 0
        for buffer in self.buffers:
            buffer.keep_before(outcome.tail - 1)
        if self.finishing is None:
            self.finishing = outcome.state
        self.cond.notify_all()
        self.done.set()
        self.ctx._forget(self)

    def _shut_out(self, exc: FencingTokenMismatch) -> None:
        """Someone else fenced the stream: stop_stream gave up waiting for us, or a reader took us for dead."""
        logger.warning("stream %r was ended by another writer (fencing token %r); stopping its source",
                       self.stream_id, exc.current_token)
        try:
            status = self.ctx._status(self.stream_id)[0]
        except Exception:
            status = StreamStatus(StreamState(_wire.terminal_state(exc.current_token) or "failed"), self.next_seq)
        if not status.done:  # a fence this library does not write
            status = StreamStatus(StreamState.FAILED, status.tail, f"fenced by another writer ({exc.current_token!r})")
        with self.cond:
            if status.state is StreamState.ABANDONED:
                self.error = StreamAbandoned(self.stream_id)
            elif status.state is StreamState.FAILED:
                self.error = StreamFailed(self.stream_id, status.error or "ended by another writer")
            self._end(status)

    def _give_up(self, exc: BaseException) -> None:
        """The log cannot be written: end the stream here, and record the failure if the log lets us."""
        message = f"the stream could not be written to the log: {describe_failure(exc)}"
        logger.error("stream %r: %s", self.stream_id, message)
        try:
            ack = self.ctx.log.append(
                self.stream_id, _wire.terminal_records(StreamState.FAILED.value, message), fencing_token=self.token
            )
            tail = ack.end.seq_num
        except Exception:
            tail = self.next_seq
        with self.cond:
            self.error = exc
            self._end(StreamStatus(StreamState.FAILED, tail, message))


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

    Threading: a reader is consumed by one thread at a time; :meth:`close`
    may be called from any thread.
    """

    def __init__(self, ctx: ResumableStreamContext, stream_id: str, *, after: int | None = None,
                 producer: _Producer | None = None, last_progress: float | None = None) -> None:
        self.stream_id = stream_id
        #: How the stream ended; ``None`` until then.
        self.status: StreamStatus | None = None
        self._ctx = ctx
        self._closed = False
        self._last_seq = -1 if after is None else after  # records up to here are consumed
        self._next_read = self._last_seq + 1
        self._records: deque[Any] = deque()
        self._token: str | None = None
        self._error_message: str | None = None
        self._last_progress = time.monotonic() if last_progress is None else last_progress
        self._producer = producer
        self._buffer: _LiveBuffer | None = None
        if producer is not None:
            self._buffer = _LiveBuffer()
            producer.buffers.append(self._buffer)

    def __repr__(self) -> str:
        state = self.status.state.value if self.status else ("live" if self._buffer is not None else "reading")
        return f"<ResumableStream {self.stream_id!r} {state}>"

    def __iter__(self) -> ResumableStream[Chunk]:
        return self

    def __next__(self) -> Chunk:
        event = self._next_event(None)
        if event is None:
            raise StopIteration
        return event[1]

    def events(self) -> Iterator[tuple[str, Chunk]]:
        """Yield ``(cursor, chunk)`` for every chunk; the cursor is an event id such as ``"17"``."""
        while (event := self._next_event(None)) is not None:
            yield str(event[0]), event[1]

    def next_event(self, timeout: float | None = None) -> tuple[str, Chunk] | None:
        """The next ``(cursor, chunk)``, waiting at most ``timeout`` seconds (``None``: until there is one).

        Returns ``None`` when the timeout passes first, when the stream has
        ended (then :attr:`status` is set) or when the reader is closed; a
        failed or abandoned stream raises, as iterating does.
        """
        event = self._next_event(timeout)
        return None if event is None else (str(event[0]), event[1])

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Detach this reader. The stream itself goes on."""
        self._closed = True
        producer, buffer = self._producer, self._buffer
        if producer is not None and buffer is not None:
            with producer.cond:
                if buffer in producer.buffers:
                    producer.buffers.remove(buffer)
                producer.cond.notify_all()

    def __enter__(self) -> ResumableStream[Chunk]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _next_event(self, timeout: float | None) -> tuple[int, Chunk] | None:
        """The next ``(sequence number, chunk)``; None once ended or closed, or when ``timeout`` passes first.

        Raises how the stream failed, once.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status is None and not self._closed:
            if self._buffer is not None:
                event = self._next_live(deadline)
                if event is not None or self._buffer is not None:
                    return event
                continue  # the live queue overflowed: read the rest from the log
            event = self._next_logged(deadline)
            if event is not None or self.status is not None or self._closed:
                return event
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return None

    def _next_live(self, deadline: float | None) -> tuple[int, Chunk] | None:
        producer, buffer = self._producer, self._buffer
        assert producer is not None and buffer is not None
        with producer.cond:
            while not self._closed:
                if buffer.items:
                    seq, chunk, size = buffer.items.popleft()
                    buffer.size -= size
                    self._last_seq = seq
                    return seq, chunk  # type: ignore[return-value]
                if buffer.overflowed or producer.outcome is not None:
                    producer.buffers.remove(buffer)
                    self._buffer = None
                    self._next_read = self._last_seq + 1
                    self._last_progress = time.monotonic()
                    if buffer.overflowed:
                        logger.info("reader of stream %r fell behind; reading the rest from the log", self.stream_id)
                        return None
                    self._finish(producer.outcome)  # type: ignore[arg-type]
                    return None
                remaining = _RECHECK if deadline is None else min(deadline - time.monotonic(), _RECHECK)
                if remaining <= 0:
                    return None
                producer.cond.wait(remaining)
        return None

    def _finish(self, status: StreamStatus) -> None:
        """End this reader with ``status``; raise if the stream did not end well."""
        self.status = status
        producer = self._producer
        if producer is not None and producer.error is not None:
            raise producer.error  # the creator sees the source's own exception
        if status.state is StreamState.FAILED:
            raise StreamFailed(self.stream_id, status.error or "unknown error")
        if status.state is StreamState.ABANDONED:
            raise StreamAbandoned(self.stream_id)

    def _next_logged(self, deadline: float | None) -> tuple[int, Chunk] | None:
        """Read the log: the next chunk, or None when ended or when ``deadline`` passes."""
        ctx, log = self._ctx, self._ctx.log
        while not self._closed and self.status is None:
            while self._records:
                record = self._records.popleft()
                entry = _wire.parse(record)
                if entry.kind == "data":
                    # Only chunks are skipped up to the cursor: a cursor may lie beyond the end of the
                    # stream (the creator gives out cursors before they are durable), and the terminal
                    # record must still end the reader.
                    if record.seq_num <= self._last_seq:
                        continue
                    self._last_seq = record.seq_num
                    return record.seq_num, entry.chunk  # type: ignore[return-value]
                self._last_seq = max(self._last_seq, record.seq_num)
                if entry.kind == "claim":
                    self._token = entry.token
                elif entry.kind == "error":
                    self._error_message = entry.message
                elif entry.kind == "terminal":
                    state = StreamState(entry.state)
                    error = self._error_message if state is StreamState.FAILED else None
                    self._finish(StreamStatus(state, record.seq_num + 1, error))
                    return None
            now = time.monotonic()
            abandon_at = self._last_progress + ctx.abandon_after
            if now >= abandon_at:
                self._mark_abandoned()
                continue
            if deadline is not None and now >= deadline:
                return None
            until = abandon_at if deadline is None else min(deadline, abandon_at)
            wait = max(1, min(MAX_READ_WAIT, math.ceil(until - now)))
            try:
                batch = log.read(self.stream_id, seq_num=self._next_read, wait=wait, clamp=True)
            except RangeNotSatisfiable:
                continue
            if batch.records:
                self._last_progress = time.monotonic()
                self._next_read = batch.records[-1].seq_num + 1
                self._records.extend(batch.records)
        return None

    def _mark_abandoned(self) -> None:
        """Nothing was written for ``abandon_after``: record the stream as abandoned, unless it moved meanwhile."""
        ctx = self._ctx
        producer = self._producer
        if producer is not None and not producer.done.is_set():
            self._last_progress = time.monotonic()  # its producer is alive, in this process
            return
        tail = ctx.log.check_tail(self.stream_id).seq_num
        if tail > self._next_read:
            self._last_progress = time.monotonic()  # records arrived after all
            return
        token = self._token or ctx._claim_token(self.stream_id)
        if token is not None:
            try:
                ack = ctx._write_terminal(self.stream_id, token, StreamState.ABANDONED, tail)
            except SeqNumMismatch:
                self._last_progress = time.monotonic()  # it moved after all: keep reading
                return
            except FencingTokenMismatch as exc:
                if _wire.terminal_state(exc.current_token) is not None:
                    # It ended before this reader's position (a cursor beyond the end): that is the outcome.
                    self._finish(ctx._status(self.stream_id)[0])
                    return
                self._token = exc.current_token
                self._last_progress = time.monotonic()
                return
            except S2Error as exc:
                logger.warning("could not record stream %r as abandoned: %s", self.stream_id, exc)
            else:
                logger.warning("stream %r was abandoned by its producer; recorded it", self.stream_id)
                tail = ack.end.seq_num
        self._finish(StreamStatus(StreamState.ABANDONED, tail))


class ResumableStreamContext:
    """Creates, resumes, inspects and stops resumable streams on one log.

    :param log: where streams live: an :class:`~resumable_stream.S2Client` or
        a :class:`~resumable_stream.MemoryLog`. By default, an ``S2Client``
        configured from the ``S2_*`` environment variables if any is set;
        otherwise a ``MemoryLog`` private to this process (a warning is
        logged, since other processes will not see its streams).
    :param batch_size: most records per append (env ``S2_BATCH_SIZE``, default 100).
    :param linger: seconds records may wait to be batched under a steady
        flow (env ``S2_LINGER_DURATION`` in milliseconds, default 50 ms). It
        is an upper bound: after a quiet spell a chunk is written at once.
    :param abandon_after: seconds without any write after which readers
        consider the producer dead. Producers write a heartbeat after a third
        of this while their source is idle, so an idle source is never taken
        for dead.
    :param stop_timeout: seconds :meth:`stop_stream` waits for the producer to
        record the stop before ending the stream itself.
    :param live_buffer_bytes: most bytes the creator's iterator may fall
        behind before it reads the rest from the log instead of memory.

    Threading: one context serves every thread of a process; all methods are
    thread-safe. It is fork-safe: a child process starts with no producers,
    threads or connections of its parent. :meth:`close` (also called at
    interpreter exit) lets running producers finish within a deadline.
    """

    def __init__(
        self,
        log: Log | None = None,
        *,
        batch_size: int | None = None,
        linger: float | None = None,
        abandon_after: float = 30.0,
        stop_timeout: float = 10.0,
        live_buffer_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        size = _setting("batch_size", batch_size, "S2_BATCH_SIZE", 100, 1, MAX_BATCH_RECORDS)
        if size != int(size):
            raise ConfigurationError("batch_size" if batch_size is not None else "S2_BATCH_SIZE",
                                     f"must be a whole number, not {size!r}")
        self.batch_size = int(size)
        linger_ms = _setting("linger", None if linger is None else linger * 1000, "S2_LINGER_DURATION", 50, 0, 60_000)
        self.linger = linger_ms / 1000
        self.abandon_after = _setting("abandon_after", abandon_after, "", 30, 1, 86_400)
        self.heartbeat_interval = self.abandon_after / 3
        self.stop_timeout = _setting("stop_timeout", stop_timeout, "", 10, 0, 3_600)
        self.live_buffer_bytes = int(_setting("live_buffer_bytes", live_buffer_bytes, "", 0, 1, 2**40))
        self._owns_log = log is None
        self.log: Log = log if log is not None else self._default_log()
        self._lock = threading.Lock()
        self._producers: dict[tuple[str, str], _Producer] = {}  # by (stream id, session token)
        self._watching = False
        self._closed = threading.Event()
        _CONTEXTS.add(self)
        reset_after_fork(self._after_fork)

    @staticmethod
    def _default_log() -> Log:
        if any(os.environ.get(name) for name in _S2_SETTINGS):
            from .s2 import S2Client

            return S2Client()
        logger.warning(
            "S2 is not configured (S2_ACCESS_TOKEN and S2_BASIN are unset): streams live in this process's memory "
            "and other processes cannot resume them"
        )
        return MemoryLog()

    def __repr__(self) -> str:
        return f"<ResumableStreamContext log={self.log!r} producing={len(self._producers)}>"

    def _after_fork(self) -> None:
        # The parent's producers, watcher thread and locks do not exist in the child.
        closed = self._closed.is_set()
        self._lock = threading.Lock()
        self._producers = {}
        self._watching = False
        self._closed = threading.Event()
        if closed:
            self._closed.set()

    def __enter__(self) -> ResumableStreamContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- creating --------------------------------------------------------

    def create_new_resumable_stream(
        self, stream_id: str, make_stream: Iterable[Chunk] | Callable[[], Iterable[Chunk]]
    ) -> ResumableStream[Chunk] | None:
        """Create the stream and start its source, or join the run already in progress.

        ``make_stream`` is an iterable of ``str`` or ``bytes``, or a function
        returning one; only the creator that wins the claim uses it (a loser
        never starts a model call). Returns the creator's live iterator, a
        reader from the start for a loser, or ``None`` if the stream has
        already finished.
        """
        self._check(stream_id)
        self._watch_stops()
        token = _wire.new_token(_wire.SESSION)
        producer = _Producer(self, stream_id, token, make_stream)
        with self._lock:  # registered before claiming, so that no stop request for it can be missed
            if self._closed.is_set():
                raise ResumableStreamError("the context is closed")
            self._producers[stream_id, token] = producer
        try:
            self._claim(stream_id, token)
        except FencingTokenMismatch as exc:
            producer.discard()
            if _wire.terminal_state(exc.current_token) is not None:
                return None
            logger.debug("stream %r is already claimed; joining it", stream_id)
            return ResumableStream(self, stream_id)
        except BaseException:
            producer.discard()
            raise
        logger.info("stream %r created", stream_id)
        stream: ResumableStream[Chunk] = ResumableStream(self, stream_id, after=0, producer=producer)
        producer.start()
        return stream

    def resumable_stream(
        self, stream_id: str, make_stream: Iterable[Chunk] | Callable[[], Iterable[Chunk]]
    ) -> ResumableStream[Chunk] | None:
        """The same operation as :meth:`create_new_resumable_stream`: create, or join the run in progress."""
        return self.create_new_resumable_stream(stream_id, make_stream)

    def _claim(self, stream_id: str, token: str) -> None:
        """Append the fence ``token`` as the stream's first record, or raise FencingTokenMismatch."""
        try:
            self._ensuring(
                stream_id,
                lambda: self.log.append(stream_id, [Record.fence(token)], fencing_token="", match_seq_num=0),
            )
        except FencingTokenMismatch as exc:
            if exc.current_token != token:  # our own fence means our claim landed after all
                raise
        except SeqNumMismatch as exc:
            raise ResumableStreamError(
                f"stream {stream_id!r} holds records that resumable_stream did not write; use another id"
            ) from exc

    def _ensuring(self, stream: str, operation: Callable[[], T]) -> T:
        """Run ``operation``; if ``stream`` does not exist (the basin creates no streams on demand), create it first."""
        try:
            return operation()
        except NotFound:
            self.log.ensure_stream(stream)
            return operation()

    # -- reading ---------------------------------------------------------

    def resume_existing_stream(self, stream_id: str, after: str | int | None = None) -> ResumableStream[Any] | None:
        """A reader of the stream: from its start, or strictly after the cursor ``after``.

        Returns ``None`` when there is nothing for this reader: the stream
        does not exist, or it has finished and no cursor was given, or the
        cursor is at its end. Cursors of chunks are positive, so ``after=0``
        reads a stream from its first chunk even once it has finished. An
        invalid cursor raises :class:`ValueError`.
        """
        self._check(stream_id)
        after_seq = parse_cursor(after)
        status, last_timestamp, recorded = self._status(stream_id)
        if status.state is StreamState.MISSING:
            return None
        if recorded and (after_seq is None or after_seq >= status.tail - 1):
            return None
        # A silent producer counts as silent since its last record, not since this reader came.
        silent_for = max(0.0, time.time() - last_timestamp / 1000)
        last_progress = time.monotonic() - min(silent_for, self.abandon_after)
        return ResumableStream(self, stream_id, after=after_seq, last_progress=last_progress)

    def has_existing_stream(self, stream_id: str) -> Literal[True, "DONE"] | None:
        """``None`` if the stream does not exist, ``True`` while it runs, ``"DONE"`` once it has ended."""
        status = self.stream_status(stream_id)
        if status.state is StreamState.MISSING:
            return None
        return True if status.state is StreamState.ACTIVE else "DONE"

    def stream_status(self, stream_id: str) -> StreamStatus:
        """The stream's state, tail and failure message, from the log (one read)."""
        self._check(stream_id)
        return self._status(stream_id)[0]

    def _status(self, stream_id: str) -> tuple[StreamStatus, int, bool]:
        """The status, the timestamp (ms) of the last record, and whether the outcome is recorded on the log.

        A stream whose producer went silent for ``abandon_after`` is reported
        abandoned before anyone has recorded it so.
        """
        try:
            records = self.log.read(stream_id, tail_offset=2, count=2).records
        except (NotFound, RangeNotSatisfiable):
            return StreamStatus(StreamState.MISSING), 0, False
        if not records:
            return StreamStatus(StreamState.MISSING), 0, False
        last = records[-1]
        entry = _wire.parse(last)
        if entry.kind == "terminal":
            state = StreamState(entry.state)
            error = None
            if state is StreamState.FAILED and len(records) == 2:
                error = _wire.parse(records[0]).message
            return StreamStatus(state, last.seq_num + 1, error), last.timestamp, True
        silent_ms = time.time() * 1000 - last.timestamp
        state = StreamState.ABANDONED if silent_ms > self.abandon_after * 1000 else StreamState.ACTIVE
        return StreamStatus(state, last.seq_num + 1), last.timestamp, False

    def _claim_token(self, stream_id: str) -> str | None:
        """The session token of the stream's claim (its first record), if it has one."""
        try:
            records = self.log.read(stream_id, seq_num=0, count=1).records
        except (NotFound, RangeNotSatisfiable):
            return None
        entry = _wire.parse(records[0]) if records else None
        return entry.token if entry is not None and entry.kind == "claim" else None

    # -- stopping --------------------------------------------------------

    def stop_stream(self, stream_id: str) -> StreamStatus:
        """Stop the stream, from any process; returns its final status.

        The producing process stops pulling the source, writes everything it
        produced so far, records the stop and closes the source (cancelling
        the work in it) at its next yield; every reader then ends. If the
        producer does not record the stop within ``stop_timeout`` (its
        process is gone), the stream is ended here. Stopping a stream that
        does not exist yet records the stop, so a later create returns
        ``None``; stopping a finished stream changes nothing.
        """
        self._check(stream_id)
        status, _, recorded = self._status(stream_id)
        if status.state is StreamState.MISSING:
            with contextlib.suppress(FencingTokenMismatch):  # else a creator got there first: stop its run
                self._claim(stream_id, _wire.new_token(_wire.STOPPED))
            status, _, recorded = self._status(stream_id)
        if recorded:
            return status
        token = self._claim_token(stream_id)
        if token is not None and status.state is StreamState.ACTIVE:
            self._send_stop(stream_id, token)
            if self._await_end(stream_id, status.tail, self.stop_timeout):
                return self.stream_status(stream_id)
            logger.warning("the producer of stream %r did not stop within %.1f s; ending it here",
                           stream_id, self.stop_timeout)
        self._fence(stream_id, token, StreamState.STOPPED)
        return self.stream_status(stream_id)

    def _send_stop(self, stream_id: str, token: str) -> None:
        request = [_wire.stop_request(stream_id, token)]
        self._ensuring(_wire.CONTROL_STREAM, lambda: self.log.append(_wire.CONTROL_STREAM, request))

    def _await_end(self, stream_id: str, position: int, timeout: float) -> bool:
        """Wait up to ``timeout`` for a terminal record at or after ``position``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            wait = max(1, min(MAX_READ_WAIT, math.ceil(remaining)))
            batch = self.log.read(stream_id, seq_num=position, wait=wait, clamp=True)
            for record in batch.records:
                if _wire.parse(record).kind == "terminal":
                    return True
                position = record.seq_num + 1
        return False

    def _fence(self, stream_id: str, token: str | None, state: StreamState) -> None:
        """End the stream in ``state`` at its tail, if it is still held by ``token``; give up if it keeps moving."""
        deadline = time.monotonic() + _FENCE_PATIENCE
        tail = self.log.check_tail(stream_id).seq_num
        while True:
            try:
                self._write_terminal(stream_id, token, state, tail)
                return
            except SeqNumMismatch as exc:
                if time.monotonic() >= deadline:
                    raise ResumableStreamError(f"could not end stream {stream_id!r}: it kept moving") from None
                tail = exc.next_seq_num  # the producer wrote meanwhile; try again at the new tail
            except FencingTokenMismatch:
                return  # it ended meanwhile

    def _write_terminal(self, stream_id: str, token: str | None, state: StreamState, tail: int) -> AppendAck:
        """Append the records that end the stream in ``state``, if ``token`` holds it and its tail is ``tail``."""
        return self.log.append(stream_id, _wire.terminal_records(state.value), fencing_token=token, match_seq_num=tail)

    def _watch_stops(self) -> None:
        """Start the thread that reads stop requests, from the control stream's current tail."""
        with self._lock:
            if self._watching:
                return
            self._watching = True
        try:
            position = self._ensuring(
                _wire.CONTROL_STREAM, lambda: self.log.check_tail(_wire.CONTROL_STREAM).seq_num
            )
        except BaseException:
            with self._lock:
                self._watching = False
            raise
        threading.Thread(target=self._watch, args=(position,), name="resumable-stream stops", daemon=True).start()

    def _watch(self, position: int) -> None:
        """Read stop requests and stop the matching producers of this process, until the context closes."""
        try:
            self._watch_from(position)
        finally:
            with self._lock:
                self._watching = False  # the next create starts another watcher if this one died

    def _watch_from(self, position: int) -> None:
        failures = 0
        while not self._closed.is_set():
            try:
                batch = self.log.read(_wire.CONTROL_STREAM, seq_num=position, wait=10, clamp=True)
            except Exception as exc:  # keep watching whatever happens: a dead watcher would make every stop slow
                if self._closed.is_set():
                    return
                failures += 1
                logger.warning("cannot read stop requests; retrying", exc_info=not isinstance(exc, S2Error))
                self._closed.wait(min(30.0, 0.5 * 2**failures))
                continue
            failures = 0
            for record in batch.records:
                if record.seq_num < position:
                    continue
                position = record.seq_num + 1
                request = _wire.parse_stop_request(record)
                if request is None:
                    continue
                with self._lock:
                    producer = self._producers.get(request)
                if producer is not None:
                    producer.request_stop()

    # -- lifecycle -------------------------------------------------------

    def _forget(self, producer: _Producer) -> None:
        with self._lock:
            self._producers.pop((producer.stream_id, producer.token), None)

    def _check(self, stream_id: str) -> None:
        validate_stream_name(stream_id)
        if stream_id == _wire.CONTROL_STREAM:
            raise ValueError(f"stream id {stream_id!r} is reserved for stop requests")
        if self._closed.is_set():
            raise ResumableStreamError("the context is closed")

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking new streams and let running producers finish, within ``timeout`` seconds.

        Producers whose source has not finished shortly before the deadline
        write out everything produced so far and record the stream as
        abandoned. Then a log this context created is closed. Called at
        interpreter exit for contexts still open.
        """
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            producers = list(self._producers.values())
        deadline = time.monotonic() + timeout
        reserve = min(2.0, timeout / 2)
        for producer in producers:
            producer.done.wait(max(0.0, deadline - reserve - time.monotonic()))
        for producer in producers:
            if not producer.done.is_set():
                producer.abandon()
        for producer in producers:
            if not producer.done.wait(max(0.0, deadline - time.monotonic())):
                logger.error("stream %r could not be written out before the context closed", producer.stream_id)
        if self._owns_log:
            self.log.close()


_CONTEXTS: weakref.WeakSet[ResumableStreamContext] = weakref.WeakSet()


@atexit.register
def _close_contexts() -> None:
    for ctx in list(_CONTEXTS):
        ctx.close()
