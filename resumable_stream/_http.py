"""HTTP for the S2 client: connection pools, one request attempt, SSE events, and S2's error answers.

Requests go through urllib3, the connection pool ``requests`` itself is built
on, directly: the environment's proxy and CA settings are read once, the way
``requests`` reads them, instead of on every call. There are three pools.
Requests with a deadline (appends given a timeout: the writer's, whose
batches and heartbeats must land within the producer's silence bound) wait
for one of a bounded number of keep-alive connections that nothing else
uses; other unary requests (claims, tail checks, status reads, long-polls)
wait for one of as many again; and read sessions (SSE, which hold their
connection for as long as they follow a stream) use connections of their
own. So neither a crowd of readers nor a crowd of new streams and resumers
can make the writer's appends wait.

A wait for a free connection is not an attempt that failed, and is never
retried: it lasts until the request's deadline, or for ``queue_timeout``
(as long as a call may take under the client's retry policy), and if no
connection comes free by then the process has more requests in flight than
its connections carry.

Nothing here retries; :class:`Failure` says whether an attempt may be retried
and whether it may have taken effect. No exception raised here holds the
access token, and neither do the reprs of what holds it.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests.utils
import urllib3
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from ._http2 import HAVE_H2, Http2Response, Http2Sessions, Http2Unsupported
from ._slots import Slots
from .exceptions import (
    BadRequest,
    ConfigurationError,
    Conflict,
    FencingTokenMismatch,
    NotFound,
    PermissionDenied,
    RangeNotSatisfiable,
    RateLimited,
    S2Error,
    SeqNumMismatch,
    Unavailable,
)
from .log import StreamPosition

__all__ = ["Failure", "Secret", "Transport", "classify", "classify_event", "position", "sse_events"]

logger = logging.getLogger(__name__)

# Codes of 5xx answers that guarantee that nothing was written.
_NO_SIDE_EFFECTS = {"hot_server", "server_draining"}
_RETRYABLE_STATUS = {408, 500, 502, 503, 504}
_JSON = {"Content-Type": "application/json"}
_EVENT_STREAM = {"Accept": "text/event-stream"}
#: Seconds a read session may go without any event (S2 pings at least every 15 s) before it counts as lost.
SESSION_SILENCE = 20.0


class Secret:
    """A string that never shows itself: its ``repr`` and ``str`` are redacted."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<redacted>"

    __str__ = __repr__


class _Headers(dict[str, str]):
    """Request headers whose repr hides the ``Authorization`` value."""

    def __repr__(self) -> str:
        return repr({k: ("<redacted>" if k.lower() == "authorization" else v) for k, v in self.items()})


