"""MemoryLog: an in-process log with S2's semantics.

It is the embedded default for single-process use, the test double for the
engine, and the storage behind the local S2-compatible server
(:mod:`resumable_stream.testing.server`). It keeps everything in memory and
is shared by the threads of one process only.

What it reproduces exactly: sequence numbers from 0; fencing (absent token =
no check, ``""`` = "not fenced", else must equal the current token; the check
runs before ``match_seq_num``); fence and trim command records; timestamps
(arrival time in ms, client timestamps capped and made monotonic per the
stream's ``timestamping`` config); the 416 rules of reads; long-polls that wake
as soon as records land; read sessions with heartbeats; and the
``create_stream_on_append`` / ``create_stream_on_read`` switches of a basin.
What it does not: retention, encryption, and lite's deferred deletion (a
deleted stream is gone at once).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ._fork import reset_after_fork
from .exceptions import (
    BadRequest,
    Conflict,
    FencingTokenMismatch,
    NotFound,
    RangeNotSatisfiable,
    SeqNumMismatch,
    Unavailable,
)
from .log import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    MAX_READ_WAIT,
    AppendAck,
    ReadBatch,
    Record,
    SequencedRecord,
    StreamPosition,
    append_in_batches,
    validate_stream_name,
)

__all__ = ["MemoryLog", "StreamInfo", "merge_stream_config"]

_TIMESTAMPING_MODES = ("client-prefer", "client-require", "arrival")
_NESTED_CONFIG = ("timestamping", "delete_on_empty")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _invalid(message: str) -> BadRequest:
    return BadRequest(message, status=422, code="invalid")


@dataclass
class StreamInfo:
    """A stream's name, configuration and lifecycle times."""

    name: str
    config: dict[str, Any]
    created_at: datetime


@dataclass
class _Stream:
    info: StreamInfo
    cond: threading.Condition
    records: list[SequencedRecord] = field(default_factory=list)
    first_seq: int = 0  # sequence number of records[0]; moves forward on trim
    next_seq: int = 0
    last_timestamp: int = 0
    fencing_token: str = ""
    deleted: bool = False

    @property
    def tail(self) -> StreamPosition:
        return StreamPosition(self.next_seq, self.last_timestamp)

    def index(self, seq_num: int) -> int:
        return max(seq_num, self.first_seq) - self.first_seq


