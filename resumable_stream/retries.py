"""Retrying S2 requests: :class:`RetryPolicy` (public) and the tenacity loop :class:`~resumable_stream.S2Client` runs.

What is retried, and when an append may be re-sent, is decided where the
failure is classified (:class:`~resumable_stream._http.Failure`): this module
only spaces the attempts and stops them.

Thread-safe: a policy is immutable, and each call builds its own loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from ._http import Failure

__all__ = ["RetryPolicy", "with_retries"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`~resumable_stream.S2Client` retries a failed request.

    Attempt *n* (from 1) that fails waits ``min(initial_backoff * 2**(n-1),
    max_backoff)`` plus a random jitter of up to the same amount, and at
    least the server's ``retry-after-ms``. Retrying stops after
    ``max_attempts`` attempts or once ``max_elapsed`` seconds have passed
    since the first one, whichever comes first. ``RetryPolicy(max_attempts=1)``
    turns retries off.
    """

    max_attempts: int = 5
    max_elapsed: float = 20.0
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_elapsed, self.initial_backoff, self.max_backoff) < 0:
            raise ValueError("durations must not be negative")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``, before ``retry-after-ms``."""
        base = min(self.initial_backoff * 2.0 ** (attempt - 1), self.max_backoff)
        return base + random.uniform(0, base)


def with_retries(attempt: Callable[[], T], policy: RetryPolicy, what: str, *, idempotent: bool, waits: float = 0,
                 deadline: float | None = None, closed: threading.Event) -> T:
    """Run ``attempt`` under ``policy``; raise the last error as an :class:`~resumable_stream.S2Error`.

    ``what`` names the request in the log's retry warnings. ``idempotent``
    allows retrying failures whose outcome is unknown. ``waits`` is how long
    an attempt may legitimately take (a long-poll), on top of the policy's
    budget; ``deadline`` (monotonic) ends retrying earlier; ``closed``, once
    set, ends the waits between attempts and the retrying.
    """
    try:
        return attempt()  # the common case, without building a retry loop
    except Failure as failure:
        first: Failure | None = failure
    budget = policy.max_elapsed + waits
    if deadline is not None:
        budget = min(budget, deadline - time.monotonic())

    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, Failure) and exc.retryable and (idempotent or not exc.ambiguous)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        delay = policy.backoff(state.attempt_number)
        if isinstance(exc, Failure) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        return delay

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("S2 %s failed (%s); retrying in %.2f s (attempt %d of %d)", what, exc,
                       state.upcoming_sleep, state.attempt_number, policy.max_attempts)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(retryable),
        stop=(
            tenacity.stop_after_attempt(policy.max_attempts)
            | tenacity.stop_before_delay(budget)
            | tenacity.stop_when_event_set(closed)
        ),
        wait=wait,
        sleep=tenacity.sleep_using_event(closed),
        before_sleep=before_sleep,
        reraise=True,
    )

    def replayed() -> T:
        # The first attempt has failed already: tenacity sees its failure, then makes the next attempts.
        nonlocal first
        if first is not None:
            failed, first = first, None
            raise failed
        return attempt()

    try:
        return retrying(replayed)
    except Failure as failure:
        error = failure.error
    raise error
