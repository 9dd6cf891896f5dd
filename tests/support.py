"""Constants and helpers shared by the test modules."""

from __future__ import annotations

from resumable_stream import RetryPolicy

#: The basin the session's local S2 server pre-creates.
BASIN = "test-basin"
#: Fast retries keep fault tests short; the budget still covers a few attempts.
FAST_RETRY = RetryPolicy(max_attempts=4, max_elapsed=5.0, initial_backoff=0.01, max_backoff=0.05)