class MemoryLog:
    """An in-memory log of S2 streams, for one process.

    Implements :class:`~resumable_stream.log.Log`. Thread-safe: every method
    may be called from any thread; long-polls of different streams do not
    wake each other.

    :param create_stream_on_append: an append to a missing stream creates it.
    :param create_stream_on_read: a read or tail check of a missing stream creates it.
    :param default_stream_config: S2 ``StreamConfig`` JSON for new streams.
    :param heartbeat_interval: seconds between heartbeats of an idle read session.
    """

    def __init__(
        self,
        *,
        create_stream_on_append: bool = True,
        create_stream_on_read: bool = True,
        default_stream_config: dict[str, Any] | None = None,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.create_stream_on_append = create_stream_on_append
        self.create_stream_on_read = create_stream_on_read
        self.default_stream_config = dict(default_stream_config or {})
        self.heartbeat_interval = heartbeat_interval
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._closed = False
        reset_after_fork(self._after_fork)

    def __repr__(self) -> str:
        return f"<MemoryLog streams={len(self._streams)}>"

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay held forever in the child.
        self._lock = threading.Lock()
        for stream in self._streams.values():
            stream.cond = threading.Condition(self._lock)

    # -- streams ---------------------------------------------------------

    def _get(self, name: str, *, create: bool) -> _Stream:
        """Look a stream up (creating it if allowed). Call with the lock held."""
        if self._closed:
            raise Unavailable("the log is closed", code="unavailable")
        stream = self._streams.get(name)
        if stream is None:
            if not create:
                raise NotFound(f"stream `{name}` not found", status=404, code="stream_not_found")
            stream = self._new_stream(name, None)
        return stream

    def _new_stream(self, name: str, config: dict[str, Any] | None) -> _Stream:
        merged = merge_stream_config(self.default_stream_config, config or {})
        _check_stream_config(merged)
        info = StreamInfo(name, merged, datetime.now(timezone.utc))
        stream = self._streams[name] = _Stream(info, threading.Condition(self._lock))
        return stream

    def create_stream(self, name: str, config: dict[str, Any] | None = None) -> StreamInfo:
        """Create a stream; :class:`Conflict` if it exists."""
        validate_stream_name(name)
        with self._lock:
            if name in self._streams:
                raise Conflict(f"stream `{name}` already exists", status=409, code="resource_already_exists")
            if self._closed:
                raise Unavailable("the log is closed", code="unavailable")
            return self._new_stream(name, config).info

    def ensure_stream(self, stream: str, config: Mapping[str, Any] | None = None) -> None:
        """Create ``stream`` if it does not exist.

        With ``config`` (S2 ``StreamConfig`` JSON) the stream, new or not, gets
        exactly that config on top of the defaults, as S2's ``PUT`` does.
        """
        validate_stream_name(stream)
        with self._lock:
            if self._closed:
                raise Unavailable("the log is closed", code="unavailable")
            existing = self._streams.get(stream)
            if existing is None:
                self._new_stream(stream, dict(config or {}))
            elif config is not None:
                merged = merge_stream_config(self.default_stream_config, config)
                _check_stream_config(merged)
                existing.info.config = merged

    def stream_info(self, name: str) -> StreamInfo:
        """The stream's info; :class:`NotFound` if it does not exist."""
        with self._lock:
            return self._get(name, create=False).info

    def reconfigure_stream(self, name: str, changes: dict[str, Any]) -> StreamInfo:
        """Apply a ``StreamReconfiguration``; see :func:`merge_stream_config`."""
        with self._lock:
            stream = self._get(name, create=False)
            config = merge_stream_config(stream.info.config, changes)
            _check_stream_config(config)
            stream.info.config = config
            return stream.info

    def delete_stream(self, name: str) -> None:
        """Delete a stream at once; long-polls on it end with :class:`NotFound`."""
        with self._lock:
            stream = self._get(name, create=False)
            del self._streams[name]
            stream.deleted = True
            stream.cond.notify_all()

    def list_streams(self, prefix: str = "", start_after: str = "", limit: int = 1000) -> tuple[list[StreamInfo], bool]:
        """Streams whose names start with ``prefix``, after ``start_after``, in name order; and whether more exist."""
        with self._lock:
            names = sorted(n for n in self._streams if n.startswith(prefix) and n > start_after)
            return [self._streams[n].info for n in names[:limit]], len(names) > limit

    def close(self) -> None:
        """Refuse further operations and end every long-poll."""
        with self._lock:
            self._closed = True
            for stream in self._streams.values():
                stream.cond.notify_all()

    # -- append ----------------------------------------------------------

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
        validate_stream_name(stream)
        if not records:
            raise _invalid("record batch must not be empty")
        if fencing_token is not None and len(fencing_token.encode()) > MAX_FENCING_TOKEN_BYTES:
            raise BadRequest(
                f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes", status=400, code="bad_json"
            )
        return append_in_batches(
            records,
            match_seq_num,
            lambda batch, match: self.append_batch(stream, batch, match_seq_num=match, fencing_token=fencing_token),
        )

    def append_batch(
        self,
        stream: str,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
    ) -> AppendAck:
        """Append one batch atomically, with S2's validation (at most 1000 records and 1 MiB)."""
        if not records:
            raise _invalid("record batch must not be empty")
        if len(records) > MAX_BATCH_RECORDS:
            raise _invalid(f"record batch must not exceed {MAX_BATCH_RECORDS} records")
        sizes = [record.metered_size for record in records]
        if max(sizes) > MAX_BATCH_BYTES:
            raise _invalid("record must have metered size less than 1 MiB")
        if sum(sizes) > MAX_BATCH_BYTES:
            raise _invalid("record batch must not exceed a metered size of 1 MiB")
        for record in records:
            _check_record(record)
        with self._lock:
            target = self._get(stream, create=self.create_stream_on_append)
            if fencing_token is not None and fencing_token != target.fencing_token:
                raise FencingTokenMismatch(target.fencing_token)
            if match_seq_num is not None and match_seq_num != target.next_seq:
                raise SeqNumMismatch(target.next_seq)
            timestamping = target.info.config.get("timestamping") or {}
            mode = timestamping.get("mode") or "client-prefer"
            uncapped = bool(timestamping.get("uncapped"))
            if mode == "client-require" and any(r.timestamp is None for r in records):
                raise _invalid("record timestamp was required but was missing")
            arrival = _now_ms()
            start_seq = target.next_seq
            start_timestamp: int | None = None
            for record in records:
                timestamp = arrival if mode == "arrival" or record.timestamp is None else record.timestamp
                if not uncapped:
                    timestamp = min(timestamp, arrival)
                timestamp = max(timestamp, target.last_timestamp)
                sequenced = SequencedRecord(target.next_seq, timestamp, record.body, record.headers)
                target.records.append(sequenced)
                target.next_seq += 1
                target.last_timestamp = timestamp
                start_timestamp = timestamp if start_timestamp is None else start_timestamp
                self._apply_command(target, sequenced)
            target.cond.notify_all()
            end = target.tail
            return AppendAck(StreamPosition(start_seq, start_timestamp or 0), end, end)

    @staticmethod
    def _apply_command(stream: _Stream, record: SequencedRecord) -> None:
        command = record.command
        if command == "fence":
            stream.fencing_token = record.body.decode()
        elif command == "trim":
            requested = int.from_bytes(record.body, "big")
            trim_to = min(requested, record.seq_num + 1)
            if trim_to > stream.first_seq:
                del stream.records[: stream.index(trim_to)]
                stream.first_seq = trim_to

    # -- reads -----------------------------------------------------------

    def check_tail(self, stream: str) -> StreamPosition:
        """The next sequence number and the last record's timestamp (``0, 0`` for an empty stream)."""
        validate_stream_name(stream)
        with self._lock:
            return self._get(stream, create=self.create_stream_on_read).tail

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
        validate_stream_name(stream)
        limit_count = min(MAX_BATCH_RECORDS if count is None else count, MAX_BATCH_RECORDS)
        limit_bytes = min(MAX_BATCH_BYTES if bytes is None else bytes, MAX_BATCH_BYTES)
        wait_s = min(wait or 0, MAX_READ_WAIT)
        with self._lock:
            target, start = self._start(stream, seq_num, timestamp, tail_offset, until, clamp, may_follow=wait_s > 0)
            if start < target.next_seq:
                return ReadBatch(self._collect(target, start, limit_count, limit_bytes, until))
            deadline = time.monotonic() + wait_s
            while target.next_seq <= start:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return ReadBatch(())
                target.cond.wait(remaining)
                self._check_alive(target)
            return ReadBatch(self._collect(target, start, limit_count, limit_bytes, until), target.tail)

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
    ) -> Generator[ReadBatch | StreamPosition, None, None]:
        """A streaming read, as S2's SSE and S2S sessions serve it.

        Yields :class:`ReadBatch` objects (never empty, at most 1000 records
        and 1 MiB each) and, while following the tail, heartbeats as
        :class:`StreamPosition` tails: one as soon as the session catches up,
        then one whenever ``heartbeat_interval`` passes without records.

        The session ends when ``count``/``bytes``/``until`` is reached, when
        ``wait`` seconds pass without records (``wait`` bounds the gap between
        records; without bounds and without ``wait`` it follows forever), or,
        with bounds and no ``wait``, when it reaches the tail. Errors found
        before the first record (404, 416, 422) are raised by the first
        ``next()``.
        """
        validate_stream_name(stream)
        bounded = count is not None or bytes is not None or until is not None
        if wait is None:
            wait = 0 if bounded else None
        follow = not bounded or bool(wait)
        with self._lock:
            target, start = self._start(stream, seq_num, timestamp, tail_offset, until, clamp, may_follow=follow)
        left_count = count
        left_bytes = bytes
        caught_up = False
        deadline: float | None = None  # armed once following the tail; reset by every batch
        while True:
            if left_count == 0 or left_bytes == 0:
                return
            with self._lock:
                self._check_alive(target)
                if start < target.next_seq:
                    records = self._collect(
                        target,
                        start,
                        min(left_count if left_count is not None else MAX_BATCH_RECORDS, MAX_BATCH_RECORDS),
                        min(left_bytes if left_bytes is not None else MAX_BATCH_BYTES, MAX_BATCH_BYTES),
                        until,
                    )
                    tail = target.tail if caught_up else None
                    stopped_by_until = until is not None and start < target.next_seq and not records
                else:
                    records, tail, stopped_by_until = (), None, False
            if stopped_by_until:
                return
            if records:
                start = records[-1].seq_num + 1
                if left_count is not None:
                    left_count -= len(records)
                if left_bytes is not None:
                    left_bytes -= sum(r.metered_size for r in records)
                if caught_up and wait:
                    deadline = time.monotonic() + wait
                yield ReadBatch(records, tail)
                if until is not None and records[-1].timestamp >= until:
                    return
                continue
            if not follow:
                return
            if not caught_up:
                caught_up = True
                if wait:
                    deadline = time.monotonic() + wait
                with self._lock:
                    tail = target.tail
                yield tail
            with self._lock:
                while target.next_seq <= start:
                    now = time.monotonic()
                    timeout = self.heartbeat_interval
                    if deadline is not None:
                        if now >= deadline:
                            return
                        timeout = min(timeout, deadline - now)
                    idle = not target.cond.wait(timeout)
                    if idle and (deadline is None or time.monotonic() < deadline):
                        break  # send a heartbeat
                    self._check_alive(target)
                heartbeat = target.tail if target.next_seq <= start else None
            if heartbeat is not None:
                if deadline is not None and time.monotonic() >= deadline:
                    return
                yield heartbeat

    def _check_alive(self, stream: _Stream) -> None:
        if self._closed:
            raise Unavailable("the log is closed", code="unavailable")
        if stream.deleted:
            raise NotFound(f"stream `{stream.info.name}` not found", status=404, code="stream_not_found")

    def _start(
        self,
        name: str,
        seq_num: int | None,
        timestamp: int | None,
        tail_offset: int | None,
        until: int | None,
        clamp: bool,
        *,
        may_follow: bool,
    ) -> tuple[_Stream, int]:
        """Resolve where a read starts, applying S2's 416 rules. Call with the lock held."""
        if sum(x is not None for x in (seq_num, timestamp, tail_offset)) > 1:
            raise _invalid("only one of seq_num, timestamp, or tail_offset can be provided")
        if timestamp is not None and until is not None and timestamp >= until:
            raise _invalid("start `timestamp` exceeds or equal to `until`")
        named = {"seq_num": seq_num, "timestamp": timestamp, "tail_offset": tail_offset, "until": until}
        for what, value in named.items():
            if value is not None and value < 0:
                raise BadRequest(f"invalid {what}: {value}", status=400, code="bad_query")
        stream = self._get(name, create=self.create_stream_on_read)
        tail = stream.tail
        if seq_num is not None:
            beyond = seq_num > tail.seq_num
            start = seq_num
        elif timestamp is not None:
            beyond = timestamp > tail.timestamp
            start = stream.first_seq + bisect.bisect_left(stream.records, timestamp, key=lambda r: r.timestamp)
        else:
            beyond = False
            start = max(tail.seq_num - (tail_offset or 0), 0)
        if beyond:
            if not clamp:
                raise RangeNotSatisfiable(tail)
            start = tail.seq_num
        start = max(start, stream.first_seq)
        if start >= tail.seq_num and not may_follow:
            raise RangeNotSatisfiable(tail)
        return stream, start

    @staticmethod
    def _collect(
        stream: _Stream, start: int, count: int, limit_bytes: int, until: int | None
    ) -> tuple[SequencedRecord, ...]:
        out: list[SequencedRecord] = []
        used = 0
        for record in stream.records[stream.index(start) :]:
            if len(out) >= count or (until is not None and record.timestamp >= until):
                break
            size = record.metered_size
            if used + size > limit_bytes:
                break
            out.append(record)
            used += size
        return tuple(out)


