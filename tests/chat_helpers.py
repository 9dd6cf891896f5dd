"""Helpers for the tests of examples/flask_chat: reading its SSE answers as they arrive."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .support import Event, parse_sse

#: The final events of an answer stream.
ENDINGS = ("end", "error", "stopped", "abandoned")


def sse_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Parse an event-stream body event by event, as its bytes arrive (in chunks of any size)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            yield from parse_sse(frame.decode("utf-8") + "\n\n")[0]


def read_answer(events: Iterable[Event], limit: int | None = None) -> tuple[str, str | None, Event | None]:
    """Collect data events: ``(text, last data cursor, final event)``, after at most ``limit`` data events.

    The final event is None when the stream ended without one, or when ``limit`` was reached first.
    """
    text: list[str] = []
    cursor = None
    for event in events:
        if event.event in ENDINGS:
            return "".join(text), cursor, event
        text.append(event.data)
        cursor = event.id
        if len(text) == limit:
            break
    return "".join(text), cursor, None
