"""MemoryLog: an in-process log of S2 streams, the embedded default and the engine's test double.

Each stream is a :class:`~resumable_stream.memory_stream.MemoryStream` with a
lock of its own; this module adds what spans streams: creating them on first
use, forgetting them once idle for a retention, closing them all, and
splitting large appends into S2-sized batches.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from ._fork import reset_after_fork
from .batch_rules import invalid
from .exceptions import BadRequest, NotFound
from .log import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    AppendAck,
    ReadBatch,
    ReadSession,
    Record,
    StreamPosition,
    append_in_batches,
    validate_stream_name,
)
from .memory_stream import MemoryStream, closed_error

__all__ = ["DEFAULT_RETENTION", "MemoryLog"]

T = TypeVar("T")

#: Seconds an idle stream is kept by default: a day, as Vercel's resumable-stream keeps a finished stream.
DEFAULT_RETENTION = 24 * 60 * 60.0
#: Seconds between two sweeps for idle streams, at least (shorter retentions sweep ten times per retention).
_SWEEP_INTERVAL = 60.0


class MemoryLog:
    """An in-memory log of S2 streams, for one process.

    Implements :class:`~resumable_stream.log.Log`. Thread-safe: every method
    may be called from any thread; each stream has its own lock, so appends,
    reads and long-polls of different streams never wait for each other.

    A stream nothing has been appended to for ``retention`` seconds, and that
    no read session or long-poll is open on, is deleted, records and all, and
    its id is free again: a finished stream is forgotten a day after its last
    record by default (as Vercel's resumable-stream lets its keys expire), so
    the memory a process holds is bounded by what it streams in a retention.
    A stream is forgotten whole, never in part, so a reader never finds one
    with its beginning gone. (S2 trims record by record, after its basin's
    ``retention_policy.age``, seven days by default.) Idle streams are looked
    for at most once a minute (ten times per ``retention`` when that is
    shorter), by whichever call finds it due, on its thread: a log no one calls
    keeps its streams until it is called again. A session counts as open until
    it ends or is closed or collected (one dropped inside a reference cycle:
    until the garbage collector frees it).

    :param create_stream_on_append: an append to a missing stream creates it.
    :param create_stream_on_read: a read or tail check of a missing stream creates it.
    :param heartbeat_interval: seconds between heartbeats of an idle read session.
    :param retention: seconds an idle stream is kept; ``None`` keeps every stream for as long as the log lives.
    """

    def __init__(
        self,
        *,
        create_stream_on_append: bool = True,
        create_stream_on_read: bool = True,
        heartbeat_interval: float = 10.0,
        retention: float | None = DEFAULT_RETENTION,
    ) -> None:
        if retention is not None and not 0 < retention < math.inf:
            raise ValueError(f"retention must be a positive, finite number of seconds or None, not {retention!r}")
        self.create_stream_on_append = create_stream_on_append
        self.create_stream_on_read = create_stream_on_read
        self.heartbeat_interval = heartbeat_interval
        self._retention = retention
        self._lock = threading.Lock()  # guards creating, forgetting and closing streams, never a stream's records
        self._streams: dict[str, MemoryStream] = {}
        self._closed = False
        self._sweeping = threading.Lock()  # one sweep at a time
        self._sweep_interval = _SWEEP_INTERVAL if retention is None else min(_SWEEP_INTERVAL, retention / 10)
        self._next_sweep = time.monotonic() + self._sweep_interval
        reset_after_fork(self._after_fork)

    def __repr__(self) -> str:
        return f"<MemoryLog streams={len(self._streams)}>"

    @property
    def retention(self) -> float | None:
        """Seconds an idle stream is kept (``None``: for good)."""
        return self._retention

    def __len__(self) -> int:
        """How many streams exist."""
        return len(self._streams)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._sweeping = threading.Lock()
        for stream in list(self._streams.values()):
            stream.after_fork()

    def _on(self, name: str, create: bool, operation: Callable[[MemoryStream], T]) -> T:
        """Run ``operation`` on stream ``name``, or on the one that replaces it if it was deleted meanwhile."""
        if self._retention is not None and time.monotonic() >= self._next_sweep:
            self._sweep(self._retention)
        while True:
            stream = self._stream(name, create=create)  # NotFound for a missing stream the call may not create
            try:
                return operation(stream)
            except NotFound:  # deleted after the lookup: idle for a retention, so the next lookup finds another
                self._forget(name, stream)

    def _sweep(self, retention: float) -> None:
        """Delete and forget the streams idle for a retention (see the class docstring)."""
        if not self._sweeping.acquire(blocking=False):
            return  # another thread is at it
        try:
            now = time.monotonic()
            self._next_sweep = now + self._sweep_interval
            cutoff = now - retention
            for name, stream in list(self._streams.items()):
                if stream.active < cutoff and stream.expire(cutoff):  # a look without a lock first
                    self._forget(name, stream)
        finally:
            self._sweeping.release()

    def _forget(self, name: str, stream: MemoryStream) -> None:
        with self._lock:
            if self._streams.get(name) is stream:
                del self._streams[name]

    def _stream(self, name: str, *, create: bool) -> MemoryStream:
        stream = self._streams.get(name)
        if stream is not None:
            return stream
        validate_stream_name(name)
        if self._closed:
            raise closed_error()
        if not create:
            raise NotFound(f"stream `{name}` not found", status=404, code="stream_not_found")
        with self._lock:
            if self._closed:
                raise closed_error()
            stream = self._streams.get(name)
            if stream is None:
                stream = self._streams[name] = MemoryStream(name, heartbeat_interval=self.heartbeat_interval)
            return stream

    def ensure_stream(self, stream: str) -> None:
        """Create ``stream`` if it does not exist."""
        self._stream(stream, create=True)

    def close(self) -> None:
        """Refuse further operations and end every long-poll and read session."""
        with self._lock:
            self._closed = True
            streams = list(self._streams.values())
        for stream in streams:
            stream.end(closed_error())

    def append(
        self,
        stream: str,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
        timeout: float | None = None,
    ) -> AppendAck:
        """Append ``records``; see :meth:`Log.append <resumable_stream.log.Log.append>`.

        More than 1000 records or 1 MiB are appended as consecutive atomic
        batches, as :class:`~resumable_stream.S2Client` does. It never waits,
        so ``timeout`` has nothing to bound.
        """
        if not records:
            raise invalid("record batch must not be empty")
        if fencing_token is not None and len(fencing_token.encode()) > MAX_FENCING_TOKEN_BYTES:
            raise BadRequest(
                f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes", status=400, code="bad_json"
            )
        if len(records) <= MAX_BATCH_RECORDS:
            sizes = [record.metered_size for record in records]
            if sum(sizes) <= MAX_BATCH_BYTES:  # one batch, the common case
                return self._on(stream, self.create_stream_on_append, lambda target: target.append(
                    records, match_seq_num=match_seq_num, fencing_token=fencing_token, sizes=sizes))
        return append_in_batches(
            records,
            match_seq_num,
            lambda batch, match: self._on(stream, self.create_stream_on_append, lambda target: target.append(
                batch, match_seq_num=match, fencing_token=fencing_token)),
        )

    def check_tail(self, stream: str) -> StreamPosition:
        """The next sequence number and the last record's timestamp (``0, 0`` for an empty stream)."""
        return self._on(stream, self.create_stream_on_read, MemoryStream.check_tail)

    def read(
        self,
        stream: str,
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
        """A unary read; see :meth:`Log.read <resumable_stream.log.Log.read>`.

        At most 1000 records and 1 MiB are returned, and ``wait`` is capped at
        60 seconds. A read that starts before the tail returns at once with
        what is there; one that starts at the tail waits up to ``wait`` seconds
        for the first records, and returns an empty batch if none arrive.
        """
        return self._on(stream, self.create_stream_on_read, lambda target: target.read(
            seq_num=seq_num,
            timestamp=timestamp,
            tail_offset=tail_offset,
            count=count,
            bytes=bytes,
            until=until,
            wait=wait,
            clamp=clamp,
        ))

    def read_session(
        self,
        stream: str,
        *,
        seq_num: int | None = None,
        timestamp: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        until: int | None = None,
        wait: float | None = None,
        clamp: bool = False,
        text: bool = False,
    ) -> ReadSession:
        """A streaming read, as S2's SSE and S2S sessions serve it.

        Yields :class:`ReadBatch` objects (never empty, at most 1000 records
        and 1 MiB each) and, while following the tail, heartbeats as
        :class:`StreamPosition` tails: one as soon as the session catches up,
        then one whenever ``heartbeat_interval`` passes without records.

        ``wait`` bounds the time between records once at the tail: the
        session ends when ``wait`` seconds pass without one (``wait=0`` ends
        it at the tail). It defaults to 0 when ``count``, ``bytes`` or
        ``until`` is given, and to "follow forever" otherwise. The session
        also ends when ``count``/``bytes``/``until`` is reached. A missing
        stream raises :class:`NotFound` at once (a closed log :class:`Unavailable`), other errors
        found before the first record (416, 422) the first ``next()``. Any thread may close the
        session (:class:`~resumable_stream.log.ReadSession`).
        Records are bytes in memory, so ``text`` changes nothing.
        """
        return self._on(stream, self.create_stream_on_read, lambda target: target.read_session(
            seq_num=seq_num,
            timestamp=timestamp,
            tail_offset=tail_offset,
            count=count,
            bytes=bytes,
            until=until,
            wait=wait,
            clamp=clamp,
        ))
