"""S2's error responses: the codes, their statuses, and the bodies the server sends."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..exceptions import FencingTokenMismatch, RangeNotSatisfiable, S2Error, SeqNumMismatch
from ..log import StreamPosition

__all__ = ["CODE_STATUS", "DEFAULT_CODE", "ApiError", "api_error", "from_s2_error", "position_json"]

#: Status of each S2 error code.
CODE_STATUS = {
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
#: The code an error gets when only its status is known.
DEFAULT_CODE = {
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


class ApiError(Exception):
    """An error response: a status and a JSON body (``{"code", "message"}``, or 412/416's structured bodies)."""

    def __init__(self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = dict(body)
        self.headers = dict(headers or {})


def api_error(code: str, message: str) -> ApiError:
    """The standard error ``code`` (a key of :data:`CODE_STATUS`) with ``message``."""
    return ApiError(CODE_STATUS[code], {"code": code, "message": message})


def position_json(position: StreamPosition) -> dict[str, int]:
    return {"seq_num": position.seq_num, "timestamp": position.timestamp}


def from_s2_error(exc: S2Error, basin: str, stream: str | None) -> ApiError:
    """The response S2 gives for an error a stream raised."""
    if isinstance(exc, FencingTokenMismatch):
        return ApiError(412, {"fencing_token_mismatch": exc.current_token})
    if isinstance(exc, SeqNumMismatch):
        return ApiError(412, {"seq_num_mismatch": exc.next_seq_num})
    if isinstance(exc, RangeNotSatisfiable):
        return ApiError(416, {"tail": position_json(exc.tail)})
    code = exc.code or DEFAULT_CODE.get(exc.status or 500, "other")
    status = CODE_STATUS.get(code, exc.status or 500)
    message = exc.message
    if code == "stream_not_found" and stream is not None:
        message = f"stream `{stream}` in basin `{basin}` not found"
    return ApiError(status, {"code": code, "message": message})
