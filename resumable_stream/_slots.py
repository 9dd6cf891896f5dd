"""Connection slots: a counting semaphore that a thousand threads pass through without a convoy.

``threading.BoundedSemaphore`` keeps its count under one lock (its
condition's), which every acquire and every release takes. Under the GIL a
lock that many threads pass through convoys: it is handed to a waiting
thread, which must then wait for the GIL while it holds the lock, and every
other thread queues behind it. At 1,000 streams over HTTP the request threads
were seen queued on that lock for tens of seconds.

Here a free slot is taken or given back with one deque operation, and no lock
is shared: a thread that finds no free slot queues a waiter of its own and
sleeps on that waiter's lock, and a release frees its slot, then wakes the
thread that has waited longest. A running thread may take the freed slot
first (the woken one then waits again, first in line): handing the slot to the sleeper
instead would leave it unused until that thread gets the GIL, which at a
thousand threads is a long wait, and every slot would convoy the same way.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque

__all__ = ["Slots"]


class _Waiter:
    __slots__ = ("chosen", "woken")

    def __init__(self) -> None:
        # Taken once, by whoever decides this waiter's fate: a release that wakes it, or the waiter itself
        # when it stops waiting. So a wake-up never goes to a thread that has stopped waiting.
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
        free = self._free
        try:
            free.pop()
            return True
        except IndexError:
            pass
        deadline = time.monotonic() + timeout
        queue = self._waiters.append
        while True:
            waiter = _Waiter()
            queue(waiter)
            # A release frees its slot before it looks for a waiter, and this looks at the free slots after
            # queueing: one of the two sees the other, so no slot stays free while a thread sleeps.
            try:
                free.pop()
            except IndexError:
                pass
            else:
                self._withdraw(waiter)
                return True
            try:
                woken = waiter.woken.acquire(timeout=min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX))
            except BaseException:  # interrupted: a gevent.Timeout, a signal handler's exception
                self._withdraw(waiter)
                raise
            if not woken and waiter.chosen.acquire(blocking=False):
                return False  # no release woke it in time
            try:  # woken (perhaps just as it gave up)
                free.pop()
                return True
            except IndexError:  # a running thread took the slot first: wait again, first in line
                if time.monotonic() >= deadline:
                    return False
                queue = self._waiters.appendleft

    def _withdraw(self, waiter: _Waiter) -> None:
        """Stop ``waiter`` from being woken; if a release has chosen it already, wake another in its place."""
        if not waiter.chosen.acquire(blocking=False):
            self._wake_one()

    def release(self) -> None:
        """Give a slot back, and wake the thread that has waited longest."""
        self._free.append(None)
        self._wake_one()

    def _wake_one(self) -> None:
        while True:
            try:
                waiter = self._waiters.popleft()
            except IndexError:
                return
            if waiter.chosen.acquire(blocking=False):
                waiter.woken.release()
                return
