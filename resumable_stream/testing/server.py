"""A local S2-compatible HTTP server: the project's test double and development server.

It speaks the JSON subset of S2's REST API the way s2-lite (S2's open-source
server) does, on one endpoint: ``/v1/basins*`` for basins, and
``/v1/streams*`` with the basin named by the ``s2-basin`` header. Each basin
is a :class:`~resumable_stream.memory.MemoryLog`, so appends, fencing, trims,
the 416 rules, long-polls and read sessions behave exactly as the in-process
log does. Reads come back as unary JSON or, with ``Accept: text/event-stream``,
as an SSE read session. Any ``Authorization`` header is accepted.

Run it from a shell::

    python -m resumable_stream.testing.server --port 8080 --basin my-basin-1

It prints ``READY http://127.0.0.1:8080`` once it listens, and serves until
SIGINT or SIGTERM. Point a client at it with ``S2_ACCOUNT_ENDPOINT`` and
``S2_BASIN_ENDPOINT`` set to that URL and any ``S2_ACCESS_TOKEN``.

Or use :class:`S2Server` in-process, as a context manager. Its
:attr:`S2Server.faults` injects latency, error responses and dropped
connections per operation and per stream, at run time; a server in another
process takes the same faults as JSON on ``POST /_faults`` (``GET`` lists
them, ``DELETE`` clears them).

Deliberate differences from s2-lite: no protobuf, S2S, HTTP/2, compression,
encryption, retention or delete-on-empty; access tokens, metrics and
locations answer ``501 not_implemented`` (as in lite); deleting a stream or
basin removes it at once instead of leaving it pending deletion; the
``s2-stream-config`` header is ignored.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import parse_qsl, unquote

from ..exceptions import (
    Conflict,
    FencingTokenMismatch,
    NotFound,
    RangeNotSatisfiable,
    S2Error,
    SeqNumMismatch,
)
from ..log import (
    MAX_FENCING_TOKEN_BYTES,
    ReadBatch,
    Record,
    StreamPosition,
    validate_stream_name,
)
from ..memory import MemoryLog, StreamInfo, merge_stream_config

__all__ = ["OPERATIONS", "Fault", "Faults", "S2Server", "main"]

logger = logging.getLogger(__name__)

_U64_MAX = 2**64 - 1
_U32_MAX = 2**32 - 1
_BASIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{6,46}[a-z0-9]$")
_BASIN_NAME_RULE = "8-48 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"
_MAX_REQUEST_TOKEN_BYTES = 36
_LIST_LIMIT = 1000

#: Status of each S2 error code.
_CODE_STATUS = {
    "bad_header": 400,
    "bad_path": 400,
    "bad_query": 400,
    "bad_json": 400,
    "bad_proto": 400,
    "bad_frame": 400,
    "decryption_failed": 400,
    "authn": 401,
    "permission_denied": 403,
    "quota_exhausted": 403,
    "basin_not_found": 404,
    "stream_not_found": 404,
    "access_token_not_found": 404,
    "request_timeout": 408,
    "resource_already_exists": 409,
    "basin_deletion_pending": 409,
    "stream_deletion_pending": 409,
    "transaction_conflict": 409,
    "invalid": 422,
    "rate_limited": 429,
    "client_hangup": 499,
    "other": 500,
    "storage": 500,
    "not_implemented": 501,
    "hot_server": 502,
    "server_draining": 503,
    "unavailable": 503,
    "upstream_timeout": 504,
}
#: The code an injected fault gets when it names only a status.
_DEFAULT_CODE = {
    400: "bad_json",
    401: "authn",
    403: "permission_denied",
    404: "stream_not_found",
    408: "request_timeout",
    409: "transaction_conflict",
    422: "invalid",
    429: "rate_limited",
    499: "client_hangup",
    500: "other",
    501: "not_implemented",
    502: "hot_server",
    503: "unavailable",
    504: "upstream_timeout",
}

# Route name -> method -> OpenAPI operationId.
_ROUTES: dict[str, dict[str, str]] = {
    "basins": {"GET": "list_basins", "POST": "create_basin"},
    "basin": {"GET": "get_basin_config", "PUT": "ensure_basin", "PATCH": "reconfigure_basin", "DELETE": "delete_basin"},
    "streams": {"GET": "list_streams", "POST": "create_stream"},
    "stream": {
        "GET": "get_stream_config",
        "PUT": "ensure_stream",
        "PATCH": "reconfigure_stream",
        "DELETE": "delete_stream",
    },
    "records": {"GET": "read", "POST": "append"},
    "tail": {"GET": "check_tail"},
    "access_tokens": {"GET": "list_access_tokens", "POST": "issue_access_token"},
    "access_token": {"DELETE": "revoke_access_token"},
    "locations": {"GET": "list_locations"},
    "default_location": {"GET": "get_default_location", "PUT": "set_default_location"},
    "account_metrics": {"GET": "account_metrics"},
    "basin_metrics": {"GET": "basin_metrics"},
    "stream_metrics": {"GET": "stream_metrics"},
}
#: Every operationId the server knows; faults name these.
OPERATIONS = frozenset(op for methods in _ROUTES.values() for op in methods.values())
_NOT_IMPLEMENTED_ROUTES = (
    "access_tokens",
    "access_token",
    "locations",
    "default_location",
    "account_metrics",
    "basin_metrics",
    "stream_metrics",
)
_NOT_IMPLEMENTED = frozenset(op for route in _NOT_IMPLEMENTED_ROUTES for op in _ROUTES[route].values())

_DEFAULT_RETENTION_AGE = 7 * 24 * 3600
_STORAGE_CLASSES = ("standard", "express")
_TIMESTAMPING_MODES = ("client-prefer", "client-require", "arrival")
_CIPHERS = ("aegis-256", "aes-256-gcm")


# -- errors ------------------------------------------------------------------


class _HttpError(Exception):
    """An error response: a status and a JSON body."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def _error(code: str, message: str) -> _HttpError:
    return _HttpError(_CODE_STATUS[code], {"code": code, "message": message})


