"""Read sessions over HTTP/2: many sessions share a few connections (``S2Client(http2=True)``, on ``h2``).

Over HTTP/1.1 a read session holds a connection of its own for as long as it
follows its stream, so a process with a thousand readers holds a thousand
connections (and file descriptors, and TLS handshakes). Over HTTP/2 each
session is one stream of a shared connection: a connection carries as many as
the server allows at once (its ``SETTINGS_MAX_CONCURRENT_STREAMS``), and
another is opened only when every one is full. S2 speaks HTTP/2 over TLS
(ALPN ``h2``) and, like s2-lite and the local server, cleartext with prior
knowledge; an endpoint that does not is reported as :class:`Http2Unsupported`.

Threading: a connection has one I/O thread, the only one that touches its
socket (a TLS socket must not be read and written by two threads at once): it
feeds what arrives to the h2 state machine, hands each stream's events to its
session, and sends what the machine has queued. The machine is guarded by the
connection's lock, held only to feed it or to take what it has to send; a
session's thread that makes it send something (a request, a window update)
queues the bytes and wakes the I/O thread; a session closed early asks the I/O
thread for its reset, taking no lock (a garbage collection may close it
anywhere). Each session waits on a condition of its own, so a thousand waiting
readers share no lock. A session
hands the server's flow-control window back as its reader consumes the data,
so a reader that stops reading holds back its own stream only (up to 1 MiB),
never the others. A GOAWAY ends the connection and every session on it (h2
takes no frame after one); the sessions reopen where they were, on another.
Here: the pool (:class:`Http2Sessions`) and the connection with its I/O thread
(:class:`Http2Connection`); a session's side is :mod:`._http2_response`.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import ProtocolError

from ._http2_response import Http2Response

try:
    import h2.config
    import h2.connection
    import h2.errors
    import h2.events
    import h2.exceptions
    import h2.settings
    from hpack import NeverIndexedHeaderTuple
except ImportError:  # without the `http2` extra
    HAVE_H2 = False
else:
    HAVE_H2 = True

__all__ = ["HAVE_H2", "Http2Response", "Http2Sessions", "Http2Unsupported", "keep_headers_out_of_logs"]

logger = logging.getLogger(__name__)

class _NoHeaders(logging.Filter):
    """hpack logs the header blocks it encodes and decodes, and each header it decodes, at DEBUG; a
    request's carry the access token (Huffman-coded, which is still the token). Those records are
    dropped, the rest of hpack's logging is left alone."""

    _TEMPLATES = frozenset({"Encoded header block to %s", "Decoding %s", "Decoded %s, consumed %d",
                            "Decoded %s, total consumed %d bytes, indexed %s"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._TEMPLATES


def keep_headers_out_of_logs() -> None:
    """Filter hpack's logger (once) so that no header, so no access token, reaches a log."""
    hpack_logger = logging.getLogger("hpack.hpack")
    if not any(isinstance(f, _NoHeaders) for f in hpack_logger.filters):
        hpack_logger.addFilter(_NoHeaders())


keep_headers_out_of_logs()

# What one session may have received and not yet read; the connection's window (HTTP/2's largest) holds
# two thousand such: more than the streams a server lets one connection carry.
_STREAM_WINDOW = 1024 * 1024
_CONNECTION_WINDOW = 2**31 - 1


class Http2Unsupported(Exception):
    """The endpoint does not speak HTTP/2 (no ALPN ``h2``, or no HTTP/2 answer to the preface)."""


class Http2Sessions:
    """GET requests whose responses are read as they arrive, over shared HTTP/2 connections. Thread-safe.

    :param endpoint: ``scheme://host[:port]`` of the server.
    :param silence: seconds a connection or a session may go without receiving anything before it counts
        as lost (S2 pings a read session at least every 15 s).
    :param ssl_context: for ``https`` endpoints (its ALPN protocols are set to ``h2``).
    """

    def __init__(self, endpoint: str, *, connect_timeout: float, silence: float,
                 ssl_context: ssl.SSLContext | None) -> None:
        parts = urlsplit(endpoint)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._scheme = parts.scheme
        self._connect_timeout = connect_timeout
        self._silence = silence
        self._ssl_context = ssl_context
        if self._tls and ssl_context is not None:
            ssl_context.set_alpn_protocols(["h2"])
        self._lock = threading.Lock()  # guards _connections and _closed
        self._connecting = threading.Lock()  # one new connection at a time: a burst of sessions fills it first
        self._connections: list[Http2Connection] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<Http2Sessions {self._scheme}://{self._authority} connections={len(self._connections)}>"

    def open(self, target: str, headers: Mapping[str, str], timeout: float) -> Http2Response:
        """Send ``GET target`` (a path and query) and wait at most ``timeout`` seconds for the response's headers.

        Raises :class:`urllib3.exceptions.ProtocolError` when the connection fails or the answer does not
        come in time, and :class:`Http2Unsupported` when a new connection finds no HTTP/2 server.
        """
        response = self._start(target, headers)
        if response is None:
            with self._connecting:
                response = self._start(target, headers)  # another thread may have made room meanwhile
                if response is None:
                    connection = Http2Connection.connect((self._host, self._port), self._authority, self._scheme,
                                                     self._connect_timeout, self._silence,
                                                     self._ssl_context if self._tls else None)
                    with self._lock:
                        if self._closed:
                            connection.close()
                            raise ProtocolError("the client is closed")
                        self._connections.append(connection)
                    response = connection.start(target, headers)
                    if response is None:  # a server that allows no stream at all
                        raise ProtocolError("the HTTP/2 server accepts no stream")
        response.wait_for_headers(timeout)
        return response

    def _start(self, target: str, headers: Mapping[str, str]) -> Http2Response | None:
        with self._lock:
            if self._closed:
                raise ProtocolError("the client is closed")
            self._connections = [connection for connection in self._connections if not connection.failed]
            connections = list(self._connections)
        for connection in connections:
            response = connection.start(target, headers)
            if response is not None:
                return response
        return None

    def close(self) -> None:
        """Close every connection; sessions still open end with an error."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()


class Http2Connection:
    """One HTTP/2 connection and its I/O thread, which alone touches the socket (a TLS socket must not be
    read and written by two threads at once): other threads queue what the state machine has to send,
    and wake it."""

    def __init__(self, sock: socket.socket, authority: str, scheme: str, silence: float) -> None:
        self._sock = sock
        self._authority = authority.encode()
        self._scheme = scheme.encode()
        self._silence = silence
        self._wake_r, self._wake_w = socket.socketpair()
        for end in (sock, self._wake_r, self._wake_w):
            end.setblocking(False)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._lock = threading.Lock()  # guards _h2, _streams, _outgoing, _last_received, failed
        self._streams: dict[int, Http2Response] = {}
        self._outgoing = bytearray()
        self._cancels: deque[tuple[int, int]] = deque()  # (stream id, unread bytes) of sessions closed early
        self._last_received = time.monotonic()
        self._settled = threading.Event()  # the server's first SETTINGS came, or the connection failed
        self._not_http2 = False  # what came instead of the server's SETTINGS was not HTTP/2
        self._head = b""  # the first four bytes received: a frame header's, SETTINGS's type among them
        self.failed: str | None = None

    @classmethod
    def connect(cls, address: tuple[str, int], authority: str, scheme: str, timeout: float, silence: float,
                ssl_context: ssl.SSLContext | None) -> Http2Connection:
        try:
            sock = socket.create_connection(address, timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if ssl_context is not None:
                sock = ssl_context.wrap_socket(sock, server_hostname=address[0])
                if sock.selected_alpn_protocol() != "h2":
                    sock.close()
                    raise Http2Unsupported(f"{authority} did not choose HTTP/2 (ALPN)")
        except OSError as exc:
            raise ProtocolError(f"cannot connect to {authority}: {exc}") from None
        connection = cls(sock, authority, scheme, silence)
        with connection._lock:
            connection._h2.initiate_connection()
            connection._h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0,
                                            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW})
            connection._h2.increment_flow_control_window(_CONNECTION_WINDOW - 65535)
            connection._queue()
        threading.Thread(target=connection._run, name=f"resumable-stream h2 {authority}", daemon=True).start()
        if not connection._settled.wait(timeout) or connection.failed:
            failure = connection.failed or f"no answer to the HTTP/2 preface within {timeout:.1f} s"
            connection.close()
            if connection._not_http2:
                raise Http2Unsupported(f"{authority} does not speak HTTP/2 ({failure})")
            raise ProtocolError(f"HTTP/2 connection to {authority} failed: {failure}")
        return connection

    def start(self, target: str, headers: Mapping[str, str]) -> Http2Response | None:
        """Open a stream for ``GET target``; ``None`` when this connection has no room for another."""
        with self._lock:
            h2conn = self._h2
            if self.failed or h2conn.open_outbound_streams >= h2conn.remote_settings.max_concurrent_streams:
                return None
            stream_id = h2conn.get_next_available_stream_id()
            try:
                # The token goes in as a header that HPACK never indexes; no local here holds it.
                h2conn.send_headers(stream_id, [
                    (b":method", b"GET"), (b":scheme", self._scheme), (b":authority", self._authority),
                    (b":path", target.encode()),
                    *((NeverIndexedHeaderTuple(name.lower().encode(), value.encode())
                       if name.lower() == "authorization" else (name.lower().encode(), value.encode()))
                      for name, value in headers.items()),
                ], end_stream=True)
            except h2.exceptions.H2Error as exc:  # the connection cannot take it: another will
                self._fail_locked(f"it took no request: {exc}")
                return None
            response = self._streams[stream_id] = Http2Response(self, stream_id, self._silence)
            self._queue()
            return response

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand ``size`` bytes of the flow-control window back: a session has read them."""
        with self._lock:
            if not self.failed:
                try:
                    self._h2.acknowledge_received_data(size, stream_id)
                except h2.exceptions.H2Error as exc:
                    self._fail_locked(f"it took no window update: {exc}")
                    return
                self._queue()

    def cancel(self, stream_id: int, unread: int) -> None:
        """Reset a stream whose session was closed before its end; ``unread`` bytes of it were never read.

        What it received and no one read is handed back to the connection's window, as is what still
        arrives for it: else every closed session would shrink the window of all the others for good.
        The I/O thread does it (:meth:`_apply_cancels`): a session dropped unclosed is closed by a garbage
        collection, which may run on a thread holding this connection's lock (the I/O thread itself, in
        the middle of feeding h2), so this takes no lock and touches no state machine.
        """
        if not self.failed:
            self._cancels.append((stream_id, unread))
            self._wake()

    def close(self) -> None:
        with self._lock:
            self._fail_locked("the connection was closed")

    def _queue(self) -> None:
        """Queue what the state machine has to send, and wake the I/O thread. Called with the lock held."""
        data = self._h2.data_to_send()
        if data:
            self._outgoing += data
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full: it is awake already; closed: it is gone
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._wake_r, selectors.EVENT_READ)
            selector.register(self._sock, selectors.EVENT_READ)
            watching = selectors.EVENT_READ
            while True:
                with self._lock:
                    if self.failed:
                        return
                    self._apply_cancels()
                    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._outgoing else 0)
                if wanted != watching:
                    selector.modify(self._sock, wanted)
                    watching = wanted
                ready = {key.fileobj: mask for key, mask in selector.select(self._silence)}
                with self._lock:
                    quiet = time.monotonic() - self._last_received
                if quiet > self._silence:  # however often the other threads woke this one meanwhile
                    raise ProtocolError(f"nothing arrived for {quiet:.0f} s")
                if self._wake_r in ready:
                    with contextlib.suppress(OSError):
                        while self._wake_r.recv(4096):
                            pass
                if watching & selectors.EVENT_WRITE:
                    self._flush()
                if self._sock in ready:
                    self._receive()
        except (OSError, ValueError, ProtocolError, h2.exceptions.H2Error) as exc:
            with self._lock:
                if isinstance(exc, h2.exceptions.ProtocolError) and not self._settled.is_set():
                    self._not_http2 = True  # an HTTP/1.1 server's answer to the preface, say
                self._fail_locked(str(exc) or type(exc).__name__)
        finally:
            with self._lock:
                self._fail_locked("its I/O thread ended")  # whatever ended it: no session waits on it in vain
            selector.close()
            for end in (self._sock, self._wake_r, self._wake_w):
                end.close()

    def _apply_cancels(self) -> None:
        """Reset the streams of sessions closed early (see :meth:`cancel`). The I/O thread, lock held."""
        while self._cancels:
            stream_id, unread = self._cancels.popleft()
            if unread:
                self._h2.acknowledge_received_data(unread, stream_id)
            if self._streams.pop(stream_id, None) is not None:
                with contextlib.suppress(h2.exceptions.StreamClosedError):  # it may have ended meanwhile
                    self._h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        self._outgoing += self._h2.data_to_send()

    def _flush(self) -> None:
        with self._lock:
            try:
                sent = self._sock.send(self._outgoing)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self._outgoing[:sent]

    def _receive(self) -> None:
        while True:  # a TLS socket may hold decrypted data that select() does not see: take it all
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            if not data:
                raise ProtocolError("the server closed the connection")
            if len(self._head) < 4:  # the first bytes the server sent
                self._head += data[:4 - len(self._head)]
                if len(self._head) == 4 and self._head[3] != 0x4:
                    # A server's first frame is SETTINGS (RFC 9113, 3.4): this is an HTTP/1.1 answer, say.
                    self._not_http2 = True
                    raise ProtocolError(f"the server answered the preface with {bytes(data[:16])!r}")
            with self._lock:
                self._last_received = time.monotonic()
                events = self._h2.receive_data(data)
                deliveries = [(self._streams.get(e.stream_id), e) for e in events if isinstance(e, _STREAM_EVENTS)]
                for response, delivered in deliveries:
                    if response is None and isinstance(delivered, h2.events.DataReceived):  # a cancelled stream's
                        self._h2.acknowledge_received_data(delivered.flow_controlled_length, delivered.stream_id)
                self._outgoing += self._h2.data_to_send()
            dropped = []  # data for sessions closed while it was on its way to them
            for response, delivered in deliveries:
                if response is not None and (size := _deliver(response, delivered)):
                    dropped.append((delivered.stream_id, size))
            with self._lock:  # after the sessions had what came before it (a GOAWAY ends them)
                for event in events:
                    self._on_connection_event(event)
                if not self.failed:
                    for stream_id, size in dropped:
                        self._h2.acknowledge_received_data(size, stream_id)
                    self._outgoing += self._h2.data_to_send()
            if not isinstance(self._sock, ssl.SSLSocket) or not self._sock.pending():
                return

    def _on_connection_event(self, event: Any) -> None:
        """What an event changes for the connection. Called with the lock held."""
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self._settled.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 takes no frame after a GOAWAY, not even for the streams the server would finish: every
            # session reopens on another connection, after the last record it delivered.
            self._fail_locked(f"the server went away (GOAWAY, error {event.error_code})")
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            self._streams.pop(event.stream_id, None)

    def _fail_locked(self, reason: str) -> None:
        """End the connection and every session on it; the I/O thread closes the socket. Lock held."""
        if self.failed:
            return
        self.failed = reason
        self._settled.set()
        streams, self._streams = self._streams, {}
        for response in streams.values():
            response.fail(f"HTTP/2 connection lost: {reason}")
        self._wake()


def _deliver(response: Http2Response, event: Any) -> int:
    """Hand a stream's event to its session: the flow-controlled size of data the session did not keep."""
    if isinstance(event, h2.events.ResponseReceived):
        response.on_headers({name.decode("latin-1"): value.decode("latin-1") for name, value in event.headers})
    elif isinstance(event, h2.events.DataReceived):
        return response.on_data(event.data, event.flow_controlled_length)
    elif isinstance(event, h2.events.StreamEnded):
        response.on_end()
    elif isinstance(event, h2.events.StreamReset):
        response.fail(f"the server reset the stream (error {event.error_code})")
    return 0


if HAVE_H2:
    _STREAM_EVENTS = (h2.events.ResponseReceived, h2.events.DataReceived, h2.events.StreamEnded,
                      h2.events.StreamReset)
