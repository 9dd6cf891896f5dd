"""Liveness: when a silent producer counts as dead, and who may say so.

A producer of this library is never silent for long while it lives: when its
source is idle it appends a heartbeat record every :func:`heartbeat_interval`,
and it gives up on an append (ending the stream itself) before
:func:`append_deadline` has passed. So a live producer's records are never
further apart than its *silence bound*, and it declares that bound in its
claim token (``session-30s-<hex>``), for every reader in every process to use:
a reader that sees no record for longer than the bound may record the stream
as abandoned (conditionally, so that a producer that does write after all
wins).

Whatever its silence, a producer that runs in this very process is alive:
producers register here while they run (:func:`running_here`), so a reader
in an overloaded process never records the stream of a starved producer
beside it as abandoned.

A claim without a declared bound was written by another library (such as
``@s2-dev/resumable-stream``, whose producers write nothing while their source
is idle): silence proves nothing about such a producer, so it is never fenced.
Its readers still end after the reader's own bound, and ``stream_status``
reports the stream abandoned while it stays silent, but the stream stays
writable.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import threading

from . import _wire
from .log import MAX_FENCING_TOKEN_BYTES

__all__ = [
    "SHORTEST_BOUND",
    "append_deadline",
    "declared_bound",
    "heartbeat_interval",
    "new_claim_token",
    "register",
    "running_here",
    "unregister",
]

#: The shortest silence bound a producer may declare, in seconds.
SHORTEST_BOUND = 1.0
_DECLARED = re.compile(r"session-(\d{1,6})s-[0-9a-f]+")


def heartbeat_interval(bound: float) -> float:
    """How long an idle producer waits before writing a heartbeat: a third of its silence bound."""
    return bound / 3


def append_deadline(bound: float) -> float:
    """How long a producer keeps retrying one append before it gives up.

    A heartbeat is due at most ``bound / 3`` after the last record, and must land
    within this, with a sixth of the bound to spare: so a live producer is never
    silent for the whole bound.
    """
    return bound / 2


def new_claim_token(bound: float) -> str:
    """A session token that declares ``bound`` (whole seconds, rounded up) as the producer's silence bound."""
    prefix = f"{_wire.SESSION}{math.ceil(bound)}s-"
    return prefix + secrets.token_hex((MAX_FENCING_TOKEN_BYTES - len(prefix)) // 2)


def declared_bound(token: str) -> float | None:
    """The silence bound a claim token declares; ``None`` for a producer that does not heartbeat."""
    match = _DECLARED.fullmatch(token)
    return float(match.group(1)) if match else None


_running: set[str] = set()  # claim tokens of the producers running in this process
_running_lock = threading.Lock()


def register(token: str) -> None:
    """The producer holding ``token`` runs in this process (called when its source starts)."""
    with _running_lock:
        _running.add(token)


def unregister(token: str) -> None:
    """The producer holding ``token`` has settled its outcome."""
    with _running_lock:
        _running.discard(token)


def running_here(token: str) -> bool:
    """True while the producer holding ``token`` runs in this process."""
    return token in _running


def _forget_parent() -> None:
    global _running_lock
    _running_lock = threading.Lock()
    _running.clear()  # a child runs none of its parent's producers


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent)
