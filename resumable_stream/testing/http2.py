"""The HTTP/2 transport (cleartext, prior knowledge, as S2's SDKs connect), on the ``h2`` library.

Per connection: a reader thread (this one) feeds received bytes to the h2
state machine, a writer thread sends what it produces, and each request
runs on a thread of its own, so long-polls and sessions never hold up the
others. The h2 state is guarded by one condition, never held while the
socket blocks; response data waits there for the client's flow-control window.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from io import BufferedReader
from typing import Any

from .._http2 import keep_headers_out_of_logs
from .api import Api, ApiRequest, ApiResponse, DropConnection, protocol_error

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:  # pragma: no cover - without the `server` extra
    HAVE_H2 = False
else:
    HAVE_H2 = True

__all__ = ["PREFACE_LINE", "accepts", "serve"]

logger = logging.getLogger(__name__)
keep_headers_out_of_logs()  # clients' requests carry their tokens

#: The first line of the HTTP/2 client preface.
PREFACE_LINE = b"PRI * HTTP/2.0\r\n"
_STREAMING_CONTENT_TYPE = "s2s/proto"  # an append session: its body is handled as it arrives
_DRAIN_SECONDS = 1.0  # how long requests may go on answering once the client has stopped sending


class _Closed(Exception):
    """The connection or the request's stream is gone."""


def _text(value: str | bytes) -> str:
    """A header name or value as text (h2 decodes them with the configured encoding; its types say bytes)."""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def accepts(first_line: bytes) -> bool:
    return first_line == PREFACE_LINE


def serve(sock: socket.socket, rfile: BufferedReader, first_line: bytes, api: Api, stopping: threading.Event) -> None:
    """Serve one HTTP/2 connection until it closes."""
    if not HAVE_H2:
        logger.warning(
            "an HTTP/2 client connected, but the `h2` package is missing: pip install 'resumable-stream-s2[server]'"
        )
        return
    config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    _Connection(sock, api, h2.connection.H2Connection(config=config)).run(first_line, rfile)


class _Request:
    """A request being received: its headers and body, or the queue its body arrives on (append sessions)."""

    def __init__(self, stream_id: int, headers: dict[str, str]) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.parts: list[bytes] = []
        self.chunks: queue.SimpleQueue[bytes | None] | None = None
        self.reset = False

    def body_stream(self) -> Iterator[bytes]:
        assert self.chunks is not None
        while (chunk := self.chunks.get()) is not None:
            yield chunk


