"""MemoryStream: one S2 stream in memory, with S2's exact semantics, behind a lock of its own.

:class:`~resumable_stream.MemoryLog` (the embedded default and the engine's
test double) keeps its streams in this class, and so does the local
S2-compatible server (:mod:`resumable_stream.testing`): both serve exactly the
same semantics.

What it reproduces exactly: sequence numbers from 0; fencing (absent token =
no check, ``""`` = "not fenced", else must equal the current token; the check
runs before ``match_seq_num``); fence and trim command records; timestamps
(arrival time in ms, client timestamps capped and made monotonic per the
stream's ``timestamping`` mode); the 416 rules of reads; long-polls that wake
as soon as records land; read sessions with heartbeats and S2's ``wait``
rules. Not reproduced: retention (:class:`~resumable_stream.MemoryLog` forgets
whole streams instead: :meth:`MemoryStream.expire`) and encryption.
"""

from __future__ import annotations

import bisect
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from itertools import repeat

from .batch_rules import check_batch, invalid
from .exceptions import (
    BadRequest,
    FencingTokenMismatch,
    NotFound,
    RangeNotSatisfiable,
    S2Error,
    SeqNumMismatch,
    Unavailable,
)
from .log import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_READ_WAIT,
    AppendAck,
    ReadBatch,
    ReadSession,
    Record,
    SequencedRecord,
    StreamPosition,
    bodies,
    plain,
    unstamped,
)

__all__ = ["TIMESTAMPING_MODES", "MemoryStream", "closed_error"]

#: The values of a stream's ``timestamping.mode``.
TIMESTAMPING_MODES = ("client-prefer", "client-require", "arrival")

