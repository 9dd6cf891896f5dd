"""The stop watcher: one thread per context that reads stop requests and stops this process's producers.

A stop request is one record on the control stream (``_wire.CONTROL_STREAM``):
``{"stop": <stream id>, "session": <claim token>}``. Every context that
produces streams follows the control stream from its tail as of when it
started, with one read session, and hands each request to ``on_request``.

Threading: :meth:`StopWatcher.start` may be called from any thread, and starts
the watcher thread once; if that thread ever dies, the next call starts
another. :meth:`StopWatcher.stop` ends it at once (it closes the session
the thread is reading).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from . import _wire, protocol
from .exceptions import S2Error
from .log import Log, ReadBatch, ReadSession, StreamPosition

__all__ = ["StopWatcher"]

logger = logging.getLogger(__name__)

# Seconds a read session on the control stream waits for a record before the watcher looks around.
_WAIT = 10


class StopWatcher:
    """Follows the control stream and passes every stop request on."""

    def __init__(self, log: Log, on_request: Callable[[str, str], None]) -> None:
        self._log = log
        self._on_request = on_request
        self._lock = threading.Lock()
        self._running = False
        self._stopped = threading.Event()
        self._session: ReadSession | None = None  # the one being read
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching from the control stream's current tail, unless already watching."""
        with self._lock:
            if self._running:
                return
            self._running = True
        try:
            log = self._log
            position = protocol.ensuring(
                log, _wire.CONTROL_STREAM, lambda: log.check_tail(_wire.CONTROL_STREAM).seq_num
            )
        except BaseException:
            with self._lock:
                self._running = False
            raise
        thread = threading.Thread(target=self._watch, args=(position,), name="resumable-stream stops", daemon=True)
        with self._lock:
            self._thread = thread
        thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """End the watcher, and wait up to ``timeout`` seconds for its thread to end."""
        self._stopped.set()
        with self._lock:
            session, thread = self._session, self._thread
        if session is not None:
            session.close()
        if thread is not None:
            thread.join(timeout)

    def _watch(self, position: int) -> None:
        try:
            self._follow(position)
        finally:
            with self._lock:
                self._running = False  # the next start() begins another watcher if this one died

    def _follow(self, position: int) -> None:
        failures = 0
        while not self._stopped.is_set():
            session = None
            try:
                session = self._log.read_session(_wire.CONTROL_STREAM, seq_num=position, clamp=True, wait=_WAIT)
                with self._lock:
                    self._session = session
                if self._stopped.is_set():
                    return
                for item in session:
                    failures = 0
                    if self._stopped.is_set():
                        return
                    if isinstance(item, ReadBatch):
                        for record in item.records:
                            position = record.seq_num + 1
                            request = _wire.parse_stop_request(record)
                            if request is not None:
                                self._on_request(*request)
                    elif isinstance(item, StreamPosition) and item.seq_num < position:
                        # The tail went back: the stream was deleted and made anew (a MemoryLog forgets an
                        # idle one; S2's delete_on_empty does the same), so its records start again at 0.
                        position = 0
                        break
            except Exception as exc:  # keep watching whatever happens: a dead watcher would make every stop slow
                if self._stopped.is_set():
                    return
                failures += 1
                logger.warning("cannot read stop requests; retrying", exc_info=not isinstance(exc, S2Error))
                self._stopped.wait(min(30.0, 0.5 * 2**failures))
            finally:
                if session is not None:
                    session.close()