def _bad_json(message: str) -> _HttpError:
    return _error("bad_json", message)


def _from_s2_error(exc: S2Error, basin: str, stream: str | None) -> _HttpError:
    """The response S2 gives for an error the log raised."""
    if isinstance(exc, FencingTokenMismatch):
        return _HttpError(412, {"fencing_token_mismatch": exc.current_token})
    if isinstance(exc, SeqNumMismatch):
        return _HttpError(412, {"seq_num_mismatch": exc.next_seq_num})
    if isinstance(exc, RangeNotSatisfiable):
        return _HttpError(416, {"tail": _position(exc.tail)})
    code = exc.code or _DEFAULT_CODE.get(exc.status or 500, "other")
    status = _CODE_STATUS.get(code, exc.status or 500)
    message = exc.message
    if code == "stream_not_found" and stream is not None:
        message = f"stream `{stream}` in basin `{basin}` not found"
    return _HttpError(status, {"code": code, "message": message})


# -- faults ------------------------------------------------------------------


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
class _Effect:
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
        fault = _make_fault(
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
        self._append(fault)

    def _append(self, fault: Fault) -> None:
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

    def _take(self, op: str, stream: str | None) -> _Effect:
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
        return _Effect(latency, chosen)


def _make_fault(
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
        if code not in _CODE_STATUS:
            raise ValueError(f"unknown code {code!r}; give a status too")
        status = _CODE_STATUS[code]
    if status is not None:
        if status in (412, 416):
            raise ValueError("412 and 416 have structured bodies; provoke them with real requests instead")
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if code is None:
            if status not in _DEFAULT_CODE:
                raise ValueError(f"no default code for status {status}; give a code")
            code = _DEFAULT_CODE[status]
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


# -- JSON shapes -------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _position(position: StreamPosition) -> dict[str, int]:
    return {"seq_num": position.seq_num, "timestamp": position.timestamp}


def _stream_info(info: StreamInfo) -> dict[str, Any]:
    return {"name": info.name, "created_at": _rfc3339(info.created_at), "deleted_at": None, "cipher": None}


def _resolved_stream_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's configuration with every default filled in, where neither the stream nor its basin set one."""
    timestamping = config.get("timestamping") or {}
    delete_on_empty = config.get("delete_on_empty") or {}
    return {
        "storage_class": config.get("storage_class") or "express",
        "retention_policy": config.get("retention_policy") or {"age": _DEFAULT_RETENTION_AGE},
        "timestamping": {
            "mode": timestamping.get("mode") or "client-prefer",
            "uncapped": bool(timestamping.get("uncapped")),
        },
        "delete_on_empty": {"min_age_secs": delete_on_empty.get("min_age_secs") or 0},
    }


def _encoder(fmt: str) -> Callable[[bytes], str]:
    if fmt == "base64":
        return lambda data: base64.b64encode(data).decode("ascii")
    return lambda data: data.decode("utf-8", "replace")


def _read_batch(batch: ReadBatch, fmt: str) -> dict[str, Any]:
    """A ``ReadBatch`` as S2's JSON: empty ``headers`` and ``body`` omitted, ``tail`` only when known."""
    encode = _encoder(fmt)
    records = []
    for record in batch.records:
        item: dict[str, Any] = {"seq_num": record.seq_num, "timestamp": record.timestamp}
        if record.headers:
            item["headers"] = [[encode(name), encode(value)] for name, value in record.headers]
        if record.body:
            item["body"] = encode(record.body)
        records.append(item)
    out: dict[str, Any] = {"records": records}
    if batch.tail is not None:
        out["tail"] = _position(batch.tail)
    return out


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- request parsing ---------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"invalid JSON number {name}")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate field `{key}`")
        out[key] = value
    return out


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant, object_pairs_hook=_unique_object)
    except (ValueError, RecursionError) as exc:
        raise _bad_json(f"Failed to parse the request body as JSON: {exc}") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must be an object")
    return value


def _u64(value: Any, what: str, *, maximum: int = _U64_MAX) -> int:
    if type(value) is not int or not 0 <= value <= maximum:
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must be an unsigned integer")
    return value


def _opt_u64(value: Any, what: str) -> int | None:
    return None if value is None else _u64(value, what)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must be a string")
    return value


