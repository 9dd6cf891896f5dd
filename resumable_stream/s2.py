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

Retries (see :class:`RetryPolicy`) cover connection errors, timeouts, 408,
429 (honouring ``retry-after-ms``), 500, 502, 503, 504 and 409
``transaction_conflict``; other 4xx are never retried. An append is never
duplicated by a retry: an append with ``match_seq_num`` whose outcome is
unknown (the request was sent, no answer came) is only re-sent after the
tail shows it did not land, and is reported as a success when reading back
shows it did. An append without ``match_seq_num`` is retried only after
errors that guarantee nothing was written.
"""

from __future__ import annotations

import base64
import http.cookiejar
import json
import logging
import os
import random
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import requests
import requests.adapters
import requests.auth
import tenacity
from urllib3.exceptions import NewConnectionError

from ._fork import reset_after_fork
from .exceptions import (
    AppendConditionFailed,
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
from .log import (
    MAX_FENCING_TOKEN_BYTES,
    MAX_READ_WAIT,
    AppendAck,
    ReadBatch,
    Record,
    SequencedRecord,
    StreamPosition,
    append_in_batches,
    validate_stream_name,
)

__all__ = ["RetryPolicy", "S2Client"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ACCOUNT_ENDPOINT = "https://a.s2.dev"
DEFAULT_BASIN_ENDPOINT = "https://{basin}.b.s2.dev"
_BASIN_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{6,46})[a-z0-9]$")
# Codes of 5xx answers that guarantee that nothing was written.
_NO_SIDE_EFFECTS = {"hot_server", "server_draining"}
_RETRYABLE_STATUS = {408, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`S2Client` retries a failed request.

    Attempt *n* (from 1) that fails waits ``min(initial_backoff * 2**(n-1),
    max_backoff)`` plus a random jitter of up to the same amount, and at
    least the server's ``retry-after-ms``. Retrying stops after
    ``max_attempts`` attempts or once ``max_elapsed`` seconds have passed
    since the first one, whichever comes first. ``RetryPolicy(max_attempts=1)``
    turns retries off.
    """

    max_attempts: int = 5
    max_elapsed: float = 20.0
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_elapsed, self.initial_backoff, self.max_backoff) < 0:
            raise ValueError("durations must not be negative")

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt``, before ``retry-after-ms``."""
        base = min(self.initial_backoff * 2.0 ** (attempt - 1), self.max_backoff)
        return base + random.uniform(0, base)


class _Failure(Exception):
    """One failed attempt, and whether retrying it is allowed."""

    def __init__(self, error: S2Error, *, retryable: bool, ambiguous: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.ambiguous = ambiguous  # the request may have taken effect
        self.retry_after = retry_after


class _BearerAuth(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<BearerAuth ***>"


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


class S2Client:
    """A synchronous client for one S2 basin. Implements :class:`~resumable_stream.log.Log`.

    Thread-safe: create one per process and share it between threads. It keeps
    a pool of up to ``max_connections`` keep-alive connections; a forked child
    process gets fresh connections. Every request has a connect timeout and a
    read timeout; the read timeout of a long-poll is its ``wait`` plus
    ``request_timeout``.

    Arguments left as ``None`` are read from the environment (see the module
    documentation); a missing or malformed setting raises
    :class:`~resumable_stream.exceptions.ConfigurationError` naming it.

    :param retry: the retry policy (default :class:`RetryPolicy()`).
    :param connect_timeout: seconds to establish a connection.
    :param request_timeout: seconds to wait for an answer, beyond any long-poll wait.
    :param max_connections: connections kept open for reuse.
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
        max_connections: int = 50,
    ) -> None:
        token = _setting(access_token, "S2_ACCESS_TOKEN")
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
        self._timeouts = (connect_timeout, request_timeout)
        self._max_connections = max_connections
        self._auth = _BearerAuth(token)
        self._closed = threading.Event()
        self._session = self._new_session()
        reset_after_fork(self._after_fork)

    def __repr__(self) -> str:
        return f"<S2Client basin={self.basin!r} endpoint={self.basin_endpoint!r}>"

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self._auth
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = "resumable-stream-python"
        if self.direct_basin:
            session.headers["s2-basin"] = self.basin
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=self._max_connections, max_retries=0, pool_block=False
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def _after_fork(self) -> None:
        self._closed = threading.Event()
        self._session = self._new_session()

    def close(self) -> None:
        """Close pooled connections and cut short any retry backoff. The client is unusable afterwards."""
        self._closed.set()
        self._session.close()

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
    ) -> AppendAck:
        """Append ``records`` to ``stream``.

        ``fencing_token=None`` skips the token check; ``""`` asserts the
        stream is not fenced. ``match_seq_num`` asserts the sequence number of
        the first record. More than 1000 records or 1 MiB (metered) go out
        as consecutive batches, each atomic, each with the fencing token and
        a ``match_seq_num`` that continues from the previous one. A record
        over 1 MiB raises :class:`ValueError` before any request.
        """
        validate_stream_name(stream)
        if not records:
            raise ValueError("append needs at least one record")
        if fencing_token is not None and len(fencing_token.encode()) > MAX_FENCING_TOKEN_BYTES:
            raise ValueError(f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes")
        return append_in_batches(
            records, match_seq_num, lambda batch, match: self._append_batch(stream, batch, match, fencing_token)
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
        params: dict[str, Any] = {}
        for name, value in (
            ("seq_num", seq_num),
            ("timestamp", timestamp),
            ("tail_offset", tail_offset),
            ("count", count),
            ("bytes", bytes),
            ("until", until),
        ):
            if value is not None:
                params[name] = int(value)
        wait_s = 0
        if wait:
            wait_s = min(int(-(-wait // 1)), MAX_READ_WAIT)  # whole seconds, rounded up
            params["wait"] = wait_s
        if clamp:
            params["clamp"] = "true"
        url = self._records_url(stream)

        def attempt() -> ReadBatch:
            return self._send("GET", url, _read_batch, params=params, headers={"s2-format": "base64"}, wait=wait_s)

        return self._with_retries(attempt, f"read {stream!r}", idempotent=True, waits=wait_s)

    def check_tail(self, stream: str) -> StreamPosition:
        """The stream's next sequence number and the timestamp of its last record."""
        validate_stream_name(stream)
        url = self._records_url(stream) + "/tail"

        return self._with_retries(
            lambda: self._send("GET", url, _tail), f"check tail of {stream!r}", idempotent=True
        )

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
        self._with_retries(
            lambda: self._send("PUT", url, _ignore, json_body=body), f"ensure stream {stream!r}", idempotent=True
        )

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
        self._with_retries(lambda: self._send("PUT", url, _ignore, json_body=body), "ensure basin", idempotent=True)

    def _create(self, url: str, body: Mapping[str, Any], what: str) -> None:
        """POST a create; a resource that already exists is fine."""
        headers = {"s2-request-token": uuid.uuid4().hex}  # a retried create replays instead of conflicting
        try:
            self._with_retries(
                lambda: self._send("POST", url, _ignore, json_body=body, headers=headers), what, idempotent=True
            )
        except Conflict as exc:
            if exc.code != "resource_already_exists":
                raise

    # -- appends that are never duplicated -------------------------------

    def _append_batch(
        self, stream: str, batch: Sequence[Record], match_seq_num: int | None, fencing_token: str | None
    ) -> AppendAck:
        body, fmt = _append_payload(batch, match_seq_num, fencing_token)
        url = self._records_url(stream)
        outcome_unknown = False

        def attempt() -> AppendAck:
            nonlocal outcome_unknown
            if outcome_unknown and match_seq_num is not None:
                landed = self._landed(stream, batch, match_seq_num)
                if landed is not None:
                    return landed
            try:
                return self._send("POST", url, _ack, json_body=body, headers={"s2-format": fmt})
            except _Failure as failure:
                outcome_unknown = outcome_unknown or failure.ambiguous
                raise
            except AppendConditionFailed:
                # An earlier attempt whose outcome we did not learn may have landed since: then the
                # condition fails because of our own records.
                if outcome_unknown and match_seq_num is not None:
                    landed = self._landed(stream, batch, match_seq_num)
                    if landed is not None:
                        return landed
                raise

        return self._with_retries(attempt, f"append to {stream!r}", idempotent=match_seq_num is not None)

    def _landed(self, stream: str, batch: Sequence[Record], match_seq_num: int) -> AppendAck | None:
        """After an attempt with an unknown outcome: the ack if the batch is in the stream at ``match_seq_num``.

        ``None`` when it is not there: then sending it again is safe, and if
        someone else wrote meanwhile, the service says so with a 412.
        """
        tail = self._send("GET", self._records_url(stream) + "/tail", _tail)
        end = match_seq_num + len(batch)
        if tail.seq_num < end:
            return None
        found = self._send(
            "GET",
            self._records_url(stream),
            _read_batch,
            params={"seq_num": match_seq_num, "count": len(batch)},
            headers={"s2-format": "base64"},
        ).records
        ours = len(found) == len(batch) and all(
            r.seq_num == match_seq_num + i and r.body == b.body and r.headers == b.headers
            for i, (r, b) in enumerate(zip(found, batch, strict=True))
        )
        if not ours:
            return None
        logger.info("append to %r had landed before its answer was lost; not sending it again", stream)
        start = StreamPosition(match_seq_num, found[0].timestamp)
        return AppendAck(start, StreamPosition(end, found[-1].timestamp), tail)

    # -- HTTP ------------------------------------------------------------

    def _records_url(self, stream: str) -> str:
        return f"{self.basin_endpoint}/streams/{quote(stream, safe='')}/records"

    def _with_retries(self, attempt: Callable[[], T], what: str, *, idempotent: bool, waits: float = 0) -> T:
        """Run ``attempt`` under the retry policy; raise the last error as an :class:`S2Error`.

        ``waits`` is how long an attempt may legitimately take (a long-poll), on top of the policy's budget.
        """
        if self._closed.is_set():
            raise Unavailable("the S2 client is closed")
        policy = self.retry

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, _Failure) and exc.retryable and (idempotent or not exc.ambiguous)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            delay = policy.backoff(state.attempt_number)
            if isinstance(exc, _Failure) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            return delay

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            logger.warning(
                "S2 %s failed (%s); retrying in %.2f s (attempt %d of %d)",
                what,
                exc,
                state.upcoming_sleep,
                state.attempt_number,
                policy.max_attempts,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable),
            stop=(
                tenacity.stop_after_attempt(policy.max_attempts)
                | tenacity.stop_before_delay(policy.max_elapsed + waits)
                | tenacity.stop_when_event_set(self._closed)
            ),
            wait=wait,
            sleep=tenacity.sleep_using_event(self._closed),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Failure as failure:
            error = failure.error
        raise error

    def _send(
        self,
        method: str,
        url: str,
        parse: Callable[[Any], T],
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        wait: float = 0,
    ) -> T:
        """One HTTP attempt: ``parse`` applied to the JSON body of a 2xx answer.

        Raises :class:`_Failure` for what may be retried and a final
        :class:`S2Error` for the rest; an answer that cannot be parsed is an
        :class:`Unavailable` failure whose effect is unknown.
        """
        connect_timeout, request_timeout = self._timeouts
        data = None
        all_headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":"), ensure_ascii=False).encode()
            all_headers["Content-Type"] = "application/json"
        # Failures are raised outside the `except` clauses: the requests exceptions they replace hold the
        # request, and with it the access token, which must not be reachable from what we raise.
        failure: _Failure | None = None
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=all_headers,
                timeout=(connect_timeout, request_timeout + wait),
            )
        except requests.exceptions.RequestException as exc:
            never_sent = isinstance(exc, requests.exceptions.ConnectTimeout) or _refused(exc)
            error = Unavailable(f"{method} {_path(url)}: {type(exc).__name__}: {exc}")
            failure = _Failure(error, retryable=True, ambiguous=not never_sent)
        if failure is not None:
            raise failure
        if response.status_code >= 300:
            raise _classify(method, url, response)
        try:
            return parse(response.json())
        except (ValueError, KeyError, TypeError) as exc:  # includes JSON and base64 decoding errors
            error = Unavailable(f"{method} {_path(url)}: unexpected response ({type(exc).__name__}: {exc})")
            failure = _Failure(error, retryable=True, ambiguous=True)
        raise failure


def _refused(exc: BaseException) -> bool:
    """True when no connection was established, so the request cannot have been received."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (NewConnectionError, ConnectionRefusedError)):
            return True
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            current = reason
            continue
        args = getattr(current, "args", ())
        nested = next((a for a in args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return False


def _path(url: str) -> str:
    return urlsplit(url).path


def _classify(method: str, url: str, response: requests.Response) -> Exception:
    """Turn an error response into a final :class:`S2Error`, or a retryable :class:`_Failure`."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if status == 412 and isinstance(body, dict):
        if "fencing_token_mismatch" in body:
            return FencingTokenMismatch(str(body["fencing_token_mismatch"]))
        if "seq_num_mismatch" in body:
            return SeqNumMismatch(int(body["seq_num_mismatch"]))
    if status == 416 and isinstance(body, dict) and "tail" in body:
        return RangeNotSatisfiable(_position(body["tail"]))
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("message") if isinstance(body, dict) else None
    message = f"{method} {_path(url)}: HTTP {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    if status == 429:
        retry_after = _retry_after(response)
        return _Failure(RateLimited(message, retry_after=retry_after, code=code), retryable=True, ambiguous=False,
                        retry_after=retry_after)
    if status == 409 and code == "transaction_conflict":
        return _Failure(Conflict(message, status=status, code=code), retryable=True, ambiguous=False)
    if status in _RETRYABLE_STATUS:
        return _Failure(
            Unavailable(message, status=status, code=code),
            retryable=True,
            ambiguous=code not in _NO_SIDE_EFFECTS,
            retry_after=_retry_after(response),
        )
    if status == 404:
        return NotFound(message, status=status, code=code)
    if status == 409:
        return Conflict(message, status=status, code=code)
    if status in (400, 422):
        return BadRequest(message, status=status, code=code)
    if status in (401, 403):
        return PermissionDenied(message, status=status, code=code)
    return S2Error(message, status=status, code=code)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("retry-after-ms")
    try:
        return max(int(value), 0) / 1000 if value is not None else None
    except ValueError:
        return None


def _append_payload(
    batch: Sequence[Record], match_seq_num: int | None, fencing_token: str | None
) -> tuple[dict[str, Any], str]:
    """The JSON body of an append, in ``raw`` format when every byte string is UTF-8, else ``base64``."""

    def records(encode: Callable[[bytes], str]) -> list[dict[str, Any]]:
        out = []
        for record in batch:
            item: dict[str, Any] = {"body": encode(record.body)}
            if record.headers:
                item["headers"] = [[encode(name), encode(value)] for name, value in record.headers]
            if record.timestamp is not None:
                item["timestamp"] = record.timestamp
            out.append(item)
        return out

    try:
        body: dict[str, Any] = {"records": records(lambda b: b.decode("utf-8"))}
        fmt = "raw"
    except UnicodeDecodeError:
        body = {"records": records(_b64)}
        fmt = "base64"
    if match_seq_num is not None:
        body["match_seq_num"] = match_seq_num
    if fencing_token is not None:
        body["fencing_token"] = fencing_token
    return body, fmt


def _ignore(data: Any) -> None:
    return None


def _tail(data: Mapping[str, Any]) -> StreamPosition:
    return _position(data["tail"])


def _position(data: Mapping[str, Any]) -> StreamPosition:
    return StreamPosition(int(data["seq_num"]), int(data["timestamp"]))


def _ack(data: Mapping[str, Any]) -> AppendAck:
    return AppendAck(_position(data["start"]), _position(data["end"]), _position(data["tail"]))


def _read_batch(data: Mapping[str, Any]) -> ReadBatch:
    records = tuple(
        SequencedRecord(
            int(item["seq_num"]),
            int(item["timestamp"]),
            _unb64(item.get("body", "")),
            tuple((_unb64(name), _unb64(value)) for name, value in item.get("headers", ())),
        )
        for item in data["records"]
    )
    tail = data.get("tail")
    return ReadBatch(records, _position(tail) if tail else None)
