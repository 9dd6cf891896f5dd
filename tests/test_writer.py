"""The writer's schedule: entries are taken when due, once each, and never wait for a sleeping thread's timeout.

The producers here only record when the writer asks them for a batch (and
return none), so what is tested is the schedule itself: the intake that
source threads append to without a lock, and the wake-ups of writer threads.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from resumable_stream import MemoryLog
from resumable_stream.writer import Writer


class _Recorder:
    """Stands in for a producer: notes each entry the writer takes, and has nothing to append."""

    def __init__(self) -> None:
        self.taken: Counter[int] = Counter()
        self.at: dict[int, float] = {}
        self.lock = threading.Lock()
        self.event = threading.Event()

    def take(self, entry: int, now: float) -> None:
        with self.lock:
            self.taken[entry] += 1
            self.at.setdefault(entry, time.monotonic())
        self.event.set()


def test_an_entry_due_now_wakes_a_thread_that_sleeps_until_a_later_one() -> None:
    writer = Writer(MemoryLog(), threads=1)
    later, soon = _Recorder(), _Recorder()
    try:
        writer.schedule(later, time.monotonic() + 30, 1)  # type: ignore[arg-type]
        time.sleep(0.2)  # the writer thread sleeps until then
        asked = time.monotonic()
        writer.schedule(soon, time.monotonic(), 1)  # type: ignore[arg-type]
        assert soon.event.wait(5), "the entry waited for the sleeping thread's timeout"
        assert soon.at[1] - asked < 5
        assert not later.taken
    finally:
        writer.close()


def test_entries_from_many_threads_are_each_taken_once_in_due_order_per_thread() -> None:
    writer = Writer(MemoryLog(), threads=4)
    recorders = [_Recorder() for _ in range(40)]
    per_thread = 50

    def schedule_all(recorder: _Recorder) -> None:
        for entry in range(per_thread):
            writer.schedule(recorder, time.monotonic() + (entry % 5) * 0.01, entry)  # type: ignore[arg-type]
            if entry % 7 == 0:
                time.sleep(0.001)  # let the writer threads sleep and be woken in between

    threads = [threading.Thread(target=schedule_all, args=(r,)) for r in recorders]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(sum(r.taken.values()) for r in recorders) < 40 * per_thread:
            time.sleep(0.01)
        for recorder in recorders:
            assert recorder.taken == Counter(range(per_thread))
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("first_due", "pause", "second_due"),
    [
        (0.0, 0.0, 0.0),  # both scheduled and due at once
        (0.2, 0.05, 0.3),  # the second a little later: no wake-up of its own, a thread already wakes before it
    ],
)
def test_an_entry_due_while_another_is_taken_goes_to_a_sleeping_thread(first_due: float, pause: float,
                                                                      second_due: float) -> None:
    # Two threads sleep until far entries. The first thread to take one of the two new entries blocks in
    # it: the other entry is taken on time by the other thread, not once the first thread is free again.
    writer = Writer(MemoryLog(), threads=2)
    release = threading.Event()

    class Blocking(_Recorder):
        def take(self, entry: int, now: float) -> None:
            super().take(entry, now)
            release.wait(10)

    far, first, second = _Recorder(), Blocking(), _Recorder()
    try:
        writer.schedule(far, time.monotonic() + 30, 1)  # type: ignore[arg-type]
        writer.schedule(far, time.monotonic() + 31, 2)  # type: ignore[arg-type]  # a second thread starts
        time.sleep(0.2)
        now = time.monotonic()
        writer.schedule(first, now + first_due, 1)  # type: ignore[arg-type]
        if pause:  # (even a sleep(0) would let the first entry be taken before the second is scheduled)
            time.sleep(pause)
        writer.schedule(second, now + second_due, 1)  # type: ignore[arg-type]
        assert first.event.wait(5)
        assert second.event.wait(5), "the second entry waited for the busy thread"
    finally:
        release.set()
        writer.close()


def test_a_writer_thread_that_cannot_start_is_not_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = Writer(MemoryLog(), threads=1)
    recorder = _Recorder()

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", refuse)
        with pytest.raises(RuntimeError):  # no writer thread runs: the caller is told
            writer.schedule(recorder, time.monotonic(), 1)  # type: ignore[arg-type]
    try:
        writer.schedule(recorder, time.monotonic(), 2)  # type: ignore[arg-type]  # a thread starts now
        assert recorder.event.wait(5)
    finally:
        writer.close()  # joins only threads that started


def test_close_while_a_writer_thread_starts_waits_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # close() on another thread, between a writer thread's creation and its start, joins it once started.
    writer = Writer(MemoryLog(), threads=1)
    closing_now = threading.Event()
    start = threading.Thread.start
    started: list[threading.Thread] = []

    def slow_start(self: threading.Thread) -> None:
        assert closing_now.wait(5)
        time.sleep(0.1)  # close() runs meanwhile
        start(self)
        started.append(self)

    errors: list[BaseException] = []

    def close() -> None:
        closing_now.set()
        try:
            writer.close(timeout=5)
        except BaseException as exc:
            errors.append(exc)

    closing = threading.Thread(target=close)
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", slow_start)
        scheduling = threading.Thread(target=writer.schedule, args=(_Recorder(), time.monotonic() + 30, 1))
        start(scheduling)
        start(closing)
        scheduling.join(5)
    closing.join(10)
    assert not closing.is_alive() and errors == []
    assert started and not started[0].is_alive(), "close() returned before the writer thread ended"
