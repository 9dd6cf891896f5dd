"""What every transport hands the server and gets back: one request, one response, and the dispatch between.

A transport (HTTP/1.1, HTTP/2) turns bytes on a connection into an
:class:`ApiRequest`, calls :meth:`Api.handle`, and writes the
:class:`ApiResponse` back: its status, headers and body, or its ``stream``
of chunks (an SSE or S2S session), each written and flushed as it comes.
Faults, routing and error bodies are handled here, once, for every transport.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .config import bad_json, json_object, parse_json
from .errors import DEFAULT_CODE, ApiError, api_error
from .faults import Fault, Faults, make_fault
from .jsonshapes import check_basin_name, check_stream_name, dumps
from .routing import NOT_IMPLEMENTED, STREAM_SCOPED, route
from .store import Store

__all__ = ["Api", "ApiRequest", "ApiResponse", "DropConnection", "json_response"]

logger = logging.getLogger(__name__)


class DropConnection(Exception):
    """Raised by a response's ``stream`` to make the transport close the connection without another byte."""


@dataclass
class ApiRequest:
    """One HTTP request, whatever carried it. Header names are lower-case."""

    method: str
    path: str  # the raw path, still percent-encoded
    query: str
    headers: Mapping[str, str]
    body: bytes = b""
    #: The request body as it arrives, for an S2S append session (``None``: the whole body is in ``body``).
    body_stream: Iterator[bytes] | None = None
    # Set by the dispatch:
    op: str = ""
    params: dict[str, str] = field(default_factory=dict)  # path parameters, decoded and checked
    basin: str = ""  # the `s2-basin` header, for stream-scoped operations
    drop_after_commit: bool = False

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def media_type(self, name: str) -> str:
        """The first media type of header ``name`` (``content-type``, ``accept``), lower-case, without parameters."""
        return self.headers.get(name, "").split(",", 1)[0].split(";", 1)[0].strip().lower()


