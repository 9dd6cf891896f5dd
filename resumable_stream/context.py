"""The context: :class:`ResumableStreamContext`, the library's entry point.

Creating a stream claims it on the log (``protocol.py``), so exactly one
creator (thread, process or machine) runs the source. The winner's source
runs on a thread of its own (``producer.py``); its chunks go to the creator's
iterator at once and to the context's writer (``writer.py``), which appends
every stream's batches, fenced and with ``match_seq_num``, on a few shared
threads. Everybody else, and anybody later, reads the log (``reader.py``):
from the start, or strictly after a cursor, until the stream's terminal
record. A client that goes away never stops the source;
:meth:`ResumableStreamContext.stop_stream` does, from any process, through the
stop watcher (``stops.py``). Who counts as dead is decided in ``liveness.py``;
the record layout is in ``_wire.py``.
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
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

from . import _wire, liveness, protocol
from ._fork import reset_after_fork
from .exceptions import ConfigurationError, FencingTokenMismatch, ResumableStreamError, SeqNumMismatch
from .log import MAX_BATCH_RECORDS, MAX_READ_WAIT, Log, validate_stream_name
from .memory import MemoryLog
from .producer import Producer, WritePolicy
from .protocol import StreamState, StreamStatus
from .reader import ResumableStream, parse_cursor
from .stops import StopWatcher
from .writer import Writer

__all__ = ["ResumableStreamContext"]

logger = logging.getLogger(__name__)

Chunk = TypeVar("Chunk", str, bytes)

# Seconds to keep trying to fence a stream whose producer keeps writing.
_FENCE_PATIENCE = 10.0
# Appends in flight at once per context: few, so that batches grow with the load instead of the request rate.
_WRITERS = 4
_S2_SETTINGS = ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT")


def _setting(argument: str, value: float | None, variable: str, default: float, low: float, high: float) -> float:
    """A number from the constructor argument, or else the environment variable, or else the default."""
    name = argument
    if value is None:
        name = variable
        raw = os.environ.get(variable, "").strip() if variable else ""
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(variable, f"must be a number, not {raw!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigurationError(name, f"must be a number from {low:g} to {high:g}, not {value!r}")
    return value


class ResumableStreamContext:
    """Creates, resumes, inspects and stops resumable streams on one log.

    :param log: where streams live: an :class:`~resumable_stream.S2Client` or
        a :class:`~resumable_stream.MemoryLog`. By default, an ``S2Client``
        configured from the ``S2_*`` environment variables if any is set;
        otherwise a ``MemoryLog`` private to this process (a warning is
        logged, since other processes will not see its streams).
    :param batch_size: most records per append (env ``S2_BATCH_SIZE``,
        default 1000, S2's limit).
    :param linger: longest a record may wait for others to join its batch
        (env ``S2_LINGER_DURATION`` in milliseconds; default 0). Batching needs
        no tuning: a stream has one append in flight at a time and the context
        a few, so records that arrive meanwhile go out together, and batches
        grow with the load. A linger makes them larger still, at the cost of
        latency for readers of the log.
    :param abandon_after: seconds without any record after which the
        producer counts as dead. Producers declare it in their claim, so
        readers everywhere use the producer's own value; they heartbeat after
        a third of it while their source is idle, and give up on an append
        they could not land within half of it.
    :param stop_timeout: seconds :meth:`stop_stream` waits for the producer to
        record the stop before ending the stream itself.
    :param live_buffer_bytes: most bytes the creator's iterator may fall
        behind before it reads the rest from the log instead of memory.

    Threading: one context serves every thread of a process; all methods are
    thread-safe. Each producing stream runs its source on a thread of its
    own; writing, heartbeats and stop requests are shared by the context (at
    most four writer threads and one stop watcher). It is fork-safe: a child
    process starts with no producers, threads or connections of its parent.
    :meth:`close` (also called at interpreter exit) lets running producers
    finish within a deadline.
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
        size = _setting("batch_size", batch_size, "S2_BATCH_SIZE", MAX_BATCH_RECORDS, 1, MAX_BATCH_RECORDS)
        if size != int(size):
            raise ConfigurationError("batch_size" if batch_size is not None else "S2_BATCH_SIZE",
                                     f"must be a whole number, not {size!r}")
        linger_ms = _setting("linger", None if linger is None else linger * 1000, "S2_LINGER_DURATION", 0, 0, 60_000)
        self.abandon_after = _setting("abandon_after", abandon_after, "", 30, liveness.SHORTEST_BOUND, 86_400)
        self.policy = WritePolicy(int(size), linger_ms / 1000, liveness.heartbeat_interval(self.abandon_after),
                                  liveness.append_deadline(self.abandon_after))
        self.stop_timeout = _setting("stop_timeout", stop_timeout, "", 10, 0, 3_600)
        self.live_buffer_bytes = int(_setting("live_buffer_bytes", live_buffer_bytes, "", 0, 1, 2**40))
        self._owns_log = log is None
        self.log: Log = log if log is not None else self._default_log()
        if isinstance(self.log, MemoryLog) and self.log.retention is not None \
                and self.log.retention < self.abandon_after:
            # A producer appends at least every heartbeat interval (a third of abandon_after): with a
            # retention no shorter than abandon_after, a live producer's stream is never forgotten, and a
            # dead one's lasts long enough for readers to find it abandoned.
            raise ConfigurationError("retention", f"MemoryLog(retention={self.log.retention:g}) is shorter than "
                                     f"abandon_after ({self.abandon_after:g} s): a live stream could be forgotten")
        self._lock = threading.Lock()
        self._producers: dict[tuple[str, str], Producer] = {}  # by (stream id, session token)
        self._closed = threading.Event()
        self._start_parts()
        _CONTEXTS.add(self)
        reset_after_fork(self._after_fork)

    @property
    def batch_size(self) -> int:
        """Most records per append."""
        return self.policy.batch_size

    @property
    def linger(self) -> float:
        """Longest a record waits for others to join its batch, in seconds."""
        return self.policy.linger

    @property
    def heartbeat_interval(self) -> float:
        """Seconds of idleness after which a producer writes a heartbeat."""
        return self.policy.heartbeat_interval

    def _start_parts(self) -> None:
        self._writer = Writer(self.log, _WRITERS)
        self._stops = StopWatcher(self.log, self._stop_requested)

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
        # Safe on a context whose constructor raised.
        log, producing = getattr(self, "log", None), len(getattr(self, "_producers", ()))
        return f"<ResumableStreamContext log={log!r} producing={producing}>"

    def _after_fork(self) -> None:
        # The parent's producers, writer and watcher threads and locks do not exist in the child.
        self._lock = threading.Lock()
        self._producers = {}
        self._start_parts()
        if self._closed.is_set():
            self._closed = threading.Event()
            self._closed.set()
        else:
            self._closed = threading.Event()

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
        self._stops.start()
        producer = Producer(
            stream_id, liveness.new_claim_token(self.abandon_after), make_stream, log=self.log, policy=self.policy,
            live_buffer_bytes=self.live_buffer_bytes, schedule=self._writer.schedule, on_done=self._forget,
            default_bound=self.abandon_after,
        )
        with self._lock:  # registered before claiming, so that no stop request for it can be missed
            if self._closed.is_set():
                raise ResumableStreamError("the context is closed")
            self._producers[stream_id, producer.token] = producer
        try:
            protocol.claim(self.log, stream_id, producer.token)
        except FencingTokenMismatch as exc:
            producer.discard()
            if _wire.terminal_state(exc.current_token) is not None:
                return None
            logger.debug("stream %r is already claimed; joining it", stream_id)
            return self._reader(stream_id)
        except BaseException:
            producer.discard()
            raise
        logger.info("stream %r created", stream_id)
        stream: ResumableStream[Chunk] = ResumableStream(
            self.log, stream_id, default_bound=self.abandon_after, after=0, producer=producer
        )
        producer.start()
        return stream

    def resumable_stream(
        self, stream_id: str, make_stream: Iterable[Chunk] | Callable[[], Iterable[Chunk]]
    ) -> ResumableStream[Chunk] | None:
        """The same operation as :meth:`create_new_resumable_stream`: create, or join the run in progress."""
        return self.create_new_resumable_stream(stream_id, make_stream)

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
        observed = protocol.read_end(self.log, stream_id)  # the reader judges a silent producer itself
        status = observed.status
        if status.state is StreamState.MISSING:
            return None
        if observed.recorded and (after_seq is None or after_seq >= status.tail - 1):
            return None
        return self._reader(stream_id, after_seq, status.tail, observed.silent_for, observed.token)

    def _reader(self, stream_id: str, after: int | None = None, tail: int | None = None,
                silent_for: float = 0.0, token: str | None = None) -> ResumableStream[Any]:
        # A silent producer counts as silent since its last record, not since this reader came.
        return ResumableStream(self.log, stream_id, default_bound=self.abandon_after, after=after, tail=tail,
                               silent_for=silent_for, token=token)

    def has_existing_stream(self, stream_id: str) -> Literal[True, "DONE"] | None:
        """``None`` if the stream does not exist, ``True`` while it runs, ``"DONE"`` once it has ended."""
        status = self.stream_status(stream_id)
        if status.state is StreamState.MISSING:
            return None
        return True if status.state is StreamState.ACTIVE else "DONE"

    def stream_status(self, stream_id: str) -> StreamStatus:
        """The stream's state, tail and failure message, from the log (one read, two for a silent producer)."""
        self._check(stream_id)
        return protocol.read_status(self.log, stream_id, self.abandon_after).status

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
        observed = protocol.read_status(self.log, stream_id, self.abandon_after)
        if observed.status.state is StreamState.MISSING:
            with contextlib.suppress(FencingTokenMismatch):  # else a creator got there first: stop its run
                protocol.claim(self.log, stream_id, _wire.new_token(_wire.STOPPED))
            observed = protocol.read_status(self.log, stream_id, self.abandon_after)
        if observed.recorded:
            return observed.status
        token = protocol.claim_token(self.log, stream_id)
        if token is not None and observed.status.state is StreamState.ACTIVE:
            self._send_stop(stream_id, token)
            if self._await_end(stream_id, observed.status.tail, self.stop_timeout):
                return self.stream_status(stream_id)
            logger.warning("the producer of stream %r did not stop within %.1f s; ending it here",
                           stream_id, self.stop_timeout)
        self._fence(stream_id, token, StreamState.STOPPED)
        return self.stream_status(stream_id)

    def _send_stop(self, stream_id: str, token: str) -> None:
        request = [_wire.stop_request(stream_id, token)]
        protocol.ensuring(self.log, _wire.CONTROL_STREAM, lambda: self.log.append(_wire.CONTROL_STREAM, request))

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
                protocol.end(self.log, stream_id, token, state, tail)
                return
            except SeqNumMismatch as exc:
                if time.monotonic() >= deadline:
                    raise ResumableStreamError(f"could not end stream {stream_id!r}: it kept moving") from None
                tail = exc.next_seq_num  # the producer wrote meanwhile; try again at the new tail
            except FencingTokenMismatch:
                return  # it ended meanwhile

    def _stop_requested(self, stream_id: str, token: str) -> None:
        with self._lock:
            producer = self._producers.get((stream_id, token))
        if producer is not None:
            producer.request_stop()

    # -- lifecycle -------------------------------------------------------

    def _forget(self, producer: Producer) -> None:
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
        self._stops.stop()
        self._writer.close()
        if self._owns_log:
            self.log.close()


_CONTEXTS: weakref.WeakSet[ResumableStreamContext] = weakref.WeakSet()


@atexit.register
def _close_contexts() -> None:
    for ctx in list(_CONTEXTS):
        ctx.close()
