"""The producer: one stream's source, run on its own thread, and the records it queues for the writer.

The source thread pulls the source and gives every chunk its sequence number
at once (the claim is record 0), so the creator's reader can be handed the
chunk with its cursor before it is written. Queued records wait for the
context's :class:`~resumable_stream.writer.Writer`, which appends them in
batches: the producer says when its next batch is due (:meth:`Producer.take`)
and learns how each append went (:meth:`Producer.written`,
:meth:`Producer.write_failed`).

Threading: the source thread, the writer's threads and the creator's reader
all meet in one condition per stream, so streams never contend with each
other. The creator's reader takes chunks in bulk (:meth:`Producer.next_live`)
and is woken only while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from . import _wire, liveness
from .chunks import describe_failure, split_chunk
from .exceptions import FencingTokenMismatch, StreamAbandoned, StreamFailed
from .log import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, AppendAck, Log, Record, metered_size
from .protocol import StreamState, StreamStatus, read_status

__all__ = ["Batch", "Producer", "WritePolicy"]

logger = logging.getLogger(__name__)

# Longest pause between two appends of one stream that the duty-cycle rule below may impose.
_MAX_SPACING = 0.25
# Most bytes waiting to be written before the source is paused (backpressure on a source faster than the log).
_MAX_PENDING_BYTES = 4 * MAX_BATCH_BYTES
#: How far (in seconds of production) the creator may run ahead of what the log has taken: past this,
#: while the log does not answer, it is handed only written chunks. So when writing fails for good, the
#: creator has been shown at most this much that no other reader will ever see.
LIVE_LEAD = 5.0
#: What :meth:`Producer.next_live` returns when the creator fell too far behind: it reads the log instead.
OVERFLOWED = "overflowed"


@dataclass(frozen=True)
class WritePolicy:
    """When a producer's queued records go out, how many at once, and for how long an append is tried."""

    #: Most records per append.
    batch_size: int
    #: Longest a record may wait for more to join its batch; 0 sends whenever the writer is free.
    linger: float
    #: Seconds of idleness after which a heartbeat record is written.
    heartbeat_interval: float
    #: Seconds an append is retried before the producer gives up on the stream (see ``liveness.py``).
    append_timeout: float


@dataclass(frozen=True, slots=True)
class Batch:
    """Records to append at ``first_seq``; ``ends`` when they include the stream's terminal record."""

    first_seq: int
    records: list[Record]
    ends: bool


