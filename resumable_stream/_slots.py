"""Connection slots: a counting semaphore that a thousand threads pass through without a convoy.

``threading.BoundedSemaphore`` keeps its count under one lock (its
condition's), which every acquire and every release takes. Under the GIL a
lock that many threads pass through convoys: it is handed to a waiting
thread, which must then wait for the GIL while it holds the lock, and every
other thread queues behind it. At 1,000 streams over HTTP the request threads
were seen queued on that lock for tens of seconds.

Here a free slot is taken or given back with one deque operation, and no lock
is shared: a thread that finds no free slot queues a waiter of its own and
sleeps on that waiter's lock, and a release hands its slot straight to the
first waiter (so slots go in FIFO order once threads wait).
"""

from __future__ import annotations

import itertools
import threading
from collections import deque

__all__ = ["Slots"]


class _Waiter:
    __slots__ = ("chosen", "woken")

    def __init__(self) -> None:
        # Taken once, by whoever decides this waiter's fate: a release that hands it a slot, or the waiter
        # itself when it stops waiting. So a slot is never handed to a thread that has given up.
        self.chosen = threading.Lock()
        self.woken = threading.Lock()
        self.woken.acquire()  # released by the release that chose it


class Slots:
    """``count`` slots; :meth:`acquire` waits for one, :meth:`release` gives it back. Thread-safe."""

    def __init__(self, count: int) -> None:
        self._free = deque(itertools.repeat(None, count))
        self._waiters: deque[_Waiter] = deque()

    def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to ``timeout`` seconds (at most ``threading.TIMEOUT_MAX``); False if none came."""
        try:
            self._free.pop()
            return True
        except IndexError:
            pass
        waiter = _Waiter()
        self._waiters.append(waiter)
        # A release gives its slot to the free list before it looks at the waiters, and this looks at the free
        # list after queueing: one of the two sees the other, so no slot stays free while a thread waits for it.
        try:
            self._free.pop()
        except IndexError:
            if waiter.woken.acquire(timeout=timeout):
                return True
            if waiter.chosen.acquire(blocking=False):  # gave up before any release chose it
                return False
        else:
            if waiter.chosen.acquire(blocking=False):  # no release will choose it now
                return True
            waiter.woken.acquire()
            self.release()  # chosen as well: one slot too many
            return True
        waiter.woken.acquire()  # chosen as it gave up: the release wakes it at once
        return True

    def release(self) -> None:
        """Give a slot back: to the thread that has waited longest, else to the free list."""
        while True:
            while self._waiters:
                try:
                    waiter = self._waiters.popleft()
                except IndexError:
                    break
                if waiter.chosen.acquire(blocking=False):
                    waiter.woken.release()
                    return
            self._free.append(None)
            if not self._waiters:  # a thread that queued meanwhile looks at the free list itself (see acquire)
                return
            try:
                self._free.pop()  # take it back for a waiter
            except IndexError:
                return  # someone took it
