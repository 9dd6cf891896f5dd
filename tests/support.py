"""Constants and helpers shared by the test modules."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from resumable_stream import RetryPolicy

#: The basin the session's local S2 server pre-creates.
BASIN = "test-basin"
#: Fast retries keep fault tests short; the budget still covers a few attempts.
FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=5.0, initial_backoff=0.01, max_backoff=0.05)


class Event(NamedTuple):
    """One parsed Server-Sent Event."""

    id: str | None
    event: str
    data: str


def parse_sse(body: str) -> tuple[list[Event], list[str]]:
    """Parse an event-stream body as a browser would: the events, and the comments seen.

    Follows the WHATWG rules: one optional space after the colon, ``data``
    lines joined with newlines, events dispatched on a blank line, ``id``
    kept only on the event that carries it here (for assertions).
    """
    events: list[Event] = []
    comments: list[str] = []
    event_id: str | None = None
    name = ""
    data: list[str] = []
    for line in re.split(r"\r\n|\r|\n", body):
        if line == "":
            if data:
                events.append(Event(event_id, name or "message", "\n".join(data)))
            event_id, name, data = None, "", []
            continue
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
        elif field == "event":
            name = value
    return events, comments


class Gate:
    """A stream source that yields ``before``, waits (at most 10 s) until :meth:`open`, then yields ``after``."""

    def __init__(self, before: Sequence[str] = (), after: Sequence[str] = ()) -> None:
        self.before, self.after = before, after
        self._opened = threading.Event()

    def __call__(self) -> Iterator[str]:
        yield from self.before
        self._opened.wait(10)
        yield from self.after

    def open(self) -> None:
        self._opened.set()


def run_to_end(stream: Any, timeout: float = 20) -> tuple[list[Any], BaseException | None]:
    """Read ``stream`` on a thread; its chunks and the exception it ended with. Fails if it does not end."""
    chunks: list[Any] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            chunks.extend(stream)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), "the reader never ended"
    return chunks, errors[0] if errors else None