class Producer:
    """One stream's source and its queue of records to write.

    ``schedule(producer, due, entry)`` asks the writer to call :meth:`take`
    with ``entry`` once the monotonic time ``due`` has come; ``on_done`` is
    called once the outcome is settled.
    """

    def __init__(self, stream_id: str, token: str, source: Iterable[Any] | Callable[[], Iterable[Any]], *,
                 log: Log, policy: WritePolicy, live_buffer_bytes: int,
                 schedule: Callable[[Producer, float, int], None], on_done: Callable[[Producer], None],
                 default_bound: float) -> None:
        self.stream_id = stream_id
        self.token = token
        self.policy = policy
        #: Set once the outcome is settled (recorded, or known to be impossible to record).
        self.done = threading.Event()
        #: The source's exception, or why writing failed; raised by the creator's reader.
        self.error: BaseException | None = None
        self._source = source
        self._log = log
        self._live_limit = live_buffer_bytes
        self._schedule_at_writer = schedule
        self._on_done = on_done
        self._default_bound = default_bound
        # Reentrant: a reader dropped unclosed is closed by a garbage collection, which may run inside this
        # lock on the thread that holds it (at any allocation); its detach() then takes the lock again.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._is_bytes: bool | None = None  # set by the first chunk, with the headers of every data record
        self._headers: tuple[tuple[bytes, bytes], ...] = ()
        self._extra = 8
        self._next_seq = 1  # the claim is record 0
        self._pending: list[Record] = []
        self._pending_seq = 1  # sequence number of _pending[0]
        self._pending_bytes = 0
        self._pending_since = 0.0  # when the oldest pending record was queued
        self._in_flight = False
        self._in_flight_since = 0.0  # when the oldest record of the batch in flight was queued
        self._written = 1  # one past the last record known to be on the log
        # When the last append landed: the claim, backdated so that the first chunk goes out at once.
        self._last_write = time.monotonic() - policy.linger
        self._last_took = 0.0  # how long the last append took
        self._append_started = 0.0  # when the append in flight was handed to the writer
        self._entry = 0  # id of the writer's one valid entry for this producer
        self._entry_due: float | None = None  # its due time; None when the writer holds no entry
        self._live: deque[tuple[int, str | bytes, int]] | None = deque()  # (seq, chunk, size) for the creator
        self._live_added = 0  # bytes queued for the creator (by the source thread)
        self._live_taken = 0  # bytes it took (by its thread): no lock needed for either
        self._overflowed = False
        self._waiting_reader = False
        self._waiting_source = False
        self._finishing: StreamState | None = None
        self._terminal_seq = 0  # sequence number of the first terminal record, once queued
        self._message: str | None = None
        self._outcome: StreamStatus | None = None
        #: Chunks at or after this sequence number are not on the log and must not be handed to the creator.
        #: (A plain attribute: the creator's reader looks at it for every chunk.)
        self.cut = math.inf

    def start(self) -> None:
        """Start the source thread, once the claim has landed."""
        liveness.register(self.token)
        threading.Thread(target=self._pump, name=f"resumable-stream {self.stream_id!r}", daemon=True).start()
        self._reschedule_now()

    def discard(self) -> None:
        """The claim was lost: this producer never starts."""
        self.done.set()
        self._on_done(self)

    # -- source thread ---------------------------------------------------

    def _pump(self) -> None:
        iterator: Iterator[Any] | None = None
        try:
            if self._finishing is not None:
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
            if self._is_bytes is not False:
                self._set_kind(False)
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            chunk = bytes(chunk)
            if self._is_bytes is not True:
                self._set_kind(True)
        else:
            raise TypeError(f"the stream's source yielded {type(chunk).__name__}; it must yield str or bytes")
        if not chunk:
            return True
        headers, extra = self._headers, self._extra
        pieces = split_chunk(chunk)
        new = tuple.__new__  # the tuple's own constructor: a third of the named one's cost, for every chunk
        with self._lock:  # the condition's own lock: entering it directly saves a Python call per chunk
            while self._pending_bytes > _MAX_PENDING_BYTES and self._finishing is None:
                self._waiting_source = True  # the log is slower than the source: let the writer catch up
                self._cond.wait()  # taking a batch, finishing and ending notify
            self._waiting_source = False
            if self._finishing is not None:
                return False
            pending, live = self._pending, self._live
            was_empty = not pending
            if was_empty:
                self._pending_seq = self._next_seq
                self._pending_since = time.monotonic()
            for piece, body in pieces:  # the hot path of every chunk: _queue, inlined
                seq = self._next_seq
                self._next_seq = seq + 1
                pending.append(new(Record, (body, headers, None)))
                self._pending_bytes += extra + len(body)
                if live is not None:
                    live.append((seq, piece, len(body)))
                    self._live_added += len(body)
            if live is not None and self._live_added - self._live_taken > self._live_limit and len(live) > 1:
                self._live = None  # the creator is not keeping up: it reads the rest from the log
                self._overflowed = True
            if self._waiting_reader:  # woken once: the flag is set again before it next waits, not per chunk
                self._waiting_reader = False
                self._cond.notify_all()
            # Another record for a queue that already has one moves the next append earlier only once
            # it fills a batch (see _due): otherwise the writer's entry stands.
            if self._in_flight or not (was_empty or self._entry_due is None or len(pending) >= self.policy.batch_size):
                return True
            entry = self._reschedule()
        self._submit(entry)
        return True

    def _set_kind(self, is_bytes: bool) -> None:
        """The first chunk says whether the stream carries text or bytes; a later one of the other kind is an error."""
        if self._is_bytes is not None:
            first, then = ("bytes", "str") if self._is_bytes else ("str", "bytes")
            raise TypeError(f"the stream's source yielded {then} after {first}; a stream carries one or the other")
        self._is_bytes = is_bytes
        self._headers = _wire.BYTES_HEADER if is_bytes else ()
        self._extra = metered_size(b"", self._headers)  # a record's metered size, besides its body

    def _queue(self, record: Record, now: float) -> int:
        """Give ``record`` the next sequence number and queue it; call with the condition held."""
        if not self._pending:
            self._pending_seq = self._next_seq
            self._pending_since = now
        self._pending.append(record)
        self._pending_bytes += record.metered_size
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _finish(self, state: StreamState, exc: BaseException | None = None) -> None:
        """Queue the terminal records for ``state``, unless the stream is already finishing."""
        with self._cond:
            if self._finishing is not None:
                return
            self._finishing = state
            if exc is not None:
                self.error = exc
                self._message = describe_failure(exc)
            now = time.monotonic()
            records = _wire.terminal_records(state.value, self._message)
            self._terminal_seq = self._next_seq
            for record in records:
                self._queue(record, now)
            self._cond.notify_all()
            entry = self._reschedule()
        self._submit(entry)
        if state is StreamState.FAILED:
            logger.info("stream %r failed: %s", self.stream_id, self._message)

    def request_stop(self) -> None:
        """End the stream as stopped: write what was produced, record the stop, close the source at its next yield."""
        logger.info("stopping stream %r", self.stream_id)
        self._finish(StreamState.STOPPED)

    def abandon(self) -> None:
        """End the stream as abandoned (the process is shutting down before the source finished)."""
        logger.warning("abandoning stream %r: the process is shutting down before its source finished", self.stream_id)
        self._finish(StreamState.ABANDONED)

    # -- the writer's side -------------------------------------------------

    def _due(self) -> float | None:
        """When the next append is due (monotonic); None while one is in flight or once done."""
        if self._in_flight or self._outcome is not None:
            return None
        if not self._pending:
            return self._last_write + self.policy.heartbeat_interval
        if self._finishing is not None or len(self._pending) >= self.policy.batch_size:
            return self._pending_since
        # A stream spends at most half its time appending: after an append that took d, the next waits
        # until d has passed (records meanwhile join it). Free for a log that answers at once, it makes a
        # fast source's batches grow with the log's own speed.
        spaced = self._last_write + min(self._last_took, _MAX_SPACING)
        return max(min(self._pending_since, self._last_write) + self.policy.linger, spaced)

    def _reschedule(self) -> tuple[float, int] | None:
        """A new writer entry if the next append is due earlier than the one the writer holds."""
        due = self._due()
        if due is None or (self._entry_due is not None and self._entry_due <= due):
            return None
        self._entry += 1
        self._entry_due = due
        return due, self._entry

    def _submit(self, entry: tuple[float, int] | None) -> None:
        if entry is not None:
            self._schedule_at_writer(self, *entry)

    def _reschedule_now(self) -> None:
        with self._cond:
            entry = self._reschedule()
        self._submit(entry)

    def take(self, entry: int, now: float) -> Batch | None:
        """The batch to append now, for the writer's ``entry``; None if the entry is stale or not due yet."""
        with self._cond:
            if entry != self._entry or self._entry_due is None:
                return None  # superseded by a later entry
            self._entry_due = None
            due = self._due()
            if due is None:
                return None
            if due > now:
                follow_up = self._reschedule()
                batch = None
            else:
                if not self._pending:
                    self._queue(_wire.HEARTBEAT, now)
                batch = self._take_batch()
                follow_up = None
        self._submit(follow_up)
        return batch

    def _take_batch(self) -> Batch:
        """Take the next batch off the queue; call with the condition held."""
        limit = min(self.policy.batch_size, MAX_BATCH_RECORDS)
        size = 0
        count = 0
        for record in self._pending:
            record_size = record.metered_size
            if count == limit or (count and size + record_size > MAX_BATCH_BYTES):
                break
            size += record_size
            count += 1
        records = self._pending[:count]
        del self._pending[:count]
        self._in_flight_since = self._pending_since
        first = self._pending_seq
        self._pending_seq += count
        self._pending_bytes -= size
        self._in_flight = True
        self._append_started = time.monotonic()
        if self._waiting_source:
            self._waiting_source = False
            self._cond.notify_all()  # a source paused by backpressure may go on
        ends = self._finishing is not None and first + count > self._terminal_seq
        return Batch(first, records, ends)

    def written(self, batch: Batch, ack: AppendAck) -> None:
        """``batch`` landed."""
        with self._cond:
            self._in_flight = False
            self._written = ack.end.seq_num
            self._last_write = time.monotonic()
            self._last_took = self._last_write - self._append_started
            if self._waiting_reader:
                self._waiting_reader = False
                self._cond.notify_all()  # a creator held back by LIVE_LEAD may go on
            if batch.ends:
                assert self._finishing is not None
                error = self._message if self._finishing is StreamState.FAILED else None
                self._end(StreamStatus(self._finishing, ack.end.seq_num, error), self._terminal_seq)
                entry = None
            else:
                entry = self._reschedule()
        self._submit(entry)
        if batch.ends:
            self._on_done(self)

    def write_failed(self, batch: Batch, exc: BaseException) -> None:
        """Appending ``batch`` failed for good: the stream ends here (see :meth:`_shut_out` and :meth:`_give_up`)."""
        if isinstance(exc, FencingTokenMismatch):
            self._shut_out(exc)
        else:
            self._give_up(exc)
        self._on_done(self)

    def _shut_out(self, exc: FencingTokenMismatch) -> None:
        """Someone else fenced the stream: stop_stream gave up waiting for us, or a reader took us for dead."""
        logger.warning("stream %r was ended by another writer (fencing token %r); stopping its source",
                       self.stream_id, exc.current_token)
        try:
            status = read_status(self._log, self.stream_id, self._default_bound).status
        except Exception:
            status = StreamStatus(StreamState(_wire.terminal_state(exc.current_token) or "failed"), self._written)
        if not status.done:  # a fence this library does not write
            status = StreamStatus(StreamState.FAILED, status.tail, f"fenced by another writer ({exc.current_token!r})")
        with self._cond:
            if status.state is StreamState.ABANDONED:
                self.error = StreamAbandoned(self.stream_id)
            elif status.state is StreamState.FAILED:
                self.error = StreamFailed(self.stream_id, status.error or "ended by another writer")
            self._end(status, self._written)

    def _give_up(self, exc: BaseException) -> None:
        """The log cannot be written: end the stream here, and record the failure if the log lets us.

        What the creator may still be handed is cut where the log's records end: at the terminal
        records if they land, else at the last record known to be written.
        """
        message = _wire.recordable_message(f"the stream could not be written to the log: {describe_failure(exc)}")
        logger.error("stream %r: %s", self.stream_id, message)
        cut = tail = self._written
        try:
            ack = self._log.append(self.stream_id, _wire.terminal_records(StreamState.FAILED.value, message),
                                   fencing_token=self.token, timeout=self.policy.append_timeout)
        except Exception:
            pass
        else:
            cut, tail = ack.start.seq_num, ack.end.seq_num
        with self._cond:
            self.error = exc
            self._end(StreamStatus(StreamState.FAILED, tail, message), cut)

    def _end(self, outcome: StreamStatus, cut: float) -> None:
        """Settle the outcome; call with the condition held.

        Chunks at or after ``cut`` never reach the creator: its reader drops those it takes from here on.
        """
        self._outcome = outcome
        self.cut = cut
        self._pending.clear()
        self._pending_bytes = 0
        self._in_flight = False
        if self._finishing is None:
            self._finishing = outcome.state
        self._cond.notify_all()
        self.done.set()
        liveness.unregister(self.token)

    # -- the creator's reader ------------------------------------------------

    def next_live(self, deadline: float | None) -> tuple[list[tuple[int, str | bytes, int]], StreamStatus | str | None]:
        """Wait for chunks for the creator, until the monotonic ``deadline``.

        Returns the chunks (``(sequence number, chunk, size)``) taken off the
        live queue, and ``None`` while the stream goes on, the outcome once it is
        settled and every chunk was taken, or :data:`OVERFLOWED` when the
        creator fell behind by more than ``live_buffer_bytes`` (it must read
        the rest from the log).
        """
        chunks = self._take_live()  # without the lock while chunks keep coming: the source never waits for us
        if chunks:
            return chunks, None
        with self._cond:
            while True:
                chunks = self._take_live()
                if chunks:
                    return chunks, None
                if self._overflowed:
                    return [], OVERFLOWED
                if self._outcome is not None and not self._live:
                    return [], self._outcome
                if self._live is None:
                    return [], None  # detached: its reader was closed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return [], None
                # Everything that can change the answer above happens under this lock and notifies a waiting
                # reader (a chunk, an append landing, overflow, the outcome, detach), so the wait needs no
                # timeout of its own: none to wake a thousand idle readers every second, and under gevent
                # no Timeout object per wait.
                self._waiting_reader = True
                self._cond.wait(remaining)
                self._waiting_reader = False

    def _take_live(self) -> list[tuple[int, str | bytes, int]]:
        """Take what the creator may be handed now off the live queue (the deque is safe to pop unlocked)."""
        live = self._live
        if not live:
            return []
        chunks = []
        if not self._leading_too_far():
            with contextlib.suppress(IndexError):
                while True:
                    chunks.append(live.popleft())
        else:
            while live and live[0][0] < self._written:
                chunks.append(live.popleft())
        self._live_taken += sum(chunk[2] for chunk in chunks)
        return chunks

    def _leading_too_far(self) -> bool:
        """True while the oldest record the log has not taken has waited longer than :data:`LIVE_LEAD`."""
        if self._in_flight:
            since = self._in_flight_since
        elif self._pending:
            since = self._pending_since
        else:
            return False
        return time.monotonic() - since > LIVE_LEAD

    def detach(self) -> None:
        """The creator's reader went away (closed, from any thread): stop queueing chunks for it, and wake it."""
        with self._cond:
            self._live = None
            self._cond.notify_all()
