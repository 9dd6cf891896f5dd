"""Readers on threads of their own, recording every event, how they ended and when; and bounded waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from resumable_stream import ResumableStream

from .exact import Event


class Reader:
    """Open a reader with ``open_reader`` (after ``delay`` seconds) on a thread, and read it to its end.

    ``events`` are ``(cursor, chunk)`` as it got them; ``error`` what it ended with; ``status`` the
    reader's final status; ``none`` is True when ``open_reader`` returned None (nothing to read).
    ``on_event`` is called with each event (from the reader's thread).
    """

    def __init__(self, name: str, open_reader: Callable[[], ResumableStream[Any] | None], *, delay: float = 0.0,
                 on_event: Callable[[Event], None] | None = None, start: bool = True) -> None:
        self.name = name
        self.events: list[Event] = []
        self.event_times: list[float] = []
        self.error: BaseException | None = None
        self.status: Any = None
        self.none = False
        self.stream: ResumableStream[Any] | None = None
        self.opened = threading.Event()
        self.ended_at: float | None = None
        self._open = open_reader
        self._delay = delay
        self._on_event = on_event
        self._thread = threading.Thread(target=self._run, name=f"reader {name}", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            if self._delay:
                time.sleep(self._delay)
            self.stream = self._open()
            self.opened.set()
            if self.stream is None:
                self.none = True
                return
            self._read(self.stream)
            self.status = self.stream.status
        except BaseException as exc:
            self.error = exc
            self.status = self.stream.status if self.stream is not None else None
        finally:
            self.opened.set()
            self.ended_at = time.monotonic()

    def _read(self, stream: ResumableStream[Any]) -> None:
        for cursor, chunk in stream.events():
            event = (int(cursor), chunk)
            self.events.append(event)
            self.event_times.append(time.monotonic())
            if self._on_event is not None:
                self._on_event(event)

    def join(self, timeout: float) -> bool:
        """Wait for the reader to end; True if it did within ``timeout``."""
        self._thread.join(max(timeout, 0))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def state(self) -> str:
        """How it ended: the final state, ``none``, an exception's name, or ``hung``."""
        if self.alive:
            return "hung"
        if self.none:
            return "none"
        if self.status is not None:
            return str(self.status.state.value)
        return type(self.error).__name__ if self.error is not None else "unknown"


class Milestone:
    """An ``on_event`` hook: set once a reader passes cursor ``wanted``; :attr:`cursor` is where it was then."""

    def __init__(self, wanted: int) -> None:
        self.wanted = wanted
        self.cursor: int | None = None
        self._reached = threading.Event()

    def __call__(self, event: Event) -> None:
        if self.cursor is None and event[0] >= self.wanted:
            self.cursor = event[0]
            self._reached.set()

    def wait(self, timeout: float) -> int:
        """The cursor, once reached; :class:`AssertionError` after ``timeout``."""
        assert self._reached.wait(timeout), f"the reader never reached cursor {self.wanted}"
        assert self.cursor is not None
        return self.cursor


def join_all(readers: list[Reader], timeout: float) -> list[Reader]:
    """Wait for every reader, all within ``timeout`` in total; the ones still running."""
    deadline = time.monotonic() + timeout
    for reader in readers:
        reader.join(deadline - time.monotonic())
    return [reader for reader in readers if reader.alive]


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True
