"""Failures injected into the local server's answers, switchable at run time."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any

from .errors import CODE_STATUS, DEFAULT_CODE
from .routing import OPERATIONS

__all__ = ["Effect", "Fault", "Faults", "make_fault"]


@dataclass(frozen=True)
class Fault:
    """One injected failure; see :meth:`Faults.add`. ``times`` is how many more requests it affects."""

    op: str | None = None
    stream: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after_ms: int | None = None
    latency: float = 0.0
    drop: bool = False
    drop_after_commit: bool = False
    times: int | None = None

    @property
    def terminal(self) -> bool:
        """True when the fault replaces or cuts off the response (not just delays it)."""
        return self.status is not None or self.drop or self.drop_after_commit

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Effect:
    """What the faults do to one request: a delay, then maybe a terminal fault."""

    latency: float = 0.0
    fault: Fault | None = None  # the terminal fault to apply, if any


class Faults:
    """Failures injected into the server's answers, switchable at run time. Thread-safe.

    Faults are checked in the order they were added. Every matching fault adds
    its ``latency``; the first matching fault with a terminal effect
    (``status``, ``drop`` or ``drop_after_commit``) applies it, and only the
    faults that took effect use up one of their ``times``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        op: str | None = None,
        stream: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        message: str | None = None,
        retry_after_ms: int | None = None,
        latency: float = 0.0,
        drop: bool = False,
        drop_after_commit: bool = False,
        times: int | None = None,
    ) -> None:
        """Inject a fault into requests of operation ``op`` on ``stream`` (``None`` matches any).

        ``op`` is an OpenAPI operationId: ``append``, ``read``, ``check_tail``,
        ``ensure_stream``, ``create_basin``... Effects: ``latency`` seconds of
        delay before the request is handled; ``status`` (with ``code``, which
        defaults from the status, or ``code`` alone) answers with that S2 error
        instead of handling the request, with a ``retry-after-ms`` header when
        ``retry_after_ms`` is given; ``drop`` closes the connection without
        handling or answering; ``drop_after_commit`` (``op="append"`` only)
        performs the append, then closes the connection without answering.
        ``times`` limits how many matching requests are affected (``None``:
        until :meth:`clear`). Requests that are not about one stream (basins,
        stream listings) match only faults without a ``stream``. Raises
        :class:`ValueError` for a fault that makes no sense.
        """
        fault = make_fault(
            op=op,
            stream=stream,
            status=status,
            code=code,
            message=message,
            retry_after_ms=retry_after_ms,
            latency=latency,
            drop=drop,
            drop_after_commit=drop_after_commit,
            times=times,
        )
        self.append(fault)

    def append(self, fault: Fault) -> None:
        """Add a fault made by :func:`make_fault` (the ``POST /_faults`` admin route uses this)."""
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> int:
        """Remove every fault; return how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def active(self) -> list[Fault]:
        """The faults still in force, in the order they apply."""
        with self._lock:
            return list(self._faults)

    def take(self, op: str, stream: str | None) -> Effect:
        """The effect on one request, using up the faults that apply."""
        latency = 0.0
        chosen: Fault | None = None
        with self._lock:
            kept: list[Fault] = []
            for fault in self._faults:
                matches = (fault.op is None or fault.op == op) and (fault.stream is None or fault.stream == stream)
                applies = matches and (not fault.terminal or chosen is None)
                if applies:
                    latency += fault.latency
                    if fault.terminal:
                        chosen = fault
                    if fault.times is not None:
                        if fault.times <= 1:
                            continue
                        fault = dataclasses.replace(fault, times=fault.times - 1)
                kept.append(fault)
            self._faults = kept
        return Effect(latency, chosen)


def make_fault(
    *,
    op: Any,
    stream: Any,
    status: Any,
    code: Any,
    message: Any,
    retry_after_ms: Any,
    latency: Any,
    drop: Any,
    drop_after_commit: Any,
    times: Any,
) -> Fault:
    """Validate fault settings (from Python or from JSON) and resolve the status/code pair."""
    if op is not None and op not in OPERATIONS:
        raise ValueError(f"unknown operation {op!r}; use an OpenAPI operationId such as 'append' or 'read'")
    if stream is not None and not isinstance(stream, str):
        raise ValueError("stream must be a string or None")
    if not isinstance(drop, bool) or not isinstance(drop_after_commit, bool):
        raise ValueError("drop and drop_after_commit must be booleans")
    if isinstance(latency, bool) or not isinstance(latency, (int, float)) or latency < 0:
        raise ValueError("latency must be a non-negative number of seconds")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer or None")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ValueError("status must be an integer")
    if code is not None and not isinstance(code, str):
        raise ValueError("code must be a string")
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a string")
    if retry_after_ms is not None and (
        isinstance(retry_after_ms, bool) or not isinstance(retry_after_ms, int) or retry_after_ms < 0
    ):
        raise ValueError("retry_after_ms must be a non-negative integer")
    if code is not None and status is None:
        if code not in CODE_STATUS:
            raise ValueError(f"unknown code {code!r}; give a status too")
        status = CODE_STATUS[code]
    if status is not None:
        if status in (412, 416):
            raise ValueError("412 and 416 have structured bodies; provoke them with real requests instead")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if code is None:
            if status not in DEFAULT_CODE:
                raise ValueError(f"no default code for status {status}; give a code")
            code = DEFAULT_CODE[status]
    elif message is not None or retry_after_ms is not None:
        raise ValueError("message and retry_after_ms need a status or code")
    if sum((status is not None, drop, drop_after_commit)) > 1:
        raise ValueError("choose one of status, drop and drop_after_commit")
    if drop_after_commit and op != "append":
        raise ValueError("drop_after_commit applies to op='append' only")
    return Fault(
        op=op,
        stream=stream,
        status=status,
        code=code,
        message=message,
        retry_after_ms=retry_after_ms,
        latency=float(latency),
        drop=drop,
        drop_after_commit=drop_after_commit,
        times=times,
    )
