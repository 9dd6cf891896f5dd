"""S2's operations, one function each (named by its OpenAPI operationId), free of any transport.

Each takes the :class:`~.store.Store` and an :class:`~.api.ApiRequest` and
returns an :class:`~.api.ApiResponse`; errors are raised as
:class:`~.errors.ApiError`. Bodies are JSON, or protobuf for appends and
reads (``application/protobuf``, ``application/x-protobuf``); reads may also
be sessions (SSE with ``Accept: text/event-stream``, S2S with
``Content-Type: s2s/proto``), and so may appends (S2S): see :mod:`.sessions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..batch_rules import check_batch
from ..exceptions import S2Error
from . import sessions
from .api import ApiRequest, ApiResponse, json_response, require_json
from .config import (
    bad_json,
    basin_config,
    json_object,
    json_string,
    parse_json,
    resolved_stream_config,
    stream_config,
    stream_reconfiguration,
)
from .errors import api_error, from_s2_error, position_json
from .jsonshapes import (
    U32_MAX,
    check_basin_name,
    check_stream_name,
    parse_append,
    parse_format,
    parse_query,
    query_bool,
    query_int,
    read_batch_json,
    rfc3339,
)
from .store import Basin, Store, StreamEntry

__all__ = ["OPERATIONS"]

_T = TypeVar("_T")
_MAX_REQUEST_TOKEN_BYTES = 36
_LIST_LIMIT = 1000
_PROTOBUF = ("application/protobuf", "application/x-protobuf")
_ACK_JSON = (
    b'{"start":{"seq_num":%d,"timestamp":%d},"end":{"seq_num":%d,"timestamp":%d},"tail":{"seq_num":%d,"timestamp":%d}}'
)


def _run(basin: Basin, stream: str, call: Callable[[], _T]) -> _T:
    """``call()``, with the errors of a stream turned into S2's responses."""
    try:
        return call()
    except S2Error as exc:
        raise from_s2_error(exc, basin.name, stream) from None


def _json_body(request: ApiRequest) -> Any:
    require_json(request)
    return parse_json(request.body)


def _optional_json_body(request: ApiRequest) -> Any:
    return _json_body(request) if request.body.strip() else None


def _request_token(request: ApiRequest) -> str | None:
    token = request.headers.get("s2-request-token")
    if token is not None and len(token.encode("utf-8", "replace")) > _MAX_REQUEST_TOKEN_BYTES:
        raise api_error("bad_header", f"invalid header `s2-request-token`: over {_MAX_REQUEST_TOKEN_BYTES} bytes")
    return token


def _list_query(request: ApiRequest) -> tuple[str, str, int]:
    params = parse_query(request.query)
    prefix = params.get("prefix", "")
    start_after = params.get("start_after", "")
    limit = query_int(params, "limit") or _LIST_LIMIT
    if start_after and prefix and start_after < prefix:
        raise api_error("invalid", "`start_after` must be greater than or equal to the `prefix`")
    return prefix, start_after, min(limit, _LIST_LIMIT)


def _basin_info(basin: Basin) -> dict[str, Any]:
    return {
        "name": basin.name,
        "location": None,
        "created_at": rfc3339(basin.created_at),
        "deleted_at": None,
        "state": "active",
    }


def _stream_info(entry: StreamEntry) -> dict[str, Any]:
    return {"name": entry.name, "created_at": rfc3339(entry.created_at), "deleted_at": None, "cipher": None}


# -- basins ------------------------------------------------------------------


def list_basins(store: Store, request: ApiRequest) -> ApiResponse:
    basins, has_more = store.list_basins(*_list_query(request))
    return json_response(200, {"basins": [_basin_info(basin) for basin in basins], "has_more": has_more})


def _create_request(request: ApiRequest, kind: str, check: Callable[[str, str], str]) -> tuple[str, dict[str, Any]]:
    """The name (field ``kind``, checked by ``check``) and body of a ``Create{Basin,Stream}Request``."""
    obj = json_object(_json_body(request), f"Create{kind.title()}Request")
    if kind not in obj:
        raise bad_json(f"Failed to deserialize the JSON body: missing field `{kind}`")
    return check(json_string(obj[kind], kind), "bad_json"), obj


def create_basin(store: Store, request: ApiRequest) -> ApiResponse:
    token = _request_token(request)
    name, obj = _create_request(request, "basin", check_basin_name)
    basin, result = store.create_basin(name, basin_config(obj.get("config"), "config"), token)
    return json_response(201, _basin_info(basin), {"s2-provision-result": result})


def get_basin_config(store: Store, request: ApiRequest) -> ApiResponse:
    return json_response(200, store.basin(request.params["basin"]).config.to_json())


def ensure_basin(store: Store, request: ApiRequest) -> ApiResponse:
    data = _optional_json_body(request)
    obj = {} if data is None else json_object(data, "EnsureBasinRequest")
    basin, result = store.ensure_basin(request.params["basin"], basin_config(obj.get("config"), "config"))
    status = 201 if result == "created" else 200
    return json_response(status, _basin_info(basin), {"s2-provision-result": result})


def reconfigure_basin(store: Store, request: ApiRequest) -> ApiResponse:
    return json_response(200, store.reconfigure_basin(request.params["basin"], _json_body(request)).to_json())


def delete_basin(store: Store, request: ApiRequest) -> ApiResponse:
    store.delete_basin(request.params["basin"])
    return ApiResponse(202)


# -- streams -------------------------------------------------------------------


