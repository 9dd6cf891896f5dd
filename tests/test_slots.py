"""The client's connection slots: never more holders than slots, no slot lost, wake-ups in FIFO order, timeouts."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from resumable_stream import _slots
from resumable_stream._slots import Slots


def test_a_wait_without_a_free_slot_times_out_and_takes_nothing() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    started = time.monotonic()
    assert not slots.acquire(0.2)
    assert 0.15 < time.monotonic() - started < 5
    slots.release()
    assert slots.acquire(0)  # the timed-out waiter was not handed the slot
    assert not slots.acquire(0)


def test_a_release_wakes_the_thread_that_waited_longest() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    order: list[int] = []

    def wait(n: int) -> None:
        assert slots.acquire(10)
        order.append(n)
        slots.release()

    threads = []
    for n in range(5):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        time.sleep(0.05)  # each queues before the next
    slots.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_running_thread_may_take_a_freed_slot_and_the_woken_one_gets_the_next() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    waiter, result = _in_thread(lambda: slots.acquire(5))
    time.sleep(0.1)  # it sleeps in the queue
    slots.release()
    took = slots.acquire(0)  # this thread still runs: it takes the slot, unless the woken one was quicker
    if took:
        time.sleep(0.1)
        assert waiter.is_alive(), "the woken thread went on without a slot"
        slots.release()
    waiter.join(10)
    assert result == [True]
    slots.release()
    assert slots.acquire(0) and not slots.acquire(0), "a slot was lost or made"


def test_a_thread_woken_just_as_it_gives_up_takes_the_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its wait times out, and before it can say so a release wakes it: that wake-up must not be lost.
    slots = Slots(1)
    assert slots.acquire(1)

    class TimesOutAsReleased:
        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if timeout == -1:
                return bool(self.lock.acquire())
            slots.release()  # the release comes just as the wait ends
            return False

        def release(self) -> None:
            self.lock.release()

    class Waiter(_slots._Waiter):
        def __init__(self) -> None:
            super().__init__()
            self.woken = TimesOutAsReleased(self.woken)  # type: ignore[assignment]

    with monkeypatch.context() as patched:
        patched.setattr(_slots, "_Waiter", Waiter)
        assert slots.acquire(5)
    assert not slots.acquire(0), "a slot was made"


class _Paused(deque[Any]):
    """A deque that can stop a thread just before an append, or just after a pop (which may fail)."""

    before_append: Callable[[], None] = staticmethod(lambda: None)
    after_pop: Callable[[], None] = staticmethod(lambda: None)

    def append(self, item: Any) -> None:
        self.before_append()
        super().append(item)

    def pop(self) -> Any:
        try:
            return super().pop()
        finally:
            self.after_pop()


def _in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    thread.start()
    return thread, result


def test_a_release_just_before_a_thread_queues_leaves_the_slot_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The releaser finds nobody queued and frees the slot; the waiter, queueing next, must find it free.
    monkeypatch.setattr(_slots, "deque", _Paused)
    slots = Slots(1)
    assert slots.acquire(1)
    queueing, released = threading.Event(), threading.Event()

    def queue() -> None:
        queueing.set()
        released.wait(5)

    slots._waiters.before_append = queue  # type: ignore[attr-defined]
    waiter, result = _in_thread(lambda: slots.acquire(2))
    assert queueing.wait(5)
    slots.release()
    released.set()
    waiter.join(10)
    assert result == [True], "a slot stayed free while a thread waited for it"


def test_a_thread_that_queues_while_a_release_frees_the_slot_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The releaser finds nobody queued; before it frees the slot, a thread queues and finds no free slot.
    monkeypatch.setattr(_slots, "deque", _Paused)
    slots = Slots(1)
    assert slots.acquire(1)
    freeing, looked, waiting = threading.Event(), threading.Semaphore(0), threading.Event()
    slots._free.after_pop = looked.release  # type: ignore[attr-defined]

    def wait_for_the_waiter() -> None:
        freeing.set()
        assert looked.acquire(timeout=5) and looked.acquire(timeout=5)  # its two looks at the free list
        waiting.set()

    slots._free.before_append = wait_for_the_waiter  # type: ignore[attr-defined]
    releaser, _ = _in_thread(slots.release)
    assert freeing.wait(5)
    waiter, result = _in_thread(lambda: slots.acquire(2))
    releaser.join(10)
    waiter.join(10)
    assert waiting.is_set() and result == [True], "a slot stayed free while a thread waited for it"


def test_many_threads_never_hold_more_than_the_slots_and_none_is_lost() -> None:
    slots = Slots(4)
    holders, most, stuck = 0, 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal holders, most, stuck
        for i in range(200):
            patient = i % 10 != 0  # the others give up at once, racing the releases
            if not slots.acquire(5 if patient else 0.001):
                if patient:
                    with lock:
                        stuck += 1
                    return
                continue
            with lock:
                holders += 1
                most = max(most, holders)
            if i % 3 == 0:
                time.sleep(0)
            with lock:
                holders -= 1
            slots.release()

    threads = [threading.Thread(target=work) for _ in range(32)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two steps: the races come up
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)
    assert stuck == 0, "a thread waited 5 s for one of four slots that are each held for an instant"
    assert most == 4
    assert all(slots.acquire(0) for _ in range(4)), "a slot was lost"
    assert not slots.acquire(0), "a slot was made"
