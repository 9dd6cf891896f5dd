"""The client's connection slots: never more holders than slots, no slot lost, wake-ups in FIFO order, timeouts."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from resumable_stream import _slots
from resumable_stream._slots import Slots

from .support import run_racing


def test_a_wait_without_a_free_slot_times_out_and_takes_nothing() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    started = time.monotonic()
    assert not slots.acquire(0.2)
    assert 0.15 < time.monotonic() - started < 5
    slots.release()
    assert slots.acquire(0)  # the timed-out waiter was not handed the slot
    assert not slots.acquire(0)


def _queued(slots: Slots, count: int) -> tuple[list[threading.Thread], list[int]]:
    """``count`` threads queued for a slot, one after the other; each notes its number once it has one."""
    order: list[int] = []

    def wait(n: int) -> None:
        assert slots.acquire(10)
        order.append(n)
        slots.release()

    threads = []
    for n in range(count):
        threads.append(threading.Thread(target=wait, args=(n,)))
        threads[-1].start()
        _wait_until(lambda n=n: len(slots._waiters) == n + 1)  # each queues before the next
    return threads, order


def test_a_release_wakes_the_thread_that_waited_longest() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    threads, order = _queued(slots, 5)
    slots.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_running_thread_may_take_a_freed_slot_and_the_woken_one_stays_first_in_line() -> None:
    slots = Slots(1)
    assert slots.acquire(1)
    threads, order = _queued(slots, 2)
    slots.release()
    if slots.acquire(0):  # this thread still runs: it takes the slot, unless the woken one was quicker
        time.sleep(0.1)
        assert order == [], "a woken thread went on without a slot"
        slots.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1], "the woken thread lost its place in line"
    assert slots.acquire(0) and not slots.acquire(0), "a slot was lost or made"


def test_an_interrupted_wait_passes_its_wake_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first waiter's wait is interrupted (as a gevent.Timeout would) just as a release wakes it: the
    # wake-up goes to the next waiter, who would otherwise sleep beside a free slot.
    slots = Slots(1)
    assert slots.acquire(1)
    made: list[_slots._Waiter] = []

    class Interrupted:
        def __init__(self, lock: Any) -> None:
            self.lock = lock

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            _wait_until(lambda: len(slots._waiters) == 2)
            slots.release()  # wakes this waiter, the first in line
            raise KeyboardInterrupt

        def release(self) -> None:
            self.lock.release()

    class Waiter(_slots._Waiter):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)
            if len(made) == 1:
                self.woken = Interrupted(self.woken)  # type: ignore[assignment]

    monkeypatch.setattr(_slots, "_Waiter", Waiter)
    first, first_result = _in_thread(lambda: _raised(lambda: slots.acquire(5)))
    _wait_until(lambda: len(made) == 1)
    second, second_result = _in_thread(lambda: slots.acquire(2))
    first.join(10)
    second.join(10)
    assert first_result == [KeyboardInterrupt]
    assert second_result == [True], "the wake-up went with the interrupted waiter"


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


def _in_thread(target: Callable[[], object], *, start: bool = True) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(target()))
    if start:
        thread.start()
    return thread, result


def _raised(call: Callable[[], object]) -> object:
    try:
        return call()
    except BaseException as exc:
        return type(exc)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_thread_that_finds_a_slot_as_it_queues_passes_its_wake_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # A release finds nobody queued; the first waiter queues, finds that freed slot, and before it can
    # withdraw, a second thread queues behind it and a second release wakes it, not the second thread.
    monkeypatch.setattr(_slots, "deque", _Paused)
    slots = Slots(2)
    assert slots.acquire(1) and slots.acquire(1)
    queueing, found, queue, withdraw = (threading.Event() for _ in range(4))

    def first_queues() -> None:
        if threading.current_thread() is first:
            queueing.set()
            assert queue.wait(5)

    def first_finds() -> None:
        if threading.current_thread() is first and slots._waiters:  # its look after queueing
            found.set()
            assert withdraw.wait(5)

    slots._waiters.before_append = first_queues  # type: ignore[attr-defined]
    first, first_result = _in_thread(lambda: slots.acquire(2), start=False)
    first.start()
    assert queueing.wait(5)
    slots.release()  # nobody queued yet: the slot is left free
    slots._free.after_pop = first_finds  # type: ignore[attr-defined]
    slots._waiters.before_append = lambda: None  # type: ignore[attr-defined]
    queue.set()
    assert found.wait(5)
    second, second_result = _in_thread(lambda: slots.acquire(2))
    _wait_until(lambda: len(slots._waiters) == 2)
    time.sleep(0.1)  # the second thread sleeps
    slots.release()  # wakes the first in line: the first thread, which has a slot already
    withdraw.set()
    first.join(10)
    second.join(10)
    assert first_result == [True]
    assert second_result == [True], "a slot stayed free while a thread waited for it"


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
            if not slots.acquire(30 if patient else 0.001):
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
    run_racing(threads)
    assert not any(thread.is_alive() for thread in threads)
    assert stuck == 0, "a thread waited 30 s for one of four slots that are each held for an instant"
    assert most == 4
    assert all(slots.acquire(0) for _ in range(4)), "a slot was lost"
    assert not slots.acquire(0), "a slot was made"