def list_streams(store: Store, request: ApiRequest) -> ApiResponse:
    prefix, start_after, limit = _list_query(request)
    entries, has_more = store.list_streams(store.basin(request.basin), prefix, start_after, limit)
    return json_response(200, {"streams": [_stream_info(entry) for entry in entries], "has_more": has_more})


def create_stream(store: Store, request: ApiRequest) -> ApiResponse:
    token = _request_token(request)
    name, obj = _create_request(request, "stream", check_stream_name)
    config = stream_config(obj.get("config"), "config")
    entry, result = store.create_stream(store.basin(request.basin), name, config, token)
    return json_response(201, _stream_info(entry), {"s2-provision-result": result})


def get_stream_config(store: Store, request: ApiRequest) -> ApiResponse:
    entry = store.entry(store.basin(request.basin), request.params["stream"])
    return json_response(200, resolved_stream_config(entry.config))


def ensure_stream(store: Store, request: ApiRequest) -> ApiResponse:
    config = stream_config(_optional_json_body(request), "StreamConfig")
    entry, result = store.ensure_stream(store.basin(request.basin), request.params["stream"], config)
    status = 201 if result == "created" else 200
    return json_response(status, _stream_info(entry), {"s2-provision-result": result})


def reconfigure_stream(store: Store, request: ApiRequest) -> ApiResponse:
    changes = stream_reconfiguration(_json_body(request), "StreamReconfiguration")
    entry = store.reconfigure_stream(store.basin(request.basin), request.params["stream"], changes)
    return json_response(200, resolved_stream_config(entry.config))


def delete_stream(store: Store, request: ApiRequest) -> ApiResponse:
    store.delete_stream(store.basin(request.basin), request.params["stream"])
    return ApiResponse(202)


# -- records -------------------------------------------------------------------


def check_tail(store: Store, request: ApiRequest) -> ApiResponse:
    basin = store.basin(request.basin)
    name = request.params["stream"]
    stream = store.stream(basin, name, create=basin.config.create_stream_on_read)
    return json_response(200, {"tail": position_json(_run(basin, name, stream.check_tail))})


def append(store: Store, request: ApiRequest) -> ApiResponse:
    basin = store.basin(request.basin)
    name = request.params["stream"]
    content_type = request.media_type("content-type")
    if content_type == "s2s/proto":
        stream = store.stream(basin, name, create=basin.config.create_stream_on_append)
        return sessions.append_session(basin, stream, request)
    if content_type in _PROTOBUF:
        records, match_seq_num, fencing_token = sessions.proto().parse_append_input(request.body)
    else:
        require_json(request)
        fmt = parse_format(request.header("s2-format"))
        records, match_seq_num, fencing_token = parse_append(parse_json(request.body), fmt)
    sizes = _run(basin, name, lambda: check_batch(records))
    stream = store.stream(basin, name, create=basin.config.create_stream_on_append)
    ack = _run(
        basin,
        name,
        lambda: stream.append(records, match_seq_num=match_seq_num, fencing_token=fencing_token, sizes=sizes),
    )
    if request.drop_after_commit:
        return ApiResponse(200, drop=True)
    if request.media_type("accept") in _PROTOBUF:
        return ApiResponse(200, {"content-type": "application/protobuf"}, sessions.proto().append_ack(ack))
    start, end, tail = ack.start, ack.end, ack.tail
    body = _ACK_JSON % (start.seq_num, start.timestamp, end.seq_num, end.timestamp, tail.seq_num, tail.timestamp)
    return ApiResponse(200, {"content-type": "application/json"}, body)


def read(store: Store, request: ApiRequest) -> ApiResponse:
    name = request.params["stream"]
    query = parse_query(request.query)
    options: dict[str, Any] = {key: query_int(query, key) for key in ("seq_num", "timestamp", "tail_offset")}
    options.update(count=query_int(query, "count"), bytes=query_int(query, "bytes"), until=query_int(query, "until"))
    options["clamp"] = query_bool(query, "clamp")
    wait = query_int(query, "wait", U32_MAX)
    fmt = parse_format(request.header("s2-format"))
    if sum(options[key] is not None for key in ("seq_num", "timestamp", "tail_offset")) > 1:
        raise api_error("invalid", "only one of seq_num, timestamp, or tail_offset can be provided")
    mode = sessions.read_mode(request)
    if mode == "sse":
        sessions.apply_last_event_id(request, options)
    if options["timestamp"] is not None and options["until"] is not None and options["timestamp"] >= options["until"]:
        raise api_error("invalid", "start `timestamp` exceeds or equal to `until`")
    basin = store.basin(request.basin)
    stream = store.stream(basin, name, create=basin.config.create_stream_on_read)
    if mode != "unary":
        session = _run(basin, name, lambda: stream.read_session(wait=wait, **options))  # deleted meanwhile: 404
        return sessions.read_session(basin, stream, mode, session, fmt)
    batch = _run(basin, name, lambda: stream.read(wait=wait, **options))
    if request.media_type("accept") in _PROTOBUF:
        return ApiResponse(200, {"content-type": "application/protobuf"}, sessions.proto().read_batch(batch))
    body = read_batch_json(batch, fmt, stream.encoded(batch.records))
    return ApiResponse(200, {"content-type": "application/json"}, body)


#: operationId -> the function serving it.
OPERATIONS: dict[str, Callable[[Store, ApiRequest], ApiResponse]] = {
    function.__name__: function
    for function in (
        list_basins,
        create_basin,
        get_basin_config,
        ensure_basin,
        reconfigure_basin,
        delete_basin,
        list_streams,
        create_stream,
        get_stream_config,
        ensure_stream,
        reconfigure_stream,
        delete_stream,
        check_tail,
        append,
        read,
    )
}