def _opt_bool(value: Any, what: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must be a boolean")
    return value


def _enum(value: Any, what: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must be one of {', '.join(choices)}")
    return str(value)


def _retention(value: Any, what: str) -> dict[str, Any]:
    policy = _object(value, what)
    if len(policy) != 1 or next(iter(policy)) not in ("age", "infinite"):
        raise _bad_json(f"Failed to deserialize the JSON body: `{what}` must have exactly one of `age`, `infinite`")
    if "age" in policy:
        age = _u64(policy["age"], f"{what}.age")
        if age == 0:
            raise _error("invalid", "age must be greater than 0 seconds")
        return {"age": age}
    _object(policy["infinite"], f"{what}.infinite")
    return {"infinite": {}}


def _stream_config(value: Any, what: str) -> dict[str, Any]:
    """Parse a ``StreamConfig``; the result holds only the fields that are set."""
    if value is None:
        return {}
    obj = _object(value, what)
    out: dict[str, Any] = {}
    if obj.get("storage_class") is not None:
        out["storage_class"] = _enum(obj["storage_class"], f"{what}.storage_class", _STORAGE_CLASSES)
    if obj.get("retention_policy") is not None:
        out["retention_policy"] = _retention(obj["retention_policy"], f"{what}.retention_policy")
    if obj.get("timestamping") is not None:
        timestamping = _object(obj["timestamping"], f"{what}.timestamping")
        nested: dict[str, Any] = {}
        if timestamping.get("mode") is not None:
            nested["mode"] = _enum(timestamping["mode"], f"{what}.timestamping.mode", _TIMESTAMPING_MODES)
        uncapped = _opt_bool(timestamping.get("uncapped"), f"{what}.timestamping.uncapped")
        if uncapped is not None:
            nested["uncapped"] = uncapped
        if nested:
            out["timestamping"] = nested
    if obj.get("delete_on_empty") is not None:
        delete_on_empty = _object(obj["delete_on_empty"], f"{what}.delete_on_empty")
        min_age = _u64(delete_on_empty.get("min_age_secs", 0), f"{what}.delete_on_empty.min_age_secs")
        if min_age:
            out["delete_on_empty"] = {"min_age_secs": min_age}
    return out


def _stream_reconfiguration(value: Any, what: str) -> dict[str, Any]:
    """Parse a ``StreamReconfiguration``: present fields change, ``None`` resets a field."""
    obj = _object(value, what)
    out: dict[str, Any] = {}
    for key in ("storage_class", "retention_policy"):
        if key in obj:
            out[key] = _stream_config({key: obj[key]}, what).get(key)
    if "timestamping" in obj:
        if obj["timestamping"] is None:
            out["timestamping"] = None
        else:
            timestamping = _object(obj["timestamping"], f"{what}.timestamping")
            nested: dict[str, Any] = {}
            if "mode" in timestamping:
                mode = timestamping["mode"]
                nested["mode"] = None if mode is None else _enum(mode, f"{what}.timestamping.mode", _TIMESTAMPING_MODES)
            if "uncapped" in timestamping:
                nested["uncapped"] = _opt_bool(timestamping["uncapped"], f"{what}.timestamping.uncapped")
            out["timestamping"] = nested
    if "delete_on_empty" in obj:
        if obj["delete_on_empty"] is None:
            out["delete_on_empty"] = None
        else:
            delete_on_empty = _object(obj["delete_on_empty"], f"{what}.delete_on_empty")
            if "min_age_secs" in delete_on_empty:
                min_age = _opt_u64(delete_on_empty["min_age_secs"], f"{what}.delete_on_empty.min_age_secs")
                out["delete_on_empty"] = {"min_age_secs": min_age or None}
            else:
                out["delete_on_empty"] = {}
    return out


@dataclass(frozen=True)
class _BasinConfig:
    create_stream_on_append: bool = False
    create_stream_on_read: bool = False
    default_stream_config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "default_stream_config": dict(self.default_stream_config) or None,
            "stream_cipher": None,
            "create_stream_on_append": self.create_stream_on_append,
            "create_stream_on_read": self.create_stream_on_read,
        }


def _basin_config(value: Any, what: str) -> _BasinConfig:
    if value is None:
        return _BasinConfig()
    obj = _object(value, what)
    _stream_cipher(obj.get("stream_cipher"), what)
    return _BasinConfig(
        create_stream_on_append=bool(_opt_bool(obj.get("create_stream_on_append"), f"{what}.create_stream_on_append")),
        create_stream_on_read=bool(_opt_bool(obj.get("create_stream_on_read"), f"{what}.create_stream_on_read")),
        default_stream_config=_stream_config(obj.get("default_stream_config"), f"{what}.default_stream_config"),
    )


def _stream_cipher(value: Any, what: str) -> None:
    if value is not None:
        _enum(value, f"{what}.stream_cipher", _CIPHERS)
        raise _error("not_implemented", "stream encryption is not supported by this server")


def _basin_reconfigured(current: _BasinConfig, value: Any) -> _BasinConfig:
    obj = _object(value, "BasinReconfiguration")
    _stream_cipher(obj.get("stream_cipher"), "BasinReconfiguration")
    config = current
    if "create_stream_on_append" in obj:
        on_append = bool(_opt_bool(obj["create_stream_on_append"], "create_stream_on_append"))
        config = dataclasses.replace(config, create_stream_on_append=on_append)
    if "create_stream_on_read" in obj:
        on_read = bool(_opt_bool(obj["create_stream_on_read"], "create_stream_on_read"))
        config = dataclasses.replace(config, create_stream_on_read=on_read)
    if "default_stream_config" in obj:
        default: dict[str, Any] = {}
        if obj["default_stream_config"] is not None:
            changes = _stream_reconfiguration(obj["default_stream_config"], "default_stream_config")
            default = merge_stream_config(config.default_stream_config, changes)
        config = dataclasses.replace(config, default_stream_config=default)
    return config


def _strict_b64decode(text: str) -> bytes:
    """Decode standard, padded base64, refusing anything non-canonical (as base64ct does)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        raise _error("invalid", "invalid Base64 encoding") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise _error("invalid", "invalid Base64 encoding")
    return data


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad_json("Failed to deserialize the JSON body: string is not valid Unicode") from None


def _parse_append(data: Any, fmt: str) -> tuple[list[Record], int | None, str | None]:
    """Parse an ``AppendInput``: shape errors are 400 ``bad_json``, bad base64 is 422 ``invalid``."""
    obj = _object(data, "AppendInput")
    if "records" not in obj:
        raise _bad_json("Failed to deserialize the JSON body: missing field `records`")
    if not isinstance(obj["records"], list):
        raise _bad_json("Failed to deserialize the JSON body: `records` must be an array")
    match_seq_num = _opt_u64(obj.get("match_seq_num"), "match_seq_num")
    fencing_token = obj.get("fencing_token")
    if fencing_token is not None:
        fencing_token = _string(fencing_token, "fencing_token")
        if len(_utf8(fencing_token)) > MAX_FENCING_TOKEN_BYTES:
            raise _bad_json(
                f"Failed to deserialize the JSON body: fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes"
            )
    parsed: list[tuple[int | None, list[tuple[str, str]], str]] = []
    for index, item in enumerate(obj["records"]):
        record = _object(item, f"records[{index}]")
        timestamp = _opt_u64(record.get("timestamp"), f"records[{index}].timestamp")
        raw_headers = record.get("headers", [])
        if not isinstance(raw_headers, list):
            raise _bad_json(f"Failed to deserialize the JSON body: `records[{index}].headers` must be an array")
        headers = []
        for header in raw_headers:
            if not (isinstance(header, list) and len(header) == 2 and all(isinstance(p, str) for p in header)):
                raise _bad_json(
                    f"Failed to deserialize the JSON body: each header of `records[{index}]` must be [name, value]"
                )
            headers.append((header[0], header[1]))
        parsed.append((timestamp, headers, _string(record.get("body", ""), f"records[{index}].body")))
    decode = _strict_b64decode if fmt == "base64" else _utf8
    records = [
        Record(decode(body), tuple((decode(name), decode(value)) for name, value in headers), timestamp)
        for timestamp, headers, body in parsed
    ]
    return records, match_seq_num, fencing_token


def _query(raw: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise _error("bad_query", "Failed to deserialize query string: invalid UTF-8") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise _error("bad_query", f"Failed to deserialize query string: duplicate field `{key}`")
        out[key] = value
    return out


def _query_int(query: Mapping[str, str], name: str, maximum: int = _U64_MAX) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or int(text) > maximum:
        raise _error("bad_query", f"Failed to deserialize query string: {name}: invalid value {text!r}")
    return int(text)


def _query_bool(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text not in ("true", "false"):
        raise _error("bad_query", f"Failed to deserialize query string: {name}: expected `true` or `false`")
    return text == "true"


def _format(header: str | None) -> str:
    value = (header or "raw").strip()
    if value in ("raw", "json"):
        return "raw"
    if value in ("base64", "json-binsafe"):
        return "base64"
    raise _error("bad_header", f"invalid header `s2-format`: expected `raw` or `base64`, got {value!r}")


def _last_event_id(header: str | None) -> tuple[int, int, int] | None:
    if header is None:
        return None
    parts = header.split(",", 2)
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise _error("bad_header", f"invalid header `last-event-id`: expected `seq_num,count,bytes`, got {header!r}")
    seq_num, count, size = (int(p) for p in parts)
    return seq_num, count, size


def _stream_name(raw: str, code: str) -> str:
    try:
        return validate_stream_name(raw)
    except ValueError as exc:
        raise _error(code, f"invalid stream name: {exc}") from None


def _basin_name(raw: str, code: str) -> str:
    if not _BASIN_NAME.match(raw):
        raise _error(code, f"invalid basin name {raw!r}: {_BASIN_NAME_RULE}")
    return raw


# -- state -------------------------------------------------------------------


class _Basin:
    """A basin: its log, config and idempotency keys. Guarded by the server's lock, except the log."""

    def __init__(self, name: str, config: _BasinConfig, heartbeat_interval: float, creation_key: str | None) -> None:
        self.name = name
        self.created_at = datetime.now(timezone.utc)
        self.creation_key = creation_key
        self.stream_creation_keys: dict[str, str] = {}
        self.log = MemoryLog(
            create_stream_on_append=config.create_stream_on_append,
            create_stream_on_read=config.create_stream_on_read,
            default_stream_config=dict(config.default_stream_config),
            heartbeat_interval=heartbeat_interval,
        )

    @property
    def config(self) -> _BasinConfig:
        return _BasinConfig(
            self.log.create_stream_on_append, self.log.create_stream_on_read, dict(self.log.default_stream_config)
        )

    @config.setter
    def config(self, config: _BasinConfig) -> None:
        self.log.create_stream_on_append = config.create_stream_on_append
        self.log.create_stream_on_read = config.create_stream_on_read
        self.log.default_stream_config = dict(config.default_stream_config)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "location": None,
            "created_at": _rfc3339(self.created_at),
            "deleted_at": None,
            "state": "active",
        }