#: Called with a batch about to be committed, the fencing token and the first sequence number after it;
#: raising refuses the batch (nothing changes). Used by the local server's durable store.
Persist = Callable[[Sequence[SequencedRecord], str, int], None]
#: Turns records into bytes kept beside each (the local server caches each record's JSON this way).
Encode = Callable[[Sequence[SequencedRecord]], list[bytes]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def closed_error() -> Unavailable:
    """What an operation on a closed log raises."""
    return Unavailable("the log is closed", code="unavailable")


class _Open:
    """What marks a read session open on a stream (see :meth:`MemoryStream.read_session`)."""

    __slots__ = ("__weakref__",)


class MemoryStream:
    """One stream: its records, tail and fencing token, behind a lock of its own.

    Thread-safe: every method may be called from any thread. Appends, reads
    and long-polls of different streams never wait for each other.

    :param name: the stream's name (for error messages).
    :param heartbeat_interval: seconds between heartbeats of an idle read session.
    :param persist: see :data:`Persist`; ``None`` keeps the stream in memory only.
    :param encode: see :data:`Encode`; :meth:`encoded` returns what it made.
    """

    def __init__(
        self,
        name: str,
        *,
        heartbeat_interval: float = 10.0,
        persist: Persist | None = None,
        encode: Encode | None = None,
    ) -> None:
        self.name = name
        self.heartbeat_interval = heartbeat_interval
        #: ``(mode, uncapped)`` of the stream's ``timestamping`` config; may be replaced at any time.
        self.timestamping: tuple[str, bool] = ("client-prefer", False)
        self._persist = persist
        self._encode = encode
        # Reentrant: a read session dropped unclosed is closed by a garbage collection, which may run inside
        # this lock on the thread that holds it (at any allocation); closing it wakes this condition.
        self._cond = threading.Condition(threading.RLock())
        self._records: list[SequencedRecord] = []
        self._sizes: list[int] = []
        self._encoded: list[bytes] = []
        self._first_seq = 0  # sequence number of _records[0]; moves forward on trim
        self._next_seq = 0
        self._last_timestamp = 0
        self._fencing_token = ""
        self._ended: S2Error | None = None  # raised to every caller once set (closed or deleted)
        self._active = time.monotonic()  # when it was created or last appended to
        self._waiting = 0  # long-polls and sessions waiting on the condition
        self._open: weakref.WeakSet[_Open] = weakref.WeakSet()  # a token per read session open on it

    def __repr__(self) -> str:
        return f"<MemoryStream {self.name!r} tail={self._next_seq}>"

    def after_fork(self) -> None:
        """Give the stream a fresh lock (in a child process, a lock held at fork time stays held)."""
        self._cond = threading.Condition(threading.RLock())

    def restore(
        self, records: Sequence[SequencedRecord], *, next_seq: int, last_timestamp: int, fencing_token: str
    ) -> None:
        """Load saved state into a new, empty stream (the durable store does this at start-up)."""
        with self._cond:
            self._records = list(records)
            self._sizes = [record.metered_size for record in records]
            if self._encode is not None:
                self._encoded = self._encode(records)
            self._first_seq = records[0].seq_num if records else next_seq
            self._next_seq = next_seq
            self._last_timestamp = last_timestamp
            self._fencing_token = fencing_token

    def end(self, error: S2Error) -> None:
        """Refuse every later call with ``error`` and end the long-polls and sessions waiting now."""
        with self._cond:
            if self._ended is None:
                self._ended = error
            self._cond.notify_all()

    @property
    def active(self) -> float:
        """When the stream was created or last appended to (``time.monotonic()``)."""
        return self._active

    def expire(self, cutoff: float) -> bool:
        """Delete the stream, records and all, if nothing was appended to it since ``cutoff`` (a
        ``time.monotonic()``) and no read session or long-poll is open on it; returns whether it did.

        Every later call on a deleted stream raises :class:`NotFound`: its owner forgets it.
        """
        with self._cond:
            if self._ended is not None or self._active >= cutoff or self._waiting or self._open:
                return False
            self._ended = NotFound(f"stream `{self.name}` not found", status=404, code="stream_not_found")
            return True

    def _wait(self, timeout: float) -> None:
        """Wait for an append or :meth:`end`, at most ``timeout`` seconds. Call with the lock held."""
        self._waiting += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._waiting -= 1

    @property
    def fencing_token(self) -> str:
        return self._fencing_token

    def check_tail(self) -> StreamPosition:
        """The next sequence number and the last record's timestamp (``0, 0`` for an empty stream)."""
        with self._cond:
            self._check_alive()
            return StreamPosition(self._next_seq, self._last_timestamp)

    # -- append ----------------------------------------------------------

    def append(
        self,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
        sizes: Sequence[int] | None = None,
    ) -> AppendAck:
        """Append one batch atomically (at most 1000 records and 1 MiB: see :func:`check_batch`).

        ``sizes`` are the records' metered sizes, when the caller has them.
        """
        sizes = check_batch(records, sizes)
        mode, uncapped = self.timestamping
        if mode == "client-require" and any(r.timestamp is None for r in records):
            raise invalid("record timestamp was required but was missing")
        with self._cond:
            self._check_alive()
            if fencing_token is not None and fencing_token != self._fencing_token:
                raise FencingTokenMismatch(self._fencing_token)
            start_seq = self._next_seq
            if match_seq_num is not None and match_seq_num != start_seq:
                raise SeqNumMismatch(start_seq)
            arrival = _now_ms()
            last = self._last_timestamp
            token = self._fencing_token
            first = self._first_seq
            new, cls = tuple.__new__, SequencedRecord  # the tuple's own constructor: a third of the named one's
            if plain(records) and (mode == "arrival" or unstamped(records)):
                # Nearly every batch: plain records, all stamped on arrival; sequenced in C.
                last = max(arrival, last)
                sequenced = list(map(new, repeat(cls), zip(range(start_seq, start_seq + len(records)), repeat(last),
                                                           bodies(records), repeat(()))))
            else:
                sequenced = []
                for offset, record in enumerate(records):
                    timestamp = record.timestamp
                    if timestamp is None or mode == "arrival" or (not uncapped and timestamp > arrival):
                        timestamp = arrival
                    if timestamp < last:
                        timestamp = last
                    last = timestamp
                    seq_num = start_seq + offset
                    headers = record.headers
                    sequenced.append(new(cls, (seq_num, timestamp, record.body, headers)))
                    if len(headers) == 1 and headers[0][0] == b"":
                        if headers[0][1] == b"fence":
                            token = record.body.decode()
                        else:  # trim; check_batch allows no other command
                            first = max(first, min(int.from_bytes(record.body, "big"), seq_num + 1))
            end = start_seq + len(sequenced)
            if self._persist is not None:
                self._persist(sequenced, token, first)
            self._records.extend(sequenced)
            self._sizes.extend(sizes)
            if self._encode is not None:
                self._encoded.extend(self._encode(sequenced))
            self._next_seq = end
            self._last_timestamp = last
            self._active = time.monotonic()
            self._fencing_token = token
            if first > self._first_seq:
                cut = first - self._first_seq
                del self._records[:cut], self._sizes[:cut], self._encoded[:cut]
                self._first_seq = first
            if self._waiting:
                self._cond.notify_all()
        tail = StreamPosition(end, last)
        return AppendAck(StreamPosition(start_seq, sequenced[0].timestamp), tail, tail)

    # -- reads -----------------------------------------------------------

    def read(
        self,
        *,
        seq_num: int | None = None,
        timestamp: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        until: int | None = None,
        wait: float | None = None,
        clamp: bool = False,
    ) -> ReadBatch:
        """A unary read: see :meth:`MemoryLog.read`."""
        limit_count = min(MAX_BATCH_RECORDS if count is None else count, MAX_BATCH_RECORDS)
        limit_bytes = min(MAX_BATCH_BYTES if bytes is None else bytes, MAX_BATCH_BYTES)
        wait_s = min(wait or 0, MAX_READ_WAIT)
        with self._cond:
            start = self._start(seq_num, timestamp, tail_offset, until, clamp, may_follow=wait_s > 0)
            if start < self._next_seq:
                return ReadBatch(self._collect(start, limit_count, limit_bytes, until))
            deadline = time.monotonic() + wait_s
            while self._next_seq <= start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ReadBatch(())
                self._wait(remaining)
                self._check_alive()
            records = self._collect(start, limit_count, limit_bytes, until)
            return ReadBatch(records, StreamPosition(self._next_seq, self._last_timestamp))

    def read_session(
        self,
        *,
        seq_num: int | None = None,
        timestamp: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        until: int | None = None,
        wait: float | None = None,
        clamp: bool = False,
    ) -> ReadSession:
        """A streaming read: see :meth:`MemoryLog.read_session`. Any thread may close it.

        The session counts as open (see :meth:`expire`) from this call until it ends, is closed, or is
        dropped: its token is held by the session alone, and leaves the stream's weak set when the
        session does, with no callback that takes a lock (a garbage collection may run anywhere, this
        stream's lock held or not). On a deleted stream this raises :class:`NotFound` at once.
        """
        token = _Open()
        with self._cond:
            self._check_alive()
            self._open.add(token)

        def interrupt() -> None:
            self._open.discard(token)
            self._wake()

        return ReadSession(
            lambda cancelled: self._held(self._session(seq_num, timestamp, tail_offset, count, bytes, until, wait,
                                                       clamp, cancelled), token),
            interrupt,
        )

    def _held(self, items: Iterator[ReadBatch | StreamPosition],
              token: _Open) -> Generator[ReadBatch | StreamPosition, None, None]:
        try:
            yield from items
        finally:
            self._open.discard(token)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _session(
        self,
        seq_num: int | None,
        timestamp: int | None,
        tail_offset: int | None,
        count: int | None,
        bytes: int | None,
        until: int | None,
        wait: float | None,
        clamp: bool,
        cancelled: threading.Event,
    ) -> Generator[ReadBatch | StreamPosition, None, None]:
        bounded = count is not None or bytes is not None or until is not None
        if wait is None and bounded:
            wait = 0  # S2's default: a bounded session does not wait at the tail
        # As in s2-lite: an unbounded session may follow the tail; a bounded one only with a wait.
        follow = not bounded or bool(wait)
        with self._cond:
            start = self._start(seq_num, timestamp, tail_offset, until, clamp, may_follow=follow)
        left_count = count
        left_bytes = bytes
        caught_up = False
        deadline: float | None = None  # when the session ends without a record; None: never
        while left_count != 0 and left_bytes != 0:
            limit_count = MAX_BATCH_RECORDS if left_count is None else min(left_count, MAX_BATCH_RECORDS)
            limit_bytes = MAX_BATCH_BYTES if left_bytes is None else min(left_bytes, MAX_BATCH_BYTES)
            heartbeat: StreamPosition | None = None
            with self._cond:
                if cancelled.is_set():  # under the lock: a close is either seen here or wakes the wait below
                    return
                self._check_alive()
                if start >= self._next_seq:
                    if not follow:
                        return
                    if deadline is None and wait is not None:
                        deadline = time.monotonic() + wait
                    if caught_up:  # wait for records, a heartbeat's time, or the deadline
                        timeout = self.heartbeat_interval
                        if deadline is not None:
                            timeout = min(timeout, deadline - time.monotonic())
                        if timeout > 0:
                            self._wait(timeout)
                        if cancelled.is_set():
                            return
                        self._check_alive()
                    if deadline is not None and time.monotonic() >= deadline and start >= self._next_seq:
                        return
                    if start >= self._next_seq:
                        caught_up = True
                        heartbeat = StreamPosition(self._next_seq, self._last_timestamp)
                if heartbeat is None:
                    records = self._collect(start, limit_count, limit_bytes, until)
                    tail = StreamPosition(self._next_seq, self._last_timestamp) if caught_up else None
                    if not records:
                        return  # stopped by `until`
            if heartbeat is not None:
                yield heartbeat
                continue
            start = records[-1].seq_num + 1
            if left_count is not None:
                left_count -= len(records)
            if left_bytes is not None:
                left_bytes -= sum(r.metered_size for r in records)
            if wait is not None:
                deadline = time.monotonic() + wait
            yield ReadBatch(records, tail)
            if until is not None and records[-1].timestamp >= until:
                return

    def encoded(self, records: Sequence[SequencedRecord]) -> list[bytes] | None:
        """What ``encode`` made of ``records`` (consecutive, as a read returned them); ``None`` once trimmed away."""
        if not records or self._encode is None:
            return None
        with self._cond:
            index = records[0].seq_num - self._first_seq
            end = index + len(records)
            if index < 0 or end > len(self._records) or self._records[index] is not records[0]:
                return None
            return self._encoded[index:end]

    def _check_alive(self) -> None:
        if self._ended is not None:
            raise self._ended

    def _start(
        self,
        seq_num: int | None,
        timestamp: int | None,
        tail_offset: int | None,
        until: int | None,
        clamp: bool,
        *,
        may_follow: bool,
    ) -> int:
        """Resolve where a read starts, applying S2's 416 rules. Call with the lock held."""
        if sum(x is not None for x in (seq_num, timestamp, tail_offset)) > 1:
            raise invalid("only one of seq_num, timestamp, or tail_offset can be provided")
        if timestamp is not None and until is not None and timestamp >= until:
            raise invalid("start `timestamp` exceeds or equal to `until`")
        named = {"seq_num": seq_num, "timestamp": timestamp, "tail_offset": tail_offset, "until": until}
        for what, value in named.items():
            if value is not None and value < 0:
                raise BadRequest(f"invalid {what}: {value}", status=400, code="bad_query")
        self._check_alive()
        tail = StreamPosition(self._next_seq, self._last_timestamp)
        if seq_num is not None:
            beyond = seq_num > tail.seq_num
            start = seq_num
        elif timestamp is not None:
            beyond = timestamp > tail.timestamp
            start = self._first_seq + bisect.bisect_left(self._records, timestamp, key=lambda r: r.timestamp)
        else:
            beyond = False
            start = max(tail.seq_num - (tail_offset or 0), 0)
        if beyond:
            if not clamp:
                raise RangeNotSatisfiable(tail)
            start = tail.seq_num
        start = max(start, self._first_seq)
        if start >= tail.seq_num and not may_follow:
            raise RangeNotSatisfiable(tail)
        return start

    def _collect(self, start: int, count: int, limit_bytes: int, until: int | None) -> tuple[SequencedRecord, ...]:
        """Records from ``start`` within the limits. Call with the lock held."""
        index = max(start - self._first_seq, 0)
        end = min(index + count, len(self._records))
        sizes = self._sizes
        # The common case, a batch within the byte limit, summed at once; else record by record.
        stop = end if sum(sizes[index:end]) <= limit_bytes else index
        used = 0
        while stop < end:
            used += sizes[stop]
            if used > limit_bytes:
                break
            stop += 1
        records = self._records[index:stop]
        if until is not None:
            cut = bisect.bisect_left(records, until, key=lambda r: r.timestamp)
            records = records[:cut]
        return tuple(records)
