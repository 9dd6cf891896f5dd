"""S2Client: a synchronous, thread-safe client for the S2 REST API (``requests`` + ``tenacity``).

It speaks the JSON subset of the API that the engine needs, to S2 cloud, to
self-hosted s2-lite, or to this project's local server
(:mod:`resumable_stream.testing.server`): append, unary read (with
long-poll), check tail, and ensure basin/stream for set-up.

Configuration comes from the constructor or, for every argument left out,
from the environment, with the names of S2's official SDKs:

=====================  =====================================================
``S2_ACCESS_TOKEN``    access token (required; s2-lite accepts any value)
``S2_BASIN``           basin name (required)
``S2_ACCOUNT_ENDPOINT`` default ``https://a.s2.dev``
``S2_BASIN_ENDPOINT``  default ``https://{basin}.b.s2.dev``; without a
                       ``{basin}`` placeholder the endpoint is shared by all
                       basins (s2-lite style) and requests carry ``s2-basin``
=====================  =====================================================

``/v1`` is added to an endpoint that has no path.

Retries (see :class:`~resumable_stream.retries.RetryPolicy`) cover connection errors, timeouts, 408,
429 (honouring ``retry-after-ms``), 500, 502, 503, 504 and 409
``transaction_conflict``; other 4xx are never retried. An append is never
duplicated by a retry: an append with ``match_seq_num`` whose outcome is
unknown (the request was sent, no answer came) is only re-sent after the
tail shows it did not land, and is reported as a success when reading back
shows it did. An append without ``match_seq_num`` is retried only after
errors that guarantee nothing was written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from ._fork import reset_after_fork
from ._http import Failure, Secret, Transport, classify_event, position, sse_events
from ._records_json import BASE64, RAW, ack, append_payload, read_batch, read_params, read_text_batch, tail_of
from .exceptions import (
    AppendConditionFailed,
    ConfigurationError,
    Conflict,
    Unavailable,
)
from .log import (
    MAX_FENCING_TOKEN_BYTES,
    MAX_READ_WAIT,
    AppendAck,
    ReadBatch,
    ReadSession,
    Record,
    StreamPosition,
    TextBatch,
    append_in_batches,
    validate_stream_name,
)
from .retries import RetryPolicy, with_retries

__all__ = ["S2Client"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ACCOUNT_ENDPOINT = "https://a.s2.dev"
DEFAULT_BASIN_ENDPOINT = "https://{basin}.b.s2.dev"
_BASIN_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{6,46})[a-z0-9]$")


def _endpoint(variable: str, value: str) -> str:
    """Normalise an endpoint URL: add ``https://`` to a bare host and ``/v1`` to an empty path."""
    value = value.strip()
    if "://" not in value:
        value = "https://" + value
    parts = urlsplit(value.replace("{basin}", "basin-placeholder"))
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(variable, f"must be an http:// or https:// URL, not {value!r}")
    if not parts.hostname:
        raise ConfigurationError(variable, f"has no host name: {value!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigurationError(variable, f"has an invalid port: {value!r}") from None
    if parts.query or parts.fragment:
        raise ConfigurationError(variable, f"must not have a query or fragment: {value!r}")
    value = value.rstrip("/")
    if not urlsplit(value.replace("{basin}", "b")).path:
        value += "/v1"
    return value


def _setting(value: str | None, variable: str, default: str | None = None) -> str:
    if value is None:
        value = os.environ.get(variable) or default
    if not value:
        raise ConfigurationError(variable, "is not set")
    return value


def _take_token(box: list[str | None]) -> Secret:
    """The access token out of ``box``, checked without ever showing it: it goes into a header as it is.

    It travels in a box that this empties, and in no local of any frame that can raise: an error tracker
    that records the frames of a ``ConfigurationError`` finds no token in them.
    """
    token = Secret(_setting(box.pop(), "S2_ACCESS_TOKEN"))
    if not _header_safe(token):
        raise ConfigurationError(
            "S2_ACCESS_TOKEN",
            "must be printable ASCII without spaces (is there a trailing newline, or a stray character?)",
        )
    return token


def _header_safe(token: Secret) -> bool:
    text = token.reveal()
    return text.isascii() and text.isprintable() and " " not in text


class S2Client:
    """A synchronous client for one S2 basin. Implements :class:`~resumable_stream.log.Log`.

    Thread-safe: create one per process and share it between threads. Appends
    given a ``timeout`` (the writer's batches and heartbeats) have up to
    ``max_connections`` keep-alive connections of their own, and other unary
    requests share as many again: a request waits for a free one of its kind
    (until its timeout, or as long as a call may take under the retry policy:
    ``max_elapsed`` and one attempt's timeouts), so the writer's appends never
    wait behind reads or claims. Each read session holds a connection of its
    own while it follows a stream, or with ``http2=True`` one stream of a
    shared HTTP/2 connection (as many per connection as the server allows).
    A forked child process gets fresh connections.
    Every request has a connect timeout and a read timeout; the read timeout
    of a long-poll is its ``wait`` plus ``request_timeout``.

    Arguments left as ``None`` are read from the environment (see the module
    documentation); a missing or malformed setting raises
    :class:`~resumable_stream.exceptions.ConfigurationError` naming it. The
    access token is never shown: not in logs, exceptions or reprs.

    :param retry: the retry policy (default :class:`RetryPolicy()`).
    :param connect_timeout: seconds to establish a connection.
    :param request_timeout: seconds to wait for an answer, beyond any long-poll wait.
    :param max_connections: keep-alive connections for appends with a timeout, and as many for other
        unary requests.
    :param http2: carry read sessions over HTTP/2 (needs the ``http2`` extra): a process following a
        thousand streams then holds a handful of connections instead of a thousand. An endpoint that
        does not speak HTTP/2 gets HTTP/1.1 sessions, with a warning; so does one behind a proxy.
    """

    def __init__(
        self,
        *,
        access_token: str | None = None,
        basin: str | None = None,
        account_endpoint: str | None = None,
        basin_endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        connect_timeout: float = 3.05,
        request_timeout: float = 10.0,
        max_connections: int = 16,
        http2: bool = False,
    ) -> None:
        box, access_token = [access_token], None  # from here on the token is only in `token`, redacted
        token = _take_token(box)
        self.basin = _setting(basin, "S2_BASIN")
        if not _BASIN_NAME.match(self.basin):
            raise ConfigurationError(
                "S2_BASIN",
                f"{self.basin!r} is not a valid basin name (8-48 characters of a-z, 0-9 and '-', "
                "not starting or ending with '-')",
            )
        self.account_endpoint = _endpoint(
            "S2_ACCOUNT_ENDPOINT", _setting(account_endpoint, "S2_ACCOUNT_ENDPOINT", DEFAULT_ACCOUNT_ENDPOINT)
        )
        basin_template = _endpoint(
            "S2_BASIN_ENDPOINT", _setting(basin_endpoint, "S2_BASIN_ENDPOINT", DEFAULT_BASIN_ENDPOINT)
        )
        #: True when the basin endpoint is shared (s2-lite style) and requests carry ``s2-basin``.
        self.direct_basin = "{basin}" not in basin_template
        self.basin_endpoint = basin_template.replace("{basin}", self.basin)
        self.retry = retry or RetryPolicy()
        self._closed = threading.Event()
        headers = {"User-Agent": "resumable-stream-python"}
        if self.direct_basin:
            headers["s2-basin"] = self.basin
        self._transport_settings = (token, headers, connect_timeout, request_timeout, max_connections, http2)
        self._http = self._new_transport()
        reset_after_fork(self._after_fork)

    def _new_transport(self) -> Transport:
        token, headers, connect_timeout, request_timeout, max_connections, http2 = self._transport_settings
        return Transport(token, headers, endpoint=self.basin_endpoint, connect_timeout=connect_timeout,
                         request_timeout=request_timeout, max_connections=max_connections,
                         queue_timeout=self.retry.max_elapsed + connect_timeout + request_timeout, http2=http2)

    def __repr__(self) -> str:
        # Safe on a client whose constructor raised.
        return f"<S2Client basin={getattr(self, 'basin', None)!r} endpoint={getattr(self, 'basin_endpoint', None)!r}>"

    def _after_fork(self) -> None:
        self._closed = threading.Event()
        self._http = self._new_transport()

    def close(self) -> None:
        """Close pooled connections and cut short any retry backoff. The client is unusable afterwards."""
        self._closed.set()
        self._http.close()

    def __enter__(self) -> S2Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- operations ------------------------------------------------------

    def append(
        self,
        stream: str,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
        timeout: float | None = None,
    ) -> AppendAck:
        """Append ``records`` to ``stream``.

        ``fencing_token=None`` skips the token check; ``""`` asserts the
        stream is not fenced. ``match_seq_num`` asserts the sequence number of
        the first record. More than 1000 records or 1 MiB (metered) go out
        as consecutive batches, each atomic, each with the fencing token and
        a ``match_seq_num`` that continues from the previous one. A record
        over 1 MiB raises :class:`ValueError` before any request. ``timeout``
        bounds the whole call, retries included (it raises the last error
        once it has passed), and an append with one uses connections kept
        for such appends, which no other request waits for.
        """
        validate_stream_name(stream)
        if not records:
            raise ValueError("append needs at least one record")
        if fencing_token is not None and len(fencing_token.encode()) > MAX_FENCING_TOKEN_BYTES:
            raise ValueError(f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes")
        deadline = None if timeout is None else time.monotonic() + timeout
        return append_in_batches(
            records, match_seq_num,
            lambda batch, match: self._append_batch(stream, batch, match, fencing_token, deadline),
        )

    def read(
        self,
        stream: str,
        *,
        seq_num: int | None = None,
        timestamp: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        until: int | None = None,
        wait: int | None = None,
        clamp: bool = False,
    ) -> ReadBatch:
        """Read records (unary). At most 1000 records and 1 MiB come back.

        Start at ``seq_num``, at the first record with ``timestamp`` or later,
        or ``tail_offset`` records before the tail (with none of them: at the
        tail). ``clamp`` starts at the tail instead of raising
        :class:`RangeNotSatisfiable` when the start is beyond it. ``wait``
        (whole seconds, at most 60) long-polls a read that starts at the tail:
        it returns as soon as records arrive, or an empty batch.
        """
        validate_stream_name(stream)
        params = read_params(seq_num=seq_num, timestamp=timestamp, tail_offset=tail_offset, count=count,
                              bytes=bytes, until=until, clamp=clamp)
        wait_s = 0
        if wait:
            wait_s = min(int(-(-wait // 1)), MAX_READ_WAIT)  # whole seconds, rounded up
            params["wait"] = wait_s
        url = self._records_url(stream)

        def attempt() -> ReadBatch:
            return read_batch(self._http.request("GET", url, params=params, headers=BASE64, wait=wait_s))

        return self._with_retries(attempt, f"read {stream!r}", idempotent=True, waits=wait_s)

    def read_session(
        self,
        stream: str,
        *,
        seq_num: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        wait: int | None = None,
        clamp: bool = False,
        text: bool = False,
    ) -> ReadSession:
        """A read session (SSE): batches as they are written, and heartbeats, over one connection.

        See :meth:`Log.read_session <resumable_stream.log.Log.read_session>`.
        ``count`` and ``bytes`` limit the whole session. A session that
        breaks off is reopened after the last record it delivered, under the
        retry policy (whose budget starts again after every event received).
        Closing it, from any thread, shuts its connection down.
        """
        validate_stream_name(stream)
        if wait is not None:
            wait = int(-(-wait // 1))
        responses: list[Any] = []  # the one open now, shut down by close() from any thread

        def interrupt() -> None:
            for response in list(responses):
                with contextlib.suppress(OSError):  # its connection may be gone already (reset, closed)
                    response.shutdown()

        return ReadSession(
            lambda cancelled: self._session(stream, seq_num, count, bytes, wait, clamp, text, responses, cancelled),
            interrupt,
        )

    def _session(self, stream: str, seq_num: int | None, count: int | None, limit_bytes: int | None,
                 wait: int | None, clamp: bool, text: bool, responses: list[Any],
                 cancelled: threading.Event) -> Iterator[ReadBatch | TextBatch | StreamPosition]:
        url = self._records_url(stream)
        headers, parse = (RAW, read_text_batch) if text else (BASE64, read_batch)
        failures = 0
        first_failure = 0.0
        while True:
            params = read_params(seq_num=seq_num, count=count, bytes=limit_bytes, clamp=clamp)
            if wait is not None:
                params["wait"] = wait
            try:
                if self._closed.is_set():
                    raise Unavailable("the S2 client is closed")
                if cancelled.is_set():
                    return
                response = self._http.stream(url, params=params, headers=headers)
                responses.append(response)
                finished = False
                try:
                    for event, data in sse_events(response, url):
                        failures = 0
                        if event == "batch":
                            batch = parse(json.loads(data))
                            if isinstance(batch, TextBatch):
                                delivered, last = len(batch.seq_nums), batch.seq_nums[-1]
                            else:
                                delivered = len(batch.records)
                                last = batch.records[-1].seq_num if delivered else -1
                            if delivered:
                                seq_num = last + 1
                                if count is not None:
                                    count -= delivered
                                if limit_bytes is not None:
                                    limit_bytes -= sum(r.metered_size for r in batch.records)
                            yield batch
                        elif event == "ping":
                            tail = json.loads(data).get("tail")
                            if tail:
                                yield position(tail)
                        elif event == "error":
                            raise classify_event(url, data)
                    finished = True
                    return
                finally:
                    responses.remove(response)
                    if finished:
                        response.drain_conn()
                        response.release_conn()
                    else:
                        response.close()
            except Failure as failure:
                if cancelled.is_set():
                    return  # closed by its reader
                if not failure.retryable or self._closed.is_set():
                    raise failure.error from None
                now = time.monotonic()
                failures += 1
                if failures == 1:
                    first_failure = now
                policy = self.retry
                if failures >= policy.max_attempts or now - first_failure > policy.max_elapsed:
                    raise failure.error from None
                delay = max(policy.backoff(failures), failure.retry_after or 0)
                logger.warning("S2 read session on %r failed (%s); reopening in %.2f s", stream, failure.error, delay)
                self._closed.wait(delay)
            except (ValueError, KeyError, TypeError) as exc:
                raise Unavailable(f"GET {urlsplit(url).path}: unexpected event ({type(exc).__name__}: {exc})") from None

    def check_tail(self, stream: str) -> StreamPosition:
        """The stream's next sequence number and the timestamp of its last record."""
        validate_stream_name(stream)
        url = self._records_url(stream) + "/tail"
        return self._with_retries(lambda: tail_of(self._http.request("GET", url)), f"check tail of {stream!r}",
                                  idempotent=True)

    def ensure_stream(self, stream: str, config: Mapping[str, Any] | None = None) -> None:
        """Create ``stream`` if it does not exist.

        Without ``config`` an existing stream is left as it is. With
        ``config`` (an S2 ``StreamConfig``) the stream, new or not, gets
        exactly that configuration (S2's ``PUT``).
        """
        validate_stream_name(stream)
        if config is None:
            self._create(f"{self.basin_endpoint}/streams", {"stream": stream}, f"create stream {stream!r}")
            return
        url = f"{self.basin_endpoint}/streams/{quote(stream, safe='')}"
        body = dict(config)
        self._with_retries(lambda: self._http.request("PUT", url, body=body), f"ensure stream {stream!r}",
                           idempotent=True)

    def ensure_basin(self, config: Mapping[str, Any] | None = None) -> None:
        """Create the basin if it does not exist.

        Without ``config`` an existing basin is left as it is. With ``config``
        (an S2 ``BasinConfig``, such as ``{"create_stream_on_append": True,
        "create_stream_on_read": True}``) the basin, new or not, gets exactly
        that configuration (S2's ``PUT``).
        """
        if config is None:
            self._create(f"{self.account_endpoint}/basins", {"basin": self.basin}, "create basin")
            return
        url = f"{self.account_endpoint}/basins/{self.basin}"
        body = {"config": dict(config)}
        self._with_retries(lambda: self._http.request("PUT", url, body=body), "ensure basin", idempotent=True)

    def _create(self, url: str, body: Mapping[str, Any], what: str) -> None:
        """POST a create; a resource that already exists is fine."""
        headers = {"s2-request-token": uuid.uuid4().hex}  # a retried create replays instead of conflicting
        try:
            self._with_retries(lambda: self._http.request("POST", url, body=body, headers=headers), what,
                               idempotent=True)
        except Conflict as exc:
            if exc.code != "resource_already_exists":
                raise

    # -- appends that are never duplicated -------------------------------

    def _append_batch(self, stream: str, batch: Sequence[Record], match_seq_num: int | None,
                      fencing_token: str | None, deadline: float | None) -> AppendAck:
        body, fmt = append_payload(batch, match_seq_num, fencing_token)
        headers = {"s2-format": fmt}
        url = self._records_url(stream)
        outcome_unknown = False

        def attempt() -> AppendAck:
            nonlocal outcome_unknown
            if outcome_unknown and match_seq_num is not None:
                landed = self._landed(stream, batch, match_seq_num, deadline)
                if landed is not None:
                    return landed
            try:
                return ack(self._http.request("POST", url, body=body, headers=headers, deadline=deadline))
            except Failure as failure:
                outcome_unknown = outcome_unknown or failure.ambiguous
                raise
            except AppendConditionFailed:
                # An earlier attempt whose outcome we did not learn may have landed since: then the
                # condition fails because of our own records.
                if outcome_unknown and match_seq_num is not None:
                    landed = self._landed(stream, batch, match_seq_num, deadline)
                    if landed is not None:
                        return landed
                raise

        return self._with_retries(attempt, f"append to {stream!r}", idempotent=match_seq_num is not None,
                                  deadline=deadline)

    def _landed(self, stream: str, batch: Sequence[Record], match_seq_num: int,
                deadline: float | None) -> AppendAck | None:
        """After an attempt with an unknown outcome: the ack if the batch is in the stream at ``match_seq_num``.

        ``None`` when it is not there: then sending it again is safe, and if
        someone else wrote meanwhile, the service says so with a 412.
        """
        tail = tail_of(self._http.request("GET", self._records_url(stream) + "/tail", deadline=deadline))
        end = match_seq_num + len(batch)
        if tail.seq_num < end:
            return None
        params = {"seq_num": match_seq_num, "count": len(batch)}
        found = read_batch(self._http.request("GET", self._records_url(stream), params=params, headers=BASE64,
                                              deadline=deadline)).records
        ours = len(found) == len(batch) and all(
            r.seq_num == match_seq_num + i and r.body == b.body and r.headers == b.headers
            for i, (r, b) in enumerate(zip(found, batch, strict=True))
        )
        if not ours:
            return None
        logger.info("append to %r had landed before its answer was lost; not sending it again", stream)
        start = StreamPosition(match_seq_num, found[0].timestamp)
        return AppendAck(start, StreamPosition(end, found[-1].timestamp), tail)

    # -- retries ---------------------------------------------------------

    def _records_url(self, stream: str) -> str:
        return f"{self.basin_endpoint}/streams/{quote(stream, safe='')}/records"

    def _with_retries(self, attempt: Callable[[], T], what: str, *, idempotent: bool, waits: float = 0,
                      deadline: float | None = None) -> T:
        if self._closed.is_set():
            raise Unavailable("the S2 client is closed")
        return with_retries(attempt, self.retry, what, idempotent=idempotent, waits=waits, deadline=deadline,
                            closed=self._closed)
