"""What the suite watches besides the data: the library's log records, and a process's resources."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


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


@dataclass(frozen=True)
class Resources:
    """What a process holds: resident memory, threads, file descriptors (and how many are sockets)."""

    rss_mib: float
    threads: int
    fds: int
    sockets: int
    thread_names: tuple[str, ...] = ()

    @classmethod
    def now(cls, pid: int | None = None) -> Resources:
        where = f"/proc/{pid or 'self'}"
        rss = next(int(line.split()[1]) for line in Path(f"{where}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        fds = sockets = 0
        for fd in os.listdir(f"{where}/fd"):
            try:
                target = os.readlink(f"{where}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile (the listing's own descriptor among them)
            fds += 1
            sockets += target.startswith("socket:")
        names = tuple(sorted(t.name for t in threading.enumerate())) if pid is None else ()
        return cls(round(rss / 1024, 1), threading.active_count() if pid is None else 0, fds, sockets, names)
