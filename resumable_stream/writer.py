"""The writer: a few threads per context that append every producer's batches, oldest first.

Each producer holds at most one entry in the writer's schedule: when its next
append is due (its oldest queued record, or its next heartbeat). A free writer
thread takes the entry that has been due longest, asks the producer for the
batch and appends it. A producer has at most one append in flight, so while
one is on its way the next batch grows; and since there are only a few writer
threads, batches grow with the load of the whole process rather than its
request rate (self-clocking). Heartbeats go through the same schedule, in due
order, so they never wait behind a burst of one stream, and the writer never
waits behind reads (readers run on their own threads and connections).

Threading: :meth:`Writer.schedule` is called from any thread (a source
thread, for a chunk that starts a batch) and takes no lock: it appends the
entry to an intake deque, and wakes a writer thread (taking the writer's lock)
only if one sleeps past the entry's due time. Under the GIL a lock that a thousand threads pass
through hands itself over to a thread that must then wait for the GIL while
holding it: at a thousand streams the writer's lock became such a convoy and
the process stalled for minutes. The writer threads move the intake into
their schedule under a lock of their own. They start on demand, up to
``threads``, and end after a minute without any producer (a producer always
holds an entry, if only for its next heartbeat, so a context that produces
keeps its writers: they are there for the last writes at interpreter exit,
when Python 3.12 starts no new thread).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from .log import Log

if TYPE_CHECKING:
    from .producer import Producer

__all__ = ["Writer"]

logger = logging.getLogger(__name__)

_IDLE_EXIT = 60.0


_Entry = tuple[float, int, int, "Producer"]  # (due, tie-breaker, entry, producer)


class Writer:
    """Appends the batches of every producer of one context, on up to ``threads`` threads."""

    def __init__(self, log: Log, threads: int) -> None:
        self._log = log
        self._max_threads = threads
        self._intake: deque[_Entry] = deque()  # appended to by any thread, without a lock
        self._lock = threading.Lock()  # the writer threads': the schedule, the sleepers, the thread count
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        # The sleeping writer threads: when each wakes by itself, and the event that wakes it sooner. (Each has
        # its own: with one queue.SimpleQueue shared by the sleepers' timed get()s, one sleeper was seen to stay
        # blocked 40 s past its timeout, counted as waking long ago, so that no entry woke anyone.)
        self._sleepers: list[tuple[float, threading.Event]] = []
        self._wakes_by = math.inf  # the earliest of them (read without the lock by schedule)
        self._threads = 0
        self._closed = False
        self._running: set[threading.Thread] = set()

    def schedule(self, producer: Producer, due: float, entry: int) -> None:
        """Call ``producer.take(entry, ...)`` once the monotonic time ``due`` has come."""
        self._intake.append((due, next(self._order), entry, producer))
        # A writer thread counts itself asleep before it looks at the intake a last time, and this looks at
        # the sleepers after the append: one of the two sees the other, so no entry waits for a timeout.
        if self._sleepers and due < self._wakes_by:  # read without the lock; checked again under it
            with self._lock:
                self._wake_for(due)
        if self._threads < self._max_threads:  # read without the lock: only starting a thread takes it
            self._start_thread()

    def _wake_for(self, due: float) -> None:
        """Wake a sleeping thread if none wakes by ``due`` (it takes in the whole intake); call with the lock held."""
        if self._sleepers and due < self._wakes_by:
            _, event = self._sleepers.pop()
            self._wakes_by = min((until for until, _ in self._sleepers), default=math.inf)
            event.set()

    def _start_thread(self) -> None:
        # Started under the lock (the new thread waits for it in _next), so that close() sees each thread
        # once it has started, or once its start has failed. Starts are rare: at most `threads`, then one
        # after an idle spell.
        with self._lock:
            if self._threads >= self._max_threads or self._closed:
                return
            thread = threading.Thread(target=self._run, name="resumable-stream writer", daemon=True)
            self._threads += 1
            self._running.add(thread)
            try:
                thread.start()
            except Exception:  # no thread (at interpreter exit, say): uncount it; fail only if none runs
                self._threads -= 1
                self._running.discard(thread)
                if not self._threads:
                    raise

    def close(self, timeout: float = 2.0) -> None:
        """End the writer threads (once every producer is done), waiting up to ``timeout`` seconds for them."""
        with self._lock:
            self._closed = True
            threads = list(self._running)
            while self._sleepers:
                self._wake_for(-math.inf)
        deadline = time.monotonic() + timeout
        for thread in threads:
            if thread.is_alive():  # (not one whose start was interrupted before it ran)
                thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> tuple[int, Producer] | None:
        """Wait for the entry due first; None after a long idle spell (the thread then ends)."""
        idle_since = time.monotonic()
        while True:
            with self._lock:
                heap, intake = self._heap, self._intake
                while intake:
                    heapq.heappush(heap, intake.popleft())
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    _, _, entry, producer = heapq.heappop(heap)
                    if heap:
                        self._wake_for(heap[0][0])  # the next entry is due before any sleeper wakes: one re-arms
                    return entry, producer
                leaving = self._closed or (not heap and now - idle_since > _IDLE_EXIT)
                if leaving:
                    self._threads -= 1
                    self._running.discard(threading.current_thread())
                else:
                    until = heap[0][0] if heap else now + _IDLE_EXIT
                    sleeper = (until, threading.Event())
                    self._sleepers.append(sleeper)
                    self._wakes_by = min(self._wakes_by, until)
            if leaving:
                if intake and not self._closed:
                    self._start_thread()  # an entry came as this thread left, too late to start one
                return None
            if not intake:  # the last look (see schedule)
                sleeper[1].wait(until - now)
            with self._lock:
                if any(s is sleeper for s in self._sleepers):  # woke by itself (a waker takes it off the list)
                    self._sleepers.remove(sleeper)
                    self._wakes_by = min((u for u, _ in self._sleepers), default=math.inf)

    def _run(self) -> None:
        while (item := self._next()) is not None:
            entry, producer = item
            batch = producer.take(entry, time.monotonic())
            if batch is None:
                continue
            try:
                ack = self._log.append(producer.stream_id, batch.records, match_seq_num=batch.first_seq,
                                       fencing_token=producer.token, timeout=producer.policy.append_timeout)
            except BaseException as exc:  # never leave a producer waiting on a dead writer
                if not isinstance(exc, Exception):
                    logger.exception("appending to stream %r crashed", producer.stream_id)
                producer.write_failed(batch, exc)
                continue
            logger.debug("stream %r: appended %d records at %d", producer.stream_id, len(batch.records),
                         batch.first_seq)
            producer.written(batch, ack)
