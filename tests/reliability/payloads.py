"""What the suite's sources yield: deterministic chunks of every kind, at a pace, with when each was produced.

Every chunk carries its index, so a doubled or missing chunk can never hide behind an equal neighbour.
The same ``(kind, count, seed)`` gives the same chunks in every process (workers, the Flask app).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence

#: The kinds of streams the suite writes.
KINDS = ("ascii", "unicode", "bytes", "hostile")

_UNICODE = ["é", "日本語", "🙂", "e\u0301", "שלום", "👩‍👩‍👧", "\u2028", "Ω≈ç√", "\ufeff", "\U0001d54f", "ß", "\u00a0"]
_HOSTILE = ["\n", "\r\n", "\n\n", "data: x", "event: error", "id: 99", "retry: 0", ":", "\x1b[31m", "\t", "\x00",
            "\x7f", "\u0085", "\r"]


def chunks(kind: str, count: int, seed: int) -> list[str] | list[bytes]:
    """``count`` chunks of ``kind`` (see :data:`KINDS`), the same for the same seed everywhere."""
    rng = random.Random(f"{kind}-{seed}")
    if kind == "bytes":
        return [i.to_bytes(4, "big") + rng.randbytes(rng.randint(0, 200)) for i in range(count)]
    out: list[str] = []
    for i in range(count):
        if kind == "ascii":
            body = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz ", k=rng.randint(0, 40)))
        elif kind == "unicode":
            body = "".join(rng.choices(_UNICODE, k=rng.randint(1, 12)))
        elif kind == "hostile":
            body = "".join(rng.choices([*_HOSTILE, "x", "y "], k=rng.randint(1, 10)))
        else:
            raise ValueError(f"unknown kind {kind!r}")
        out.append(f"<{i}>{body}")
    return out


class Paced:
    """A source: ``items`` with a random pause of up to ``2 * delay`` before each, and optional idle spells.

    ``idle`` maps an index to seconds of silence before that item (a long tool call). ``produced[i]``
    is the monotonic time item ``i`` was handed to the engine; ``closed`` is set once the source ended.
    """

    def __init__(self, items: Sequence[str | bytes], delay: float, seed: int, idle: dict[int, float] | None = None,
                 forever: bool = False) -> None:
        self.items = list(items)
        self.delay = delay
        self.idle = idle or {}
        self.forever = forever
        self.produced: list[float] = []
        self.calls = 0
        self.closed = threading.Event()
        self._rng = random.Random(seed)

    def __call__(self) -> Iterator[str | bytes]:
        self.calls += 1
        try:
            i = 0
            while i < len(self.items) or self.forever:
                time.sleep(self.idle.get(i, 0) + self._rng.uniform(0, 2 * self.delay))
                item = self.items[i] if i < len(self.items) else f"<{i}>tick "
                self.produced.append(time.monotonic())
                yield item
                i += 1
        finally:
            self.closed.set()

    def index_of(self, chunk: str | bytes) -> int:
        """The index of a chunk (its ``<i>`` or 4-byte prefix)."""
        if isinstance(chunk, bytes):
            return int.from_bytes(chunk[:4], "big")
        return int(chunk[1 : chunk.index(">")])
