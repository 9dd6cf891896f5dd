"""One read session's response over a shared HTTP/2 connection (see :mod:`resumable_stream._http2`).

The connection's I/O thread hands the session what arrives for its stream
(:meth:`Http2Response.on_headers`, :meth:`~Http2Response.on_data`,
:meth:`~Http2Response.on_end`, :meth:`~Http2Response.fail`); the session's
reader takes it with :meth:`~Http2Response.read1`, and each read hands the
flow-control window it frees back to the connection. Nothing here touches a
socket or h2's state machine.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from urllib3.exceptions import ProtocolError

if TYPE_CHECKING:
    from ._http2 import Http2Connection

__all__ = ["Http2Response"]


class Http2Response:
    """One session's response, as it arrives: what a read session uses of urllib3's response.

    Threading: read by one thread at a time; :meth:`shutdown` and :meth:`close` from any thread; the
    ``on_*`` methods and :meth:`fail` from the connection's I/O thread. A condition of its own wakes
    the reader, so sessions on one connection share no lock.
    """

    def __init__(self, connection: Http2Connection, stream_id: int, silence: float) -> None:
        self._connection = connection
        self._stream_id = stream_id
        self._silence = silence
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[tuple[bytes, int]] = deque()  # data and its flow-controlled size
        self._ended = False
        self._cancelled = False
        self._error: str | None = None
        self._headed = False
        self.status = 0
        self.headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Http2Response stream={self._stream_id} status={self.status}>"

    def on_headers(self, headers: dict[str, str]) -> None:
        """The response's headers arrived."""
        with self._cond:
            if self._cancelled:
                return
            self.headers = headers
            self.status = int(headers.get(":status", "0"))
            self._headed = True
            self._cond.notify_all()

    def on_data(self, data: bytes, flow: int) -> int:
        """Data arrived, ``flow`` bytes of the window: what the connection must hand back at once
        (all of it, when the session was closed meanwhile), else 0."""
        with self._cond:
            if self._cancelled:
                return flow
            self._chunks.append((data, flow))
            self._cond.notify_all()
        return 0

    def on_end(self) -> None:
        """The server ended the stream: the body is complete."""
        with self._cond:
            if self._cancelled:
                return
            self._ended = True
            self._cond.notify_all()

    def fail(self, reason: str) -> None:
        """The stream broke off (reset, or its connection lost): the reader raises once it has the rest."""
        with self._cond:
            if self._error is None:
                self._error = reason
            self._cond.notify_all()

    def wait_for_headers(self, timeout: float) -> None:
        """Wait for the response's headers; :class:`urllib3.exceptions.ProtocolError` if they do not come."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._headed or self._error is not None, timeout):
                self._error = f"no answer within {timeout:.0f} s"
            error = None if self._headed else self._error
        if error is not None:
            self._cancel()
            raise ProtocolError(error)

    def read1(self, amount: int) -> bytes:
        """About ``amount`` bytes of the body, waiting for some; ``b""`` at its end.

        Raises :class:`urllib3.exceptions.ProtocolError` if the stream breaks off, or if nothing arrives
        for the session's silence bound.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._ended or self._error is not None,
                                       self._silence):
                self._error = f"nothing arrived for {self._silence:.0f} s"
            parts: list[bytes] = []
            size = taken = 0
            while self._chunks and taken < amount:
                data, flow = self._chunks.popleft()
                parts.append(data)
                taken += len(data)
                size += flow
            error = self._error if not parts else None
        if error is not None:
            self._cancel()
            raise ProtocolError(error)
        if size:
            self._connection.acknowledge(self._stream_id, size)
        return b"".join(parts)

    def read(self) -> bytes:
        """The rest of the body."""
        parts = []
        while chunk := self.read1(1 << 20):
            parts.append(chunk)
        return b"".join(parts)

    def shutdown(self) -> None:
        """End the session from any thread: a reader waiting in :meth:`read1` raises."""
        self.fail("the session was closed")
        self._cancel()

    def close(self) -> None:
        with self._cond:
            done = self._ended and not self._chunks
        if not done:
            self.shutdown()

    def _cancel(self) -> None:
        with self._cond:
            self._cancelled = True  # from now on, what arrives is handed back at once (see on_data)
            unread = sum(flow for _, flow in self._chunks)
            self._chunks.clear()
        self._connection.cancel(self._stream_id, unread)

    def release_conn(self) -> None:
        """Nothing to release: the connection is shared (urllib3's response has this)."""

    def drain_conn(self) -> None:
        """Nothing to drain: the stream has ended (urllib3's response has this)."""
