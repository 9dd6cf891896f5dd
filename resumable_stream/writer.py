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

Threading: :meth:`Writer.schedule` may be called from any thread; writer
threads start on demand, up to ``threads``, and end after a minute without
any producer (a producer always holds an entry, if only for its next
heartbeat, so a context that produces keeps its writers: they are there for
the last writes at interpreter exit, when Python 3.12 starts no new thread).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import TYPE_CHECKING

from .log import Log

if TYPE_CHECKING:
    from .producer import Producer

__all__ = ["Writer"]

logger = logging.getLogger(__name__)

_IDLE_EXIT = 60.0


class Writer:
    """Appends the batches of every producer of one context, on up to ``threads`` threads."""

    def __init__(self, log: Log, threads: int) -> None:
        self._log = log
        self._max_threads = threads
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, int, Producer]] = []  # (due, tie-breaker, entry, producer)
        self._order = itertools.count()
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._running: set[threading.Thread] = set()

    def schedule(self, producer: Producer, due: float, entry: int) -> None:
        """Call ``producer.take(entry, ...)`` once the monotonic time ``due`` has come."""
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._order), entry, producer))
            if self._idle:
                if self._heap[0][3] is producer:
                    self._cond.notify()
            elif self._threads < self._max_threads and not self._closed:
                self._threads += 1
                thread = threading.Thread(target=self._run, name="resumable-stream writer", daemon=True)
                self._running.add(thread)
                thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """End the writer threads (once every producer is done), waiting up to ``timeout`` seconds for them."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = list(self._running)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> tuple[int, Producer] | None:
        """Wait for the entry due first; None after a long idle spell (the thread then ends)."""
        with self._cond:
            idle_since = time.monotonic()
            while True:
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, _, entry, producer = heapq.heappop(self._heap)
                    return entry, producer
                if self._closed or (not self._heap and now - idle_since > _IDLE_EXIT):
                    self._threads -= 1
                    self._running.discard(threading.current_thread())
                    return None
                self._idle += 1
                self._cond.wait(self._heap[0][0] - now if self._heap else _IDLE_EXIT)
                self._idle -= 1

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
