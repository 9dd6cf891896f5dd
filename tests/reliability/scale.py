"""How big a run is: ``RELIABILITY_SIZE=bounded`` (the default, what ``make test`` runs) or ``full``.

Every test takes its counts (streams, waves, trials, examples) from here, so the bounded run covers every
scenario with smaller numbers, and ``make reliability`` runs the same code at full size.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

SIZE = os.environ.get("RELIABILITY_SIZE", "bounded").strip() or "bounded"
if SIZE not in ("bounded", "full"):
    raise RuntimeError(f"RELIABILITY_SIZE must be 'bounded' or 'full', not {SIZE!r}")
FULL = SIZE == "full"


def pick(bounded: T, full: T) -> T:
    """``bounded`` in a bounded run, ``full`` in a full one."""
    return full if FULL else bounded


def _marks() -> list[object]:
    import pytest

    # pytest-timeout's per-test bound: the project's 120 s for a bounded run, more for the full one's soak.
    return [pytest.mark.reliability, pytest.mark.timeout(pick(120, 1500))]


#: Every module's ``pytestmark``: the ``reliability`` marker and a timeout for this run's size.
MARKS = _marks()
