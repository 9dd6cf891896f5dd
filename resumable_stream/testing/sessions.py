"""Read and append sessions: SSE (``text/event-stream``) and S2S (``s2s/proto``) bodies of a stream's records.

A session's response is sent at once (status and headers), then its body as
an iterator of chunks that the transport writes and flushes one by one.
Errors found before the first record are ordinary error responses; later
ones end the body (an SSE ``error`` event, an S2S terminal frame).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from ..exceptions import S2Error
from ..log import ReadBatch, ReadSession, StreamPosition
from ..memory_stream import MemoryStream
from .api import ApiRequest, ApiResponse, DropConnection
from .errors import ApiError, api_error, from_s2_error
from .jsonshapes import dumps, parse_last_event_id, read_batch_json
from .store import Basin

__all__ = ["append_session", "apply_last_event_id", "proto", "read_mode", "read_session"]

_SESSION_HEADERS = {"cache-control": "no-cache, no-transform", "x-accel-buffering": "no"}


def proto() -> ModuleType:
    """The protobuf codec; 501 when the ``server`` extra (``protobuf``) is not installed."""
    try:
        from . import proto as module
    except ImportError:
        raise api_error(
            "not_implemented", "protobuf needs the `protobuf` package: pip install 'resumable-stream-s2[server]'"
        ) from None
    return module


def read_mode(request: ApiRequest) -> str:
    """``"s2s"``, ``"sse"`` or ``"unary"``, as s2-lite decides from the request's headers."""
    if request.media_type("content-type") == "s2s/proto":
        return "s2s"
    accept = [part.split(";", 1)[0].strip().lower() for part in request.header("accept").split(",")]
    return "sse" if "text/event-stream" in accept else "unary"


def apply_last_event_id(request: ApiRequest, options: dict[str, Any]) -> None:
    """Resume an SSE session after its ``Last-Event-ID`` (``seq_num,count,bytes``), as s2-lite does."""
    resume = parse_last_event_id(request.headers.get("last-event-id"))
    if resume is None:
        return
    seq_num, sent_count, sent_bytes = resume
    options.update(seq_num=seq_num + 1, timestamp=None, tail_offset=None)
    if options["count"] is not None:
        options["count"] = max(options["count"] - sent_count, 0)
    if options["bytes"] is not None:
        options["bytes"] = max(options["bytes"] - sent_bytes, 0)


def read_session(
    basin: Basin,
    stream: MemoryStream,
    mode: str,
    session: ReadSession,
    fmt: str,
) -> ApiResponse:
    """The response of an SSE or S2S read session; errors before its first item are raised."""
    try:
        first = next(session, None)
    except S2Error as exc:
        session.close()
        raise from_s2_error(exc, basin.name, stream.name) from None
    if mode == "s2s":
        codec = proto()  # before the response starts
        body = _s2s_read(basin, stream, session, first, codec)
        return ApiResponse(200, {"content-type": "s2s/proto", **_SESSION_HEADERS}, stream=body)
    body = _sse_read(basin, stream, session, first, fmt)
    return ApiResponse(200, {"content-type": "text/event-stream", **_SESSION_HEADERS}, stream=body)


def _items(
    basin: Basin, stream: MemoryStream, session: ReadSession, first: Any
) -> Iterator[ReadBatch | StreamPosition | ApiError]:
    """The session's items, then the error that ended it, if one did; closes the session when done."""
    item = first
    try:
        while item is not None:
            yield item
            try:
                item = next(session, None)
            except S2Error as exc:
                yield from_s2_error(exc, basin.name, stream.name)
                return
    finally:
        session.close()


def _event(event: bytes | None, data: bytes, event_id: bytes | None = None) -> bytes:
    head = b"" if event is None else b"event: " + event + b"\n"
    if event_id is not None:
        head += b"id: " + event_id + b"\n"
    return head + b"".join(b"data: " + line + b"\n" for line in data.split(b"\n")) + b"\n"


def _sse_read(
    basin: Basin, stream: MemoryStream, session: ReadSession, first: Any, fmt: str
) -> Iterator[bytes]:
    sent_count = sent_bytes = 0
    for item in _items(basin, stream, session, first):
        if isinstance(item, ApiError):
            yield _event(b"error", dumps(item.body))
            return
        if isinstance(item, ReadBatch):
            sent_count += len(item.records)
            sent_bytes += sum(record.metered_size for record in item.records)
            event_id = b"%d,%d,%d" % (item.records[-1].seq_num, sent_count, sent_bytes)
            yield _event(b"batch", read_batch_json(item, fmt, stream.encoded(item.records)), event_id)
        else:
            ping = b'{"timestamp":%d,"tail":{"seq_num":%d,"timestamp":%d}}' % (
                time.time_ns() // 1_000_000,
                item.seq_num,
                item.timestamp,
            )
            yield _event(b"ping", ping)
    yield _event(None, b"[DONE]")


def _s2s_read(
    basin: Basin,
    stream: MemoryStream,
    session: ReadSession,
    first: Any,
    codec: ModuleType,
) -> Iterator[bytes]:
    for item in _items(basin, stream, session, first):
        if isinstance(item, ApiError):
            yield codec.terminal_frame(item.status, item.body)
            return
        yield codec.frame(codec.read_batch(item))


def append_session(basin: Basin, stream: MemoryStream, request: ApiRequest) -> ApiResponse:
    """An S2S append session: one ``AppendAck`` frame per ``AppendInput`` frame, in order.

    The first failed append ends the session with a terminal frame (412 and
    the other errors exactly as a unary append gives them).
    """
    codec = proto()
    chunks = request.body_stream if request.body_stream is not None else iter([request.body])

    def acks() -> Iterator[bytes]:
        try:
            for message in codec.read_frames(chunks):
                records, match_seq_num, fencing_token = codec.parse_append_input(message)
                try:
                    ack = stream.append(records, match_seq_num=match_seq_num, fencing_token=fencing_token)
                except S2Error as exc:
                    raise from_s2_error(exc, basin.name, stream.name) from None
                if request.drop_after_commit:
                    raise DropConnection
                yield codec.frame(codec.append_ack(ack))
        except ApiError as exc:
            yield codec.terminal_frame(exc.status, exc.body)

    return ApiResponse(200, {"content-type": "s2s/proto", **_SESSION_HEADERS}, stream=acks())
