"""The HTTP/1.1 transport: keep-alive connections, one request at a time; sessions as chunked bodies.

A small parser of its own (request line, headers, ``Content-Length`` or
chunked bodies), since this is the path the engine's clients load most.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from http import HTTPStatus
from io import BufferedReader

from .api import Api, ApiRequest, ApiResponse, DropConnection, protocol_error

__all__ = ["accepts", "serve"]

logger = logging.getLogger(__name__)

_MAX_LINE = 65536
_MAX_HEADERS = 100
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_SERVER = b"Server: resumable-stream-s2-local\r\n"


class _BadRequest(Exception):
    """The request cannot be read; answer 400 and close the connection."""


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Error"


def accepts(first_line: bytes) -> bool:
    return True  # whatever no other transport claims


def serve(sock: socket.socket, rfile: BufferedReader, first_line: bytes, api: Api, stopping: threading.Event) -> None:
    """Serve requests on one connection until the client closes it, asks to, or the server stops."""
    line = first_line
    while line:
        try:
            request, keep_alive = _read_request(line, rfile, sock)
        except _BadRequest as exc:
            _write(sock, protocol_error(400, str(exc)), keep_alive=False)
            return
        if request.method not in _METHODS:
            response = protocol_error(501, f"unsupported method {request.method}")
        else:
            response = api.handle(request)
        keep_alive = keep_alive and not stopping.is_set()
        logger.debug('"%s %s HTTP/1.1" %d', request.method, request.path, response.status)
        if response.drop:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return
        if not _write(sock, response, keep_alive=keep_alive) or not keep_alive:
            return
        line = rfile.readline(_MAX_LINE)


def _read_request(line: bytes, rfile: BufferedReader, sock: socket.socket) -> tuple[ApiRequest, bool]:
    parts = line.rstrip(b"\r\n").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest(f"malformed request line {line[:100]!r}")
    method, target, version = (part.decode("latin-1") for part in parts)
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        raw = rfile.readline(_MAX_LINE)
        if raw in (b"\r\n", b"\n"):
            break
        if not raw:
            raise _BadRequest("the connection ended inside the request headers")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise _BadRequest(f"malformed header line {raw[:100]!r}")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    else:
        raise _BadRequest(f"more than {_MAX_HEADERS} headers")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    path, _, query = target.partition("?")
    if headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this before sending a large body
    request = ApiRequest(method, path, query, headers, _read_body(headers, rfile))
    return request, keep_alive


def _read_body(headers: dict[str, str], rfile: BufferedReader) -> bytes:
    if headers.get("transfer-encoding", "").strip().lower() == "chunked":
        parts: list[bytes] = []
        while True:
            size_line = rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest("malformed chunked request body") from None
            if size == 0:
                while rfile.readline(1024).strip():
                    pass  # trailer fields
                return b"".join(parts)
            parts.append(rfile.read(size))
            rfile.readline(1024)
    length = headers.get("content-length")
    if length is None:
        return b""
    if not length.isdigit():
        raise _BadRequest(f"invalid Content-Length {length!r}")
    body = rfile.read(int(length))
    if len(body) < int(length):
        raise _BadRequest("the request body ended early")
    return body


def _head(response: ApiResponse, keep_alive: bool, framing: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (response.status, _reason(response.status)), _SERVER, framing]
    lines.extend(f"{name}: {value}\r\n".encode("latin-1") for name, value in response.headers.items())
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def _write(sock: socket.socket, response: ApiResponse, *, keep_alive: bool) -> bool:
    """Send ``response``; False if the connection is gone (the client left) or must be closed."""
    body = response.stream
    try:
        if body is None:
            sock.sendall(_head(response, keep_alive, b"Content-Length: %d\r\n" % len(response.body)) + response.body)
            return True
        sock.sendall(_head(response, keep_alive, b"Transfer-Encoding: chunked\r\n"))
        try:
            for chunk in body:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except DropConnection:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return False
        sock.sendall(b"0\r\n\r\n")
        return True
    except OSError as exc:
        logger.debug("client left before its response was sent: %r", exc)
        return False
    finally:
        if body is not None and hasattr(body, "close"):
            body.close()