class Failure(Exception):
    """One failed attempt, and whether retrying it is allowed."""

    def __init__(self, error: S2Error, *, retryable: bool, ambiguous: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.ambiguous = ambiguous  # the request may have taken effect
        self.retry_after = retry_after


class Transport:
    """Connection pools to the S2 endpoints, and one attempt of a request. Thread-safe."""

    def __init__(self, token: Secret, base_headers: Mapping[str, str], *, endpoint: str, connect_timeout: float,
                 request_timeout: float, max_connections: int, queue_timeout: float, http2: bool = False) -> None:
        self._token = token
        self._base_headers = dict(base_headers)
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._queue_timeout = queue_timeout
        # A unary request takes one of its lane's `max_connections` slots (one lane for requests with a
        # deadline, one for the others), so no lane opens more connections than that. (A blocking urllib3
        # pool would do the same, but would wait forever once urllib3's own exit hook has emptied it,
        # before our exit hook writes the last records; and, like threading's semaphores, it keeps its
        # count under one lock, which a thousand request threads turn into a convoy: see _slots.)
        self._proxied = False
        self._lanes = {has_deadline: (Slots(max_connections),
                                   self._manager(endpoint, max_connections)) for has_deadline in (False, True)}
        self._sessions = self._manager(endpoint, max_connections)
        self._http2 = self._http2_sessions(endpoint, connect_timeout) if http2 and not self._proxied else None
        self._unary_timeout = urllib3.Timeout(connect=connect_timeout, read=request_timeout)
        self._session_timeout = urllib3.Timeout(connect=connect_timeout, read=SESSION_SILENCE)
        self._pools: dict[tuple[int, str], urllib3.HTTPConnectionPool] = {}

    def _manager(self, endpoint: str, size: int) -> urllib3.PoolManager:
        options: dict[str, Any] = {"num_pools": 4, "maxsize": size, "block": False, "retries": False}
        bundle = _ca_bundle()
        options["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
        options["cert_reqs"] = "CERT_REQUIRED"
        proxy = requests.utils.get_environ_proxies(endpoint).get(urlsplit(endpoint).scheme)
        if proxy:
            user, password = requests.utils.get_auth_from_url(proxy)
            headers = urllib3.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
            self._proxied = True
            return urllib3.ProxyManager(proxy, proxy_headers=headers, **options)
        return urllib3.PoolManager(**options)

    def _http2_sessions(self, endpoint: str, connect_timeout: float) -> Http2Sessions:
        if not HAVE_H2:
            raise ConfigurationError("http2", "needs the h2 package: pip install 'resumable-stream-s2[http2]'")
        parts = urlsplit(endpoint)
        context = None
        if parts.scheme == "https":
            bundle = _ca_bundle()
            directory = os.path.isdir(bundle)
            context = ssl.create_default_context(cafile=None if directory else bundle,
                                                 capath=bundle if directory else None)
        return Http2Sessions(f"{parts.scheme}://{parts.netloc}", connect_timeout=connect_timeout,
                             silence=SESSION_SILENCE, ssl_context=context)

    def close(self) -> None:
        if self._http2 is not None:
            self._http2.close()
        self._pools.clear()
        for _, manager in self._lanes.values():
            manager.clear()
        self._sessions.clear()

    def _urlopen(self, manager: urllib3.PoolManager, method: str, url: str, **options: Any) -> urllib3.BaseHTTPResponse:
        """``manager.urlopen``, straight to the host's cached pool when no proxy is in the way."""
        if self._proxied:
            return manager.urlopen(method, url, **options)
        origin, target = _split_origin(url)
        key = (id(manager), origin)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = manager.connection_from_url(origin)
        return pool.urlopen(method, target, assert_same_host=False, **options)

    def _headers(self, *extra: Mapping[str, str] | None) -> _Headers:
        """The request's headers. They hold the token: callers pass them straight on and keep no local of
        them, so that no frame of a traceback (as error trackers record frames) holds the token."""
        out = _Headers(self._base_headers)
        out["Authorization"] = "Bearer " + self._token.reveal()
        for headers in extra:
            if headers:
                out.update(headers)
        return out

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                headers: Mapping[str, str] | None = None, wait: float = 0, deadline: float | None = None) -> Any:
        """One attempt: the parsed JSON of a 2xx answer (``None`` for an empty one).

        ``body`` is JSON, or an object to send as JSON. ``deadline`` (monotonic) bounds the wait for a
        connection and shortens the read timeout, so that the attempt ends by then; a request with a
        deadline uses the connections kept for such requests.
        Raises :class:`Failure` for what may be retried and a final :class:`S2Error` for the rest.
        """
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        target = f"{url}?{urlencode(params)}" if params else url
        slots, manager = self._lanes[deadline is not None]
        patience = self._queue_timeout if deadline is None else deadline - time.monotonic()
        if patience <= 0 or not slots.acquire(timeout=min(patience, threading.TIMEOUT_MAX)):
            what = "out of time" if deadline is not None else f"no connection came free within {patience:.1f} s"
            raise Failure(Unavailable(f"{method} {_path(url)}: {what}"), retryable=False, ambiguous=False)
        failure: Failure | None = None
        try:
            timeout = self._unary_timeout
            if wait or deadline is not None:
                read = self._request_timeout + wait
                if deadline is not None:
                    read = min(read, deadline - time.monotonic())
                    if read <= 0:  # the wait for a connection took what was left
                        raise Failure(Unavailable(f"{method} {_path(url)}: out of time"), retryable=False,
                                      ambiguous=False)
                timeout = urllib3.Timeout(connect=min(self._connect_timeout, read), read=read)
            response = self._urlopen(manager, method, target, body=data, timeout=timeout, redirect=False,
                                     retries=False, headers=self._headers(headers, _JSON if data is not None else None))
        except urllib3.exceptions.HTTPError as exc:
            failure = _transport_failure(method, url, exc)
        finally:
            slots.release()
        if failure is not None:  # raised outside the except clause: nothing chains back to the request
            raise failure
        if response.status >= 300:
            raise classify(method, url, response.status, response.data, response.headers.get("retry-after-ms"))
        if not response.data:
            return None
        try:
            return json.loads(response.data)
        except ValueError as exc:
            failure = _unexpected(method, url, exc)
        raise failure

    def stream(self, url: str, *, params: Mapping[str, Any],
               headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse | Http2Response:
        """Open an SSE read session; the 200 response, not yet read. Raises as :meth:`request` does."""
        failure: Failure | None = None
        response: urllib3.BaseHTTPResponse | Http2Response
        try:
            http2 = self._http2
            if http2 is not None:
                try:
                    target = _split_origin(url)[1] + "?" + urlencode(params)
                    response = http2.open(target, self._headers(headers, _EVENT_STREAM), SESSION_SILENCE)
                except Http2Unsupported as exc:
                    logger.warning("read sessions fall back to HTTP/1.1: %s", exc)
                    self._http2 = None
                    http2.close()
                    http2 = None
            if http2 is None:
                response = self._urlopen(self._sessions, "GET", f"{url}?{urlencode(params)}",
                                         headers=self._headers(headers, _EVENT_STREAM),
                                         timeout=self._session_timeout, redirect=False, retries=False,
                                         preload_content=False)
        except urllib3.exceptions.HTTPError as exc:
            failure = _transport_failure("GET", url, exc)
        if failure is not None:
            raise failure
        if response.status >= 300:
            try:
                data = response.read()
            except urllib3.exceptions.HTTPError as exc:  # the error answer itself was cut off
                failure = _transport_failure("GET", url, exc, reading=True)
            finally:
                response.release_conn()
            if failure is not None:
                raise failure
            raise classify("GET", url, response.status, data, response.headers.get("retry-after-ms"))
        return response


def sse_events(response: urllib3.BaseHTTPResponse | Http2Response, url: str) -> Iterator[tuple[str, str]]:
    """The ``(event, data)`` pairs of an event stream, until the server's ``[DONE]``.

    Raises a retryable, ambiguous-free :class:`Failure` if the stream breaks off before ``[DONE]``.
    """
    event, data = "", list[str]()
    # The pieces of a line not yet ended, joined once its end comes: a batch's data line (up to ~1.4 MB)
    # arrives in many reads, and adding each to a buffer would copy and split it again every time.
    partial: list[bytes] = []
    failure: Failure | None = None
    try:
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            partial.append(chunk)
            if b"\n" not in chunk:
                continue
            *lines, rest = b"".join(partial).split(b"\n")
            partial = [rest]
            for raw in lines:
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if not line:
                    if data:
                        text = "\n".join(data)
                        if not event and text == "[DONE]":
                            return
                        yield event, text
                    event, data = "", list[str]()
                elif line.startswith("data:"):
                    data.append(line[6:] if line.startswith("data: ") else line[5:])
                elif line.startswith("event:"):
                    event = line[6:].strip()
    except urllib3.exceptions.HTTPError as exc:
        failure = _transport_failure("GET", url, exc, reading=True)
    if failure is None:
        failure = Failure(Unavailable(f"GET {_path(url)}: the read session ended early"), retryable=True,
                          ambiguous=False)
    raise failure


_SESSION_ERRORS = {"stream_not_found": NotFound, "basin_not_found": NotFound}
_RETRYABLE_CODES = {"other", "storage", "unavailable", "request_timeout", "upstream_timeout", "hot_server",
                    "server_draining", "rate_limited", "transaction_conflict"}


def classify_event(url: str, data: str) -> Exception:
    """The exception for an ``error`` event of a read session: retryable if its code is."""
    try:
        body = json.loads(data)
        code, detail = str(body.get("code")), str(body.get("message"))
    except (ValueError, AttributeError):
        code, detail = "unknown", data[:200]
    message = f"GET {urlsplit(url).path}: read session error {code}: {detail}"
    if code in _RETRYABLE_CODES:
        return Failure(Unavailable(message, code=code), retryable=True, ambiguous=False)
    return _SESSION_ERRORS.get(code, S2Error)(message, code=code)



def _split_origin(url: str) -> tuple[str, str]:
    """``scheme://host:port`` and the rest (path and query) of ``url``."""
    cut = url.index("/", url.index("//") + 2)
    return url[:cut], url[cut:]


def _ca_bundle() -> str:
    """The CA certificates to verify S2 with, found where ``requests`` finds them."""
    return (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            or requests.utils.DEFAULT_CA_BUNDLE_PATH)


def _transport_failure(method: str, url: str, exc: BaseException, *, reading: bool = False) -> Failure:
    never_sent = not reading and isinstance(exc, (ConnectTimeoutError, NewConnectionError))
    error = Unavailable(f"{method} {_path(url)}: {type(exc).__name__}: {_describe(exc)}")
    return Failure(error, retryable=True, ambiguous=not never_sent)


def _describe(exc: BaseException) -> str:
    # urllib3's messages name the pool and the URL (never headers); keep them short.
    text = str(exc)
    return text if len(text) <= 300 else text[:300] + "..."


def _unexpected(method: str, url: str, exc: BaseException) -> Failure:
    error = Unavailable(f"{method} {_path(url)}: unexpected response ({type(exc).__name__}: {exc})")
    return Failure(error, retryable=True, ambiguous=True)


def _path(url: str) -> str:
    return urlsplit(url).path


def classify(method: str, url: str, status: int, data: bytes, retry_after_ms: str | None) -> Exception:
    """Turn an error answer into a final :class:`S2Error`, or a retryable :class:`Failure`."""
    try:
        body = json.loads(data) if data else None
    except ValueError:
        body = None
    if status == 412 and isinstance(body, dict):
        if "fencing_token_mismatch" in body:
            return FencingTokenMismatch(str(body["fencing_token_mismatch"]))
        if "seq_num_mismatch" in body:
            return SeqNumMismatch(int(body["seq_num_mismatch"]))
    if status == 416 and isinstance(body, dict) and "tail" in body:
        return RangeNotSatisfiable(position(body["tail"]))
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("message") if isinstance(body, dict) else None
    message = f"{method} {_path(url)}: HTTP {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    retry_after = _retry_after(retry_after_ms)
    if status == 429:
        return Failure(RateLimited(message, retry_after=retry_after, code=code), retryable=True, ambiguous=False,
                       retry_after=retry_after)
    if status == 409 and code == "transaction_conflict":
        return Failure(Conflict(message, status=status, code=code), retryable=True, ambiguous=False)
    if status in _RETRYABLE_STATUS:
        return Failure(Unavailable(message, status=status, code=code), retryable=True,
                       ambiguous=code not in _NO_SIDE_EFFECTS, retry_after=retry_after)
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 409:
        return Conflict(message, status=status, code=code)
    if status in (400, 422):
        return BadRequest(message, status=status, code=code)
    if status in (401, 403):
        return PermissionDenied(message, status=status, code=code)
    return S2Error(message, status=status, code=code)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(int(value), 0) / 1000 if value is not None else None
    except ValueError:
        return None


def position(data: Mapping[str, Any]) -> StreamPosition:
    return StreamPosition(int(data["seq_num"]), int(data["timestamp"]))
