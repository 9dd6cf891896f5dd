"""The peer's workloads, in Python: the same tokens, sources, receivers and lag definition.

``../shared/peers/bench_vercel.mjs`` measures Vercel's ``resumable-stream``;
these are its definitions, so that both sides are measured alike:

* a token is 4 characters, 3 base-62 digits of its index and a space (``"00A "``);
* a source yields token *i* at ``t0 + i / rate`` (0: as fast as it is pulled)
  and stamps the moment it yields it;
* a receiver decodes every token's index, checks it got exactly ``0..n-1``, in
  order, once, and then the end, and stamps when each arrived;
* lag = arrival time - yield time, on one process clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_INDEX = {c: i for i, c in enumerate(B62)}
TOKEN_LEN = 4
MAX_TOKENS = 62**3


def token(i: int) -> str:
    return B62[i // 3844] + B62[(i // 62) % 62] + B62[i % 62] + " "


def untoken(text: str, k: int) -> int:
    try:
        if text[k + 3] != " ":
            return -1
        return _B62_INDEX[text[k]] * 3844 + _B62_INDEX[text[k + 1]] * 62 + _B62_INDEX[text[k + 2]]
    except (KeyError, IndexError):
        return -1


def paced_source(n: int, rate: float, sent_at: list[float]) -> Callable[[], Iterator[str]]:
    """A source of ``n`` tokens at ``rate`` per second (0: as fast as pulled); ``sent_at[i]``: when token i went."""

    def source() -> Iterator[str]:
        start = time.perf_counter()
        for i in range(n):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent_at[i] = time.perf_counter()
            yield token(i)

    return source


@dataclass
class Receiver:
    """What one reader got: every token's arrival time, and whether the sequence was exact.

    :meth:`consume` checks each chunk as it arrives, as the peer's receiver does: the per-chunk work
    of a consumer (a request thread writing each chunk out does at least as much). :meth:`collect`
    only stamps each chunk's arrival and checks the tokens once the stream has ended: for the
    single-stream throughput and replay figures, which measure the library's delivery (in Python,
    checking 100,000 tokens on the reading thread takes longer than the library's whole replay;
    the peer's JavaScript receiver does the same check for a fraction of that).
    """

    n: int
    sent_at: list[float]
    received_at: list[float] = field(init=False)
    next: int = 0
    #: Characters received so far (a token is 4), counted as they arrive: what a benchmark polls.
    chars: int = 0
    errors: list[str] = field(default_factory=list)
    closed_at: float | None = None
    end_state: str | None = None

    def __post_init__(self) -> None:
        self.received_at = [math.nan] * self.n

    @property
    def received(self) -> int:
        """Tokens received so far (counted by length; checked by :meth:`on_chunk`)."""
        return self.chars // TOKEN_LEN

    def on_chunk(self, text: str, at: float) -> None:
        self.chars += len(text)
        if len(text) % TOKEN_LEN and len(self.errors) < 5:
            self.errors.append(f"chunk length {len(text)} is not a multiple of {TOKEN_LEN}")
        for k in range(0, len(text) - TOKEN_LEN + 1, TOKEN_LEN):
            index = untoken(text, k)
            if index != self.next:
                if len(self.errors) < 5:
                    self.errors.append(f"expected token {self.next}, got {index}")
                if not 0 <= index < self.n:
                    continue
                self.next = index
            self.received_at[index] = at
            self.next += 1

    def consume(self, stream: Iterable[Any]) -> None:
        """Read ``stream`` to its end on this thread, checking every chunk as it comes."""
        try:
            for chunk in stream:
                self.on_chunk(chunk, time.perf_counter())
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self._closed(stream)

    def collect(self, stream: Iterable[Any]) -> None:
        """Read ``stream`` to its end on this thread, stamping each chunk; check them all afterwards."""
        arrivals: list[tuple[str, float]] = []
        clock = time.perf_counter
        try:
            for chunk in stream:
                arrivals.append((chunk, clock()))
                self.chars += len(chunk)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        self._closed(stream)
        self.chars = 0
        for chunk, at in arrivals:
            self.on_chunk(chunk, at)

    def _closed(self, stream: Iterable[Any]) -> None:
        self.closed_at = time.perf_counter()
        status = getattr(stream, "status", None)
        self.end_state = status.state.value if status is not None else None

    @property
    def complete(self) -> bool:
        return not self.errors and self.next == self.n and self.closed_at is not None

    def lags_ms(self, start: int = 0) -> list[float]:
        return [(self.received_at[i] - self.sent_at[i]) * 1000 for i in range(start, min(self.next, self.n))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max, with the peer's percentile definition (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return {}

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {"n": len(ordered), "p50": rank(50), "p95": rank(95), "p99": rank(99), "max": ordered[-1]}