class _Connection:
    def __init__(self, sock: socket.socket, api: Api, conn: Any) -> None:
        self.sock = sock
        self.api = api
        self.h2 = conn
        self.cond = threading.Condition()  # guards h2, requests, outgoing, closed
        self.requests: dict[int, _Request] = {}
        self.outgoing = bytearray()
        self.closed = False

    # -- reading -------------------------------------------------------------

    def run(self, first_line: bytes, rfile: BufferedReader) -> None:
        writer = threading.Thread(target=self._write_loop, name="s2-local h2 writer", daemon=True)
        with self.cond:
            self.h2.initiate_connection()
            self._flush()
        writer.start()
        data = first_line
        try:
            while data and not self.closed:
                with self.cond:
                    try:
                        events = self.h2.receive_data(data)
                    except h2.exceptions.ProtocolError as exc:
                        logger.debug("HTTP/2 protocol error: %s", exc)
                        self._flush()
                        break
                    for event in events:
                        self._on_event(event)
                    self._flush()
                data = rfile.read1(65536)
        except OSError as exc:
            logger.debug("HTTP/2 connection ended: %r", exc)
        finally:
            self._finish_requests(_DRAIN_SECONDS)
            self._close()
            writer.join(5)

    def _finish_requests(self, timeout: float) -> None:
        """Give requests still being answered (a session ending with the server) time to send their last bytes."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.requests and not self.closed and (remaining := deadline - time.monotonic()) > 0:
                self.cond.wait(remaining)

    def _on_event(self, event: Any) -> None:
        """Handle one h2 event. Called with the condition held."""
        if isinstance(event, h2.events.RequestReceived):
            headers = {_text(name): _text(value) for name, value in event.headers}
            request = self.requests[event.stream_id] = _Request(event.stream_id, headers)
            if headers.get("content-type", "").split(";")[0].strip().lower() == _STREAMING_CONTENT_TYPE:
                request.chunks = queue.SimpleQueue()
                self._start(request)
            if event.stream_ended is not None:
                self._on_end(request)
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            receiving = self.requests.get(event.stream_id)
            if receiving is not None:
                if receiving.chunks is not None:
                    receiving.chunks.put(event.data)
                else:
                    receiving.parts.append(event.data)
                if event.stream_ended is not None:
                    self._on_end(receiving)
        elif isinstance(event, h2.events.StreamReset):
            reset = self.requests.pop(event.stream_id, None)
            if reset is not None:
                reset.reset = True
                if reset.chunks is not None:
                    reset.chunks.put(None)
            self.cond.notify_all()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.cond.notify_all()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True
            self.cond.notify_all()

    def _on_end(self, request: _Request) -> None:
        if request.chunks is not None:
            request.chunks.put(None)
        else:
            self._start(request)

    def _start(self, request: _Request) -> None:
        worker = threading.Thread(
            target=self._handle, args=(request,), name=f"s2-local h2 stream {request.stream_id}", daemon=True
        )
        worker.start()

    # -- requests ------------------------------------------------------------

    def _handle(self, request: _Request) -> None:
        headers = request.headers
        method = headers.get(":method", "")
        path, _, query = headers.get(":path", "").partition("?")
        plain = {name: value for name, value in headers.items() if not name.startswith(":")}
        api_request = ApiRequest(
            method,
            path,
            query,
            plain,
            b"".join(request.parts),
            request.body_stream() if request.chunks is not None else None,
        )
        if method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            response = self.api.handle(api_request)
        else:
            response = protocol_error(501, f"unsupported method {method}")
        logger.debug('"%s %s HTTP/2" %d (%s)', method, path, response.status, plain.get("content-type", "-"))
        try:
            self._respond(request, response)
        except _Closed:
            logger.debug("HTTP/2 stream %d ended before its response was sent", request.stream_id)
        except DropConnection:
            self._drop()
        finally:
            if response.stream is not None and hasattr(response.stream, "close"):
                response.stream.close()
            with self.cond:
                self.requests.pop(request.stream_id, None)
                self.cond.notify_all()

    def _respond(self, request: _Request, response: ApiResponse) -> None:
        if response.drop:
            raise DropConnection
        head = [(":status", str(response.status)), *((name.lower(), v) for name, v in response.headers.items())]
        if response.stream is None:
            head.append(("content-length", str(len(response.body))))
        with self.cond:
            self._check(request)
            end = response.stream is None and not response.body
            try:
                self.h2.send_headers(request.stream_id, head, end_stream=end)
            except h2.exceptions.H2Error as exc:  # the client reset the stream
                raise _Closed from exc
            self._flush()
        if response.stream is None:
            if response.body:
                self._send(request, response.body, end_stream=True)
            return
        for chunk in response.stream:
            self._send(request, chunk, end_stream=False)
        self._send(request, b"", end_stream=True)

    def _check(self, request: _Request) -> None:
        if self.closed or request.reset:
            raise _Closed

    def _send(self, request: _Request, data: bytes, *, end_stream: bool) -> None:
        """Send ``data`` on the request's stream as the client's flow-control windows allow."""
        view = memoryview(data)
        with self.cond:
            while True:
                self._check(request)
                try:
                    window = self.h2.local_flow_control_window(request.stream_id)
                    window = min(window, self.h2.max_outbound_frame_size)
                    if len(view) and window <= 0:
                        self.cond.wait(1.0)
                        continue
                    piece, view = view[:window], view[window:]
                    self.h2.send_data(request.stream_id, piece.tobytes(), end_stream=end_stream and not len(view))
                except h2.exceptions.H2Error as exc:  # the client closed or reset the stream
                    raise _Closed from exc
                self._flush()
                if not len(view):
                    return

    # -- writing and closing ---------------------------------------------------

    def _flush(self) -> None:
        """Queue what h2 has to send for the writer. Called with the condition held."""
        data = self.h2.data_to_send()
        if data:
            self.outgoing += data
            self.cond.notify_all()

    def _write_loop(self) -> None:
        while True:
            with self.cond:
                while not self.outgoing and not self.closed:
                    self.cond.wait()
                if not self.outgoing:
                    return
                data = bytes(self.outgoing)
                self.outgoing.clear()
            try:
                self.sock.sendall(data)
            except OSError as exc:
                logger.debug("HTTP/2 connection ended while writing: %r", exc)
                self._close()
                return

    def _drop(self) -> None:
        self._close()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        with self.cond:
            self.closed = True
            for request in self.requests.values():
                if request.chunks is not None:
                    request.chunks.put(None)
            self.cond.notify_all()