@dataclass
class ApiResponse:
    """A status, headers, and a body or a stream of body chunks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: A session's body: each chunk is written and flushed as it comes; may raise :class:`DropConnection`.
    stream: Iterator[bytes] | None = None
    drop: bool = False  # close the connection without answering


def json_response(status: int, value: Any, headers: Mapping[str, str] | None = None) -> ApiResponse:
    return ApiResponse(status, {"content-type": "application/json", **(headers or {})}, dumps(value))


def error_response(exc: ApiError) -> ApiResponse:
    return json_response(exc.status, exc.body, exc.headers)


def _decoded_body(request: ApiRequest) -> bytes:
    encoding = request.header("content-encoding").strip().lower()
    if encoding in ("", "identity") or not request.body:
        return request.body
    if encoding == "gzip":
        return gzip.decompress(request.body)
    if encoding == "zstd":
        try:
            import zstandard
        except ImportError:
            raise api_error("bad_header", "zstd request bodies need the `zstandard` package") from None
        with zstandard.ZstdDecompressor().stream_reader(request.body) as reader:
            return bytes(reader.read())
    raise api_error("bad_header", f"unsupported `content-encoding`: {encoding!r}")


class Api:
    """Routes requests to the operations, with faults applied. Thread-safe.

    :param operations: operationId -> the function serving it (see :mod:`.operations`).
    :param stopping: set when the server stops; injected latency ends early then.
    """

    def __init__(
        self,
        store: Store,
        faults: Faults,
        operations: Mapping[str, Callable[[Store, ApiRequest], ApiResponse]],
        stopping: threading.Event,
    ) -> None:
        self.store = store
        self.faults = faults
        self.operations = operations
        self.stopping = stopping

    def handle(self, request: ApiRequest) -> ApiResponse:
        """The response to ``request``; never raises."""
        try:
            if request.path in ("/health", "/ping") and request.method == "GET":
                return ApiResponse(200, {"content-type": "text/plain; charset=utf-8"}, b"OK")
            if request.path == "/_faults":
                return self._faults_admin(request)
            request.op, raw_params = route(request.method, request.path)
            effect = self.faults.take(request.op, _fault_stream(request, raw_params))
            if effect.latency and self.stopping.wait(effect.latency):
                return ApiResponse(503, drop=True)
            fault = effect.fault
            if fault is not None and fault.drop:
                return ApiResponse(503, drop=True)
            if fault is not None and fault.status is not None:
                return _fault_response(fault)
            request.drop_after_commit = fault is not None and fault.drop_after_commit
            if request.op in NOT_IMPLEMENTED:
                raise api_error("not_implemented", "Not implemented")
            if request.op in STREAM_SCOPED:
                name = request.headers.get("s2-basin")
                if name is None:
                    raise api_error("bad_header", "Missing header `s2-basin`")
                request.basin = check_basin_name(name.strip(), "bad_header")
            request.params = _path_params(raw_params)
            request.body = _decoded_body(request)
            return self.operations[request.op](self.store, request)
        except ApiError as exc:
            return error_response(exc)
        except Exception as exc:
            logger.exception("%s %s failed", request.method, request.path)
            return json_response(500, {"code": "other", "message": f"internal error: {type(exc).__name__}: {exc}"})

    def _faults_admin(self, request: ApiRequest) -> ApiResponse:
        if request.method == "GET":
            return json_response(200, {"faults": [fault.to_json() for fault in self.faults.active()]})
        if request.method == "DELETE":
            return json_response(200, {"cleared": self.faults.clear()})
        if request.method == "POST":
            require_json(request)
            settings = json_object(parse_json(request.body), "Fault")
            names = [f.name for f in dataclasses.fields(Fault)]
            unknown = sorted(set(settings) - set(names))
            if unknown:
                raise bad_json(f"unknown fault fields: {', '.join(unknown)}")
            try:
                fault = make_fault(**{f.name: settings.get(f.name, f.default) for f in dataclasses.fields(Fault)})
            except ValueError as exc:
                raise api_error("invalid", str(exc)) from None
            self.faults.append(fault)
            return json_response(201, fault.to_json())
        message = f"{request.method} is not allowed on /_faults"
        raise ApiError(405, {"code": "method_not_allowed", "message": message}, {"Allow": "DELETE, GET, POST"})


def require_json(request: ApiRequest) -> None:
    content_type = request.media_type("content-type")
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise bad_json("Expected request with `Content-Type: application/json`")


def protocol_error(status: int, message: str) -> ApiResponse:
    """A malformed request that never reached the dispatch (a bad request line, an unknown method...)."""
    return json_response(status, {"code": DEFAULT_CODE.get(status, "other"), "message": message})


def _path_params(raw: Mapping[str, str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in raw.items():
        try:
            decoded = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise api_error("bad_path", f"invalid {name} in path: not valid UTF-8 after percent-decoding") from None
        check = check_stream_name if name == "stream" else check_basin_name
        params[name] = check(decoded, "bad_path")
    return params


def _fault_stream(request: ApiRequest, raw: Mapping[str, str]) -> str | None:
    """The stream a request is about, as far as faults are concerned (best effort, never raises)."""
    if "stream" in raw:
        try:
            return unquote(raw["stream"], errors="strict")
        except UnicodeDecodeError:
            return None
    if request.op == "create_stream":
        try:
            name = parse_json(request.body).get("stream")
        except (ApiError, AttributeError):
            return None
        return name if isinstance(name, str) else None
    return None


def _fault_response(fault: Fault) -> ApiResponse:
    assert fault.status is not None and fault.code is not None
    headers = {} if fault.retry_after_ms is None else {"retry-after-ms": str(fault.retry_after_ms)}
    message = fault.message or f"injected fault: {fault.code}"
    return json_response(fault.status, {"code": fault.code, "message": message}, headers)
