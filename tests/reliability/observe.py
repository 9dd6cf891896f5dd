"""What the suite watches besides the data: the library's log records, and a process's resources."""

from __future__ import annotations

import logging
from collections import Counter


class Tally(logging.Handler):
    """Counts the library's log records by kind: retries, reopened sessions, warnings, errors."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retrying in" in message:
            self.counts["retries"] += 1
        elif "reopening in" in message:
            self.counts["sessions reopened"] += 1
        elif "not sending it again" in message:
            self.counts["lost answers found landed"] += 1
        elif record.levelno >= logging.ERROR:
            self.counts["errors"] += 1
            self.errors.append(message[:300])
        elif record.levelno >= logging.WARNING:
            self.counts["warnings"] += 1