def _check_record(record: Record) -> None:
    """S2's rules for headers and command records."""
    if len(record.headers) == 1 and record.headers[0][0] == b"":
        op = record.headers[0][1]
        if op == b"fence":
            try:
                token = record.body.decode()
            except UnicodeDecodeError:
                raise _invalid("fencing token must be valid UTF-8") from None
            if len(token.encode()) > MAX_FENCING_TOKEN_BYTES:
                raise _invalid(f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes in length")
        elif op == b"trim":
            if len(record.body) != 8:
                raise _invalid(f"earliest sequence number to trim to was {len(record.body)} bytes, must be 8")
        else:
            raise _invalid("unknown command")
        return
    if any(name == b"" for name, _ in record.headers):
        raise _invalid("invalid header: empty name")


def merge_stream_config(config: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (S2 ``StreamConfig`` JSON) with ``changes`` applied the way S2 applies a reconfiguration.

    Given fields change and ``None`` resets a field to its default; the
    nested ``timestamping`` and ``delete_on_empty`` objects change field by
    field. A stream created with a config gets it this way on top of its
    basin's default stream config.
    """
    out = dict(config)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif key in _NESTED_CONFIG:
            nested = {**(out.get(key) or {}), **value}
            nested = {name: setting for name, setting in nested.items() if setting is not None}
            if nested:
                out[key] = nested
            else:
                out.pop(key, None)
        else:
            out[key] = value
    return out


def _check_stream_config(config: dict[str, Any]) -> None:
    timestamping = config.get("timestamping") or {}
    mode = timestamping.get("mode")
    if mode is not None and mode not in _TIMESTAMPING_MODES:
        raise _invalid(f"unknown timestamping mode {mode!r}")
    retention = config.get("retention_policy") or {}
    if "age" in retention and not (isinstance(retention["age"], int) and retention["age"] > 0):
        raise _invalid("retention age must be greater than zero")