def _creation_key(token: str | None, config: Any) -> str | None:
    return None if token is None else json.dumps([token, config], sort_keys=True)


@dataclass
class _Request:
    """What a handler needs from one HTTP request."""

    op: str
    query: str
    body: bytes
    basin: str = ""  # from the `s2-basin` header, for /v1/streams*
    params: dict[str, str] = field(default_factory=dict)  # path parameters, decoded
    drop_after_commit: bool = False


# -- HTTP --------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """Tracks its handler threads and client sockets so :meth:`S2Server.stop` can end them."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: S2Server) -> None:
        self.address_family = socket.getaddrinfo(address[0], address[1], type=socket.SOCK_STREAM)[0][0]
        self.app = app
        self.stopping = threading.Event()
        self.track_lock = threading.Lock()
        self.threads: set[threading.Thread] = set()
        self.sockets: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve, args=(request, client_address), name=f"s2-local {client_address}", daemon=True
        )
        with self.track_lock:
            self.threads.add(thread)
            self.sockets.add(request)
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self.track_lock:
                self.threads.discard(threading.current_thread())
                self.sockets.discard(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.stopping.is_set():
            logger.debug("connection from %s ended: %r", client_address, exc)
        else:
            logger.exception("unexpected error serving %s", client_address)

    def disconnect_all(self) -> None:
        """Shut down every client connection, so idle keep-alive readers see end-of-file."""
        with self.track_lock:
            sockets = list(self.sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One client connection; handles its requests in turn (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "resumable-stream-s2-local"
    disable_nagle_algorithm = True
    server: _HTTPServer

    # Every method goes through _dispatch; unknown ones get 501 from the base class.
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (bad request line, unsupported method...) as a JSON error body."""
        self.close_connection = True
        body = {"code": _DEFAULT_CODE.get(code, "other"), "message": message or explain or "bad request"}
        self._send(code, _dumps(body), "application/json", {"Connection": "close"})

    # -- plumbing ----------------------------------------------------------

    @property
    def app(self) -> S2Server:
        return self.server.app

    def _send(
        self, status: int, body: bytes, content_type: str | None, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.server.stopping.is_set():
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, _dumps(value), "application/json", headers)

    def _drop(self) -> None:
        """Close the connection without a response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").strip().lower() == "chunked":
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        if not length_header.strip().isdigit():
            self.close_connection = True
            raise _error("bad_header", f"invalid Content-Length {length_header!r}")
        length = int(length_header)
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise _error("bad_json", "the request body ended early")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                size = -1
            if size < 0:
                self.close_connection = True
                raise _error("bad_json", "malformed chunked request body")
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailer fields
                return b"".join(parts)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _route(self, raw_path: str) -> tuple[str, str, dict[str, str]]:
        """Map a path to (route, operation, raw path parameters); 404/405 when nothing matches."""
        segments = raw_path.split("/")[1:]
        route: str | None = None
        params: dict[str, str] = {}
        if segments[:1] == ["v1"]:
            rest = segments[1:]
            head = rest[0] if rest else ""
            count = len(rest)
            if head == "basins" and count in (1, 2):
                route = "basins" if count == 1 else "basin"
                params = {"basin": rest[1]} if count == 2 else {}
            elif head == "streams" and count == 1:
                route = "streams"
            elif head == "streams" and (count == 2 or (count in (3, 4) and rest[2] == "records")):
                route = {2: "stream", 3: "records", 4: "tail" if rest[-1] == "tail" else None}[count]
                params = {"stream": rest[1]}
            elif head == "access-tokens" and count in (1, 2):
                route = "access_tokens" if count == 1 else "access_token"
            elif head == "locations" and (count == 1 or (count == 2 and rest[1] == "default")):
                route = "locations" if count == 1 else "default_location"
            elif head == "metrics" and count in (1, 2, 3):
                route = ("account_metrics", "basin_metrics", "stream_metrics")[count - 1]
        if route is None:
            raise _HttpError(404, {"code": "not_found", "message": f"no route for {self.command} {raw_path}"})
        methods = _ROUTES[route]
        if self.command not in methods:
            raise _HttpError(
                405,
                {"code": "method_not_allowed", "message": f"{self.command} is not allowed on {raw_path}"},
                {"Allow": ", ".join(sorted(methods))},
            )
        return route, methods[self.command], params

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except _HttpError as exc:
            self._json(exc.status, exc.body, exc.headers)
            return
        raw_path, _, query = self.path.partition("?")
        try:
            if raw_path in ("/health", "/ping") and self.command == "GET":
                self._send(200, b"OK", "text/plain; charset=utf-8")
                return
            if raw_path == "/_faults":
                self._faults_admin(body)
                return
            route, op, raw_params = self._route(raw_path)
            request = _Request(op, query, body)
            effect = self.app.faults._take(op, self._fault_stream(op, raw_params, body))
            if effect.latency and self.server.stopping.wait(effect.latency):
                self._drop()
                return
            fault = effect.fault
            if fault is not None and fault.drop:
                self._drop()
                return
            if fault is not None and fault.status is not None:
                self._fault_response(fault)
                return
            request.drop_after_commit = fault is not None and fault.drop_after_commit
            if op in _NOT_IMPLEMENTED:
                raise _error("not_implemented", "Not implemented")
            if route in ("streams", "stream", "records", "tail"):
                request.basin = self._basin_header()
            request.params = self._path_params(raw_params)
            getattr(self, f"_op_{op}")(request)
        except _HttpError as exc:
            self._json(exc.status, exc.body, exc.headers)
        except Exception as exc:
            logger.exception("%s %s failed", self.command, raw_path)
            self._json(500, {"code": "other", "message": f"internal error: {type(exc).__name__}: {exc}"})

    @staticmethod
    def _path_params(raw: Mapping[str, str]) -> dict[str, str]:
        params: dict[str, str] = {}
        for name, value in raw.items():
            try:
                decoded = unquote(value, errors="strict")
            except UnicodeDecodeError:
                raise _error("bad_path", f"invalid {name} in path: not valid UTF-8 after percent-decoding") from None
            if name == "stream":
                params[name] = _stream_name(decoded, "bad_path")
            else:
                params[name] = _basin_name(decoded, "bad_path")
        return params

    @staticmethod
    def _fault_stream(op: str, raw: Mapping[str, str], body: bytes) -> str | None:
        """The stream a request is about, as far as faults are concerned (best effort, never raises)."""
        if "stream" in raw:
            try:
                return unquote(raw["stream"], errors="strict")
            except UnicodeDecodeError:
                return None
        if op == "create_stream":
            try:
                name = json.loads(body).get("stream")
            except (ValueError, AttributeError):
                return None
            return name if isinstance(name, str) else None
        return None

    def _fault_response(self, fault: Fault) -> None:
        assert fault.status is not None and fault.code is not None
        headers = {} if fault.retry_after_ms is None else {"retry-after-ms": str(fault.retry_after_ms)}
        message = fault.message or f"injected fault: {fault.code}"
        self._json(fault.status, {"code": fault.code, "message": message}, headers)

    def _faults_admin(self, body: bytes) -> None:
        faults = self.app.faults
        if self.command == "GET":
            self._json(200, {"faults": [fault.to_json() for fault in faults.active()]})
        elif self.command == "DELETE":
            self._json(200, {"cleared": faults.clear()})
        elif self.command == "POST":
            self._require_json()
            settings = _object(_parse_json(body), "Fault")
            unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Fault)})
            if unknown:
                raise _bad_json(f"unknown fault fields: {', '.join(unknown)}")
            try:
                fault = _make_fault(**{f.name: settings.get(f.name, f.default) for f in dataclasses.fields(Fault)})
            except ValueError as exc:
                raise _error("invalid", str(exc)) from None
            faults._append(fault)
            self._json(201, fault.to_json())
        else:
            message = f"{self.command} is not allowed on /_faults"
            raise _HttpError(405, {"code": "method_not_allowed", "message": message}, {"Allow": "DELETE, GET, POST"})

    # -- request pieces ------------------------------------------------------

    def _require_json(self) -> None:
        content_type = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type in ("application/protobuf", "application/x-protobuf", "s2s/proto"):
            raise _error("not_implemented", f"`{content_type}` bodies are not supported by this server; send JSON")
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise _bad_json("Expected request with `Content-Type: application/json`")

    def _json_body(self, body: bytes) -> Any:
        self._require_json()
        return _parse_json(body)

    def _optional_json_body(self, body: bytes) -> Any:
        return self._json_body(body) if body.strip() else None

    def _request_token(self) -> str | None:
        token = self.headers.get("s2-request-token")
        if token is not None and len(token.encode("latin-1", "replace")) > _MAX_REQUEST_TOKEN_BYTES:
            raise _error("bad_header", f"invalid header `s2-request-token`: over {_MAX_REQUEST_TOKEN_BYTES} bytes")
        return token

    def _basin_header(self) -> str:
        name = self.headers.get("s2-basin")
        if name is None:
            raise _error("bad_header", "Missing header `s2-basin`")
        return _basin_name(name.strip(), "bad_header")

    def _list_query(self, query: str) -> tuple[str, str, int]:
        params = _query(query)
        prefix = params.get("prefix", "")
        start_after = params.get("start_after", "")
        limit = _query_int(params, "limit") or _LIST_LIMIT
        if start_after and prefix and start_after < prefix:
            raise _error("invalid", "`start_after` must be greater than or equal to the `prefix`")
        return prefix, start_after, min(limit, _LIST_LIMIT)

    # -- basins --------------------------------------------------------------

    def _op_list_basins(self, request: _Request) -> None:
        prefix, start_after, limit = self._list_query(request.query)
        basins, has_more = self.app._list_basins(prefix, start_after, limit)
        self._json(200, {"basins": [basin.info() for basin in basins], "has_more": has_more})

    def _op_create_basin(self, request: _Request) -> None:
        token = self._request_token()
        obj = _object(self._json_body(request.body), "CreateBasinRequest")
        if "basin" not in obj:
            raise _bad_json("Failed to deserialize the JSON body: missing field `basin`")
        name = _basin_name(_string(obj["basin"], "basin"), "bad_json")
        config = _basin_config(obj.get("config"), "config")
        basin, result = self.app._create_basin(name, config, token)
        self._json(201, basin.info(), {"s2-provision-result": result})

    def _op_get_basin_config(self, request: _Request) -> None:
        self._json(200, self.app._basin(request.params["basin"]).config.to_json())

    def _op_ensure_basin(self, request: _Request) -> None:
        data = self._optional_json_body(request.body)
        obj = {} if data is None else _object(data, "EnsureBasinRequest")
        config = _basin_config(obj.get("config"), "config")
        basin, result = self.app._ensure_basin(request.params["basin"], config)
        self._json(201 if result == "created" else 200, basin.info(), {"s2-provision-result": result})

    def _op_reconfigure_basin(self, request: _Request) -> None:
        data = self._json_body(request.body)
        config = self.app._reconfigure_basin(request.params["basin"], data)
        self._json(200, config.to_json())

    def _op_delete_basin(self, request: _Request) -> None:
        self.app._delete_basin(request.params["basin"])
        self._send(202, b"", None)

    # -- streams -------------------------------------------------------------

    def _op_list_streams(self, request: _Request) -> None:
        prefix, start_after, limit = self._list_query(request.query)
        basin = self.app._basin(request.basin)
        streams, has_more = basin.log.list_streams(prefix, start_after, limit)
        self._json(200, {"streams": [_stream_info(info) for info in streams], "has_more": has_more})

    def _op_create_stream(self, request: _Request) -> None:
        token = self._request_token()
        obj = _object(self._json_body(request.body), "CreateStreamRequest")
        if "stream" not in obj:
            raise _bad_json("Failed to deserialize the JSON body: missing field `stream`")
        name = _stream_name(_string(obj["stream"], "stream"), "bad_json")
        config = _stream_config(obj.get("config"), "config")
        basin = self.app._basin(request.basin)
        info, result = self.app._create_stream(basin, name, config, token)
        self._json(201, _stream_info(info), {"s2-provision-result": result})

    def _op_get_stream_config(self, request: _Request) -> None:
        basin = self.app._basin(request.basin)
        stream = request.params["stream"]
        self._json(200, _resolved_stream_config(self._call(basin, stream, basin.log.stream_info, stream).config))

    def _op_ensure_stream(self, request: _Request) -> None:
        config = _stream_config(self._optional_json_body(request.body), "StreamConfig")
        basin = self.app._basin(request.basin)
        info, result = self.app._ensure_stream(basin, request.params["stream"], config)
        self._json(201 if result == "created" else 200, _stream_info(info), {"s2-provision-result": result})

    def _op_reconfigure_stream(self, request: _Request) -> None:
        stream = request.params["stream"]
        changes = _stream_reconfiguration(self._json_body(request.body), "StreamReconfiguration")
        basin = self.app._basin(request.basin)
        info = self._call(basin, stream, basin.log.reconfigure_stream, stream, changes)
        self._json(200, _resolved_stream_config(info.config))

    def _op_delete_stream(self, request: _Request) -> None:
        basin = self.app._basin(request.basin)
        stream = request.params["stream"]
        self._call(basin, stream, basin.log.delete_stream, stream)
        self.app._forget_stream(basin, stream)
        self._send(202, b"", None)

    # -- records -------------------------------------------------------------

    def _call(self, basin: _Basin, stream: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except S2Error as exc:
            raise _from_s2_error(exc, basin.name, stream) from None

    def _op_check_tail(self, request: _Request) -> None:
        basin = self.app._basin(request.basin)
        stream = request.params["stream"]
        self._json(200, {"tail": _position(self._call(basin, stream, basin.log.check_tail, stream))})

    def _op_append(self, request: _Request) -> None:
        stream = request.params["stream"]
        fmt = _format(self.headers.get("s2-format"))
        records, match_seq_num, fencing_token = _parse_append(self._json_body(request.body), fmt)
        basin = self.app._basin(request.basin)
        ack = self._call(
            basin,
            stream,
            basin.log.append_batch,
            stream,
            records,
            match_seq_num=match_seq_num,
            fencing_token=fencing_token,
        )
        if request.drop_after_commit:
            self._drop()
            return
        self._json(200, {"start": _position(ack.start), "end": _position(ack.end), "tail": _position(ack.tail)})

    def _op_read(self, request: _Request) -> None:
        stream = request.params["stream"]
        query = _query(request.query)
        start = {name: _query_int(query, name) for name in ("seq_num", "timestamp", "tail_offset")}
        count = _query_int(query, "count")
        size = _query_int(query, "bytes")
        until = _query_int(query, "until")
        wait = _query_int(query, "wait", _U32_MAX)
        clamp = _query_bool(query, "clamp")
        fmt = _format(self.headers.get("s2-format"))
        accept = [part.split(";", 1)[0].strip().lower() for part in (self.headers.get("Accept") or "").split(",")]
        streaming = "text/event-stream" in accept
        if not streaming and any(a in ("application/protobuf", "application/x-protobuf") for a in accept):
            raise _error("not_implemented", "protobuf responses are not supported by this server; accept JSON")
        resume = _last_event_id(self.headers.get("Last-Event-ID")) if streaming else None
        if sum(value is not None for value in start.values()) > 1:
            raise _error("invalid", "only one of seq_num, timestamp, or tail_offset can be provided")
        if resume is not None:
            seq_num, sent_count, sent_bytes = resume
            start = {"seq_num": seq_num + 1, "timestamp": None, "tail_offset": None}
            count = None if count is None else max(count - sent_count, 0)
            size = None if size is None else max(size - sent_bytes, 0)
        if start["timestamp"] is not None and until is not None and start["timestamp"] >= until:
            raise _error("invalid", "start `timestamp` exceeds or equal to `until`")
        options: dict[str, Any] = {**start, "count": count, "bytes": size, "until": until, "clamp": clamp}
        basin = self.app._basin(request.basin)
        if not streaming:
            batch = self._call(basin, stream, basin.log.read, stream, wait=wait, **options)
            self._json(200, _read_batch(batch, fmt))
            return
        session = basin.log.read_session(stream, wait=wait, **options)
        try:
            self._stream_session(basin, stream, session, fmt)
        finally:
            session.close()  # end it now rather than when it is garbage-collected

    def _stream_session(
        self, basin: _Basin, stream: str, session: Iterator[ReadBatch | StreamPosition], fmt: str
    ) -> None:
        """Serve a read session as SSE over chunked transfer encoding."""
        try:
            first = next(session, None)
        except S2Error as exc:
            raise _from_s2_error(exc, basin.name, stream) from None
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache, no-transform")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent_count = sent_bytes = 0
        item = first
        try:
            while item is not None:
                if isinstance(item, ReadBatch):
                    sent_count += len(item.records)
                    sent_bytes += sum(record.metered_size for record in item.records)
                    event_id = f"{item.records[-1].seq_num},{sent_count},{sent_bytes}"
                    self._event("batch", _dumps(_read_batch(item, fmt)), event_id)
                else:
                    self._event("ping", _dumps({"timestamp": time.time_ns() // 1_000_000, "tail": _position(item)}))
                try:
                    item = next(session, None)
                except S2Error as exc:
                    self._event("error", _dumps(_from_s2_error(exc, basin.name, stream).body))
                    break
            else:
                self._event(None, b"[DONE]")
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client went away
        if self.server.stopping.is_set():
            self.close_connection = True

    def _event(self, event: str | None, data: bytes, event_id: str | None = None) -> None:
        lines = [] if event is None else [b"event: " + event.encode()]
        if event_id is not None:
            lines.append(b"id: " + event_id.encode())
        lines.extend(b"data: " + line for line in data.split(b"\n"))
        payload = b"\n".join(lines) + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))


# -- the server ----------------------------------------------------------------


class S2Server:
    """A local S2-compatible server on a background thread.

    Thread-safe: requests are served on one thread per connection, and every
    method may be called from any thread. :attr:`faults` may be changed while
    requests are in flight. Use it as a context manager, or call
    :meth:`start` and :meth:`stop`. Stopping closes the basins' logs, so a
    stopped server cannot be restarted.

    :param host: address to listen on.
    :param port: port to listen on; 0 picks a free one (see :attr:`url`).
    :param basins: basins to create up front, with ``create_stream_on_append``
        and ``create_stream_on_read`` enabled. The first is the default of :meth:`env`.
    :param heartbeat_interval: seconds between heartbeats (``ping`` events) of an idle read session.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        basins: Sequence[str] = ("test-basin",),
        heartbeat_interval: float = 10.0,
    ) -> None:
        if isinstance(basins, str):
            raise TypeError("basins must be a sequence of names, not a string")
        self.host = host
        self.heartbeat_interval = heartbeat_interval
        #: Injected failures; see :class:`Faults`.
        self.faults = Faults()
        self._port = port
        self._lock = threading.Lock()
        self._basins: dict[str, _Basin] = {}
        self._default_basin = basins[0] if basins else None
        for name in basins:
            if not _BASIN_NAME.match(name):
                raise ValueError(f"invalid basin name {name!r}: {_BASIN_NAME_RULE}")
            config = _BasinConfig(create_stream_on_append=True, create_stream_on_read=True)
            self._basins[name] = _Basin(name, config, heartbeat_interval, None)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped" if self._stopped else "not started"
        return f"<S2Server {state} {self.host}:{self._port}>"

    @property
    def port(self) -> int:
        """The port the server listens on (the real one once started)."""
        return self._port

    @property
    def url(self) -> str:
        """The server's base URL, such as ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def env(self, basin: str | None = None) -> dict[str, str]:
        """Environment variables that point an S2 client (this library's, or an official SDK) at this server."""
        name = basin or self._default_basin
        if name is None:
            raise ValueError("the server has no basins; name one")
        return {
            "S2_ACCESS_TOKEN": "local",
            "S2_BASIN": name,
            "S2_ACCOUNT_ENDPOINT": self.url,
            "S2_BASIN_ENDPOINT": self.url,
        }

    def basin_log(self, name: str) -> MemoryLog:
        """The log behind basin ``name``; :class:`KeyError` if there is no such basin."""
        with self._lock:
            return self._basins[name].log

    def start(self) -> S2Server:
        """Bind and serve on a daemon thread; returns once the server accepts connections."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("the server is already running or was stopped")
        httpd = _HTTPServer((self.host, self._port), self)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name=f"s2-local :{self._port}", daemon=True
        )
        self._thread.start()
        logger.debug("S2-compatible server listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: close the socket, end long-polls, read sessions and idle connections, close the logs.

        Waits up to ``timeout`` seconds for the connection threads to finish.
        """
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        self._stopped = True
        deadline = time.monotonic() + timeout
        httpd.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            logs = [basin.log for basin in self._basins.values()]
        for log in logs:
            log.close()
        httpd.disconnect_all()
        with httpd.track_lock:
            threads = list(httpd.threads)
        for worker in [*threads, thread]:
            worker.join(max(deadline - time.monotonic(), 0))
        logger.debug("S2-compatible server on port %d stopped", self._port)

    def __enter__(self) -> S2Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- basins (called by the handler) --------------------------------------

    def _basin(self, name: str) -> _Basin:
        with self._lock:
            basin = self._basins.get(name)
        if basin is None:
            raise _error("basin_not_found", f"basin `{name}` not found")
        return basin

    def _list_basins(self, prefix: str, start_after: str, limit: int) -> tuple[list[_Basin], bool]:
        with self._lock:
            names = sorted(n for n in self._basins if n.startswith(prefix) and n > start_after)
            return [self._basins[n] for n in names[:limit]], len(names) > limit

    def _create_basin(self, name: str, config: _BasinConfig, token: str | None) -> tuple[_Basin, str]:
        key = _creation_key(token, config.to_json())
        with self._lock:
            existing = self._basins.get(name)
            if existing is not None:
                if key is not None and existing.creation_key == key:
                    return existing, "noop"
                raise _error("resource_already_exists", f"basin `{name}` already exists")
            basin = self._basins[name] = _Basin(name, config, self.heartbeat_interval, key)
            return basin, "created"

    def _ensure_basin(self, name: str, config: _BasinConfig) -> tuple[_Basin, str]:
        with self._lock:
            basin = self._basins.get(name)
            if basin is None:
                basin = self._basins[name] = _Basin(name, config, self.heartbeat_interval, None)
                return basin, "created"
            if basin.config == config:
                return basin, "noop"
            basin.config = config
            return basin, "updated"

    def _reconfigure_basin(self, name: str, changes: Any) -> _BasinConfig:
        with self._lock:
            basin = self._basins.get(name)
            if basin is None:
                raise _error("basin_not_found", f"basin `{name}` not found")
            basin.config = _basin_reconfigured(basin.config, changes)
            return basin.config

    def _delete_basin(self, name: str) -> None:
        with self._lock:
            basin = self._basins.pop(name, None)
        if basin is None:
            raise _error("basin_not_found", f"basin `{name}` not found")
        basin.log.close()

    # -- streams (called by the handler) -------------------------------------

    def _create_stream(
        self, basin: _Basin, name: str, config: dict[str, Any], token: str | None
    ) -> tuple[StreamInfo, str]:
        key = _creation_key(token, config)
        with self._lock:
            try:
                info = basin.log.create_stream(name, config)
            except Conflict:
                if key is not None and basin.stream_creation_keys.get(name) == key:
                    return basin.log.stream_info(name), "noop"
                message = f"stream `{name}` in basin `{basin.name}` already exists"
                raise _error("resource_already_exists", message) from None
            except S2Error as exc:
                raise _from_s2_error(exc, basin.name, name) from None
            if key is not None:
                basin.stream_creation_keys[name] = key
            return info, "created"

    def _ensure_stream(self, basin: _Basin, name: str, config: dict[str, Any]) -> tuple[StreamInfo, str]:
        log = basin.log
        try:
            with self._lock:
                try:
                    before = log.stream_info(name).config
                except NotFound:
                    before = None
                # PUT semantics: the stream ends up with exactly the requested config on the basin's defaults.
                log.ensure_stream(name, config)
                info = log.stream_info(name)
        except S2Error as exc:
            raise _from_s2_error(exc, basin.name, name) from None
        return info, "created" if before is None else ("noop" if before == info.config else "updated")

    def _forget_stream(self, basin: _Basin, name: str) -> None:
        with self._lock:
            basin.stream_creation_keys.pop(name, None)


# -- command line ------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; print ``READY <url>`` once it listens."""
    parser = argparse.ArgumentParser(
        prog="python -m resumable_stream.testing.server",
        description="A local S2-compatible server (s2-lite style: one endpoint, basin in the `s2-basin` header).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default: 0)")
    parser.add_argument(
        "--basin",
        action="append",
        metavar="NAME",
        help="create this basin, with streams created on append and read (repeatable; default: resumable-stream-dev)",
    )
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, metavar="SECONDS", help="ping interval of idle read sessions"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(message)s")
        logger.setLevel(logging.DEBUG)
    try:
        basins = tuple(args.basin or ["resumable-stream-dev"])
        server = S2Server(args.host, args.port, basins=basins, heartbeat_interval=args.heartbeat)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    print(f"READY {server.url}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
