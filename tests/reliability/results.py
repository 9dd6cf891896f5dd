"""The results file: what every test of the suite tried and counted, and the machine it ran on.

Each test records its figures (``record(streams=100, faults=412, ...)``); the conftest adds its outcome
and duration, and the file is rewritten after every test, so a run that is cut short still leaves what
it did. ``report.py`` turns the file of a full run into ``docs/reliability.md``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from .scale import SIZE

ROOT = Path(__file__).resolve().parents[2]
#: Where a full run's results live (committed: docs/reliability.md is made from them).
FULL_RESULTS = ROOT / "tests" / "reliability" / "results" / "full.json"
#: Where a bounded run's results go (ignored by git).
BOUNDED_RESULTS = ROOT / "build" / "reliability" / "bounded.json"


def results_path() -> Path:
    """``RELIABILITY_RESULTS`` if set, else the default file of this run's size."""
    explicit = os.environ.get("RELIABILITY_RESULTS")
    if explicit:
        return Path(explicit)
    return FULL_RESULTS if SIZE == "full" else BOUNDED_RESULTS


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def machine() -> dict[str, Any]:
    """The machine the suite runs on, as far as Linux tells."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "commit": commit or "unknown",
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class Results:
    """The results of one run, written to ``path`` after every test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        now = datetime.datetime.now(datetime.timezone.utc)
        self.data: dict[str, Any] = {
            "size": SIZE,
            "started": now.isoformat(timespec="seconds"),
            "machine": machine(),
            "modules": {},
            "tests": {},
        }

    def test(self, key: str) -> dict[str, Any]:
        """The entry of one test, made on first use."""
        entry: dict[str, Any] = self.data["tests"].setdefault(key, {"figures": {}})
        return entry

    def module(self, name: str, doc: str | None) -> None:
        self.data["modules"].setdefault(name, {"doc": doc or ""})

    def write(self) -> None:
        self.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.data["machine"]["load_at_end"] = [round(x, 2) for x in os.getloadavg()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.data, indent=1, ensure_ascii=False) + "\n")
        partial.replace(self.path)
