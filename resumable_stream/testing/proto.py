"""S2's protobuf messages (``s2.v1``, as in S2's published ``s2.proto``) and S2S session framing.

The messages are built at import time from their definition (no generated
code, no ``protoc``), with the ``protobuf`` package of the ``server`` extra.

S2S frames a session's messages: a 3-byte big-endian length of what follows,
a flag byte ``[T][CC][A][RRRR]`` (T: terminal, CC: compression 0 none, 1
zstd, 2 gzip; A: reconnect advised), then a protobuf message or, in a
terminal frame, a 2-byte HTTP status and a JSON error body.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from ..log import AppendAck, ReadBatch, Record, StreamPosition
from .errors import api_error

__all__ = [
    "append_ack",
    "frame",
    "parse_append_input",
    "read_batch",
    "read_frames",
    "terminal_frame",
]

_FDP = descriptor_pb2.FieldDescriptorProto
# (message, [(field, number, type, repeated, message type, proto3 optional)])
_MESSAGES: list[tuple[str, list[tuple[str, int, int, bool, str, bool]]]] = [
    (
        "StreamPosition",
        [("seq_num", 1, _FDP.TYPE_UINT64, False, "", False), ("timestamp", 2, _FDP.TYPE_UINT64, False, "", False)],
    ),
    ("Header", [("name", 1, _FDP.TYPE_BYTES, False, "", False), ("value", 2, _FDP.TYPE_BYTES, False, "", False)]),
    (
        "AppendRecord",
        [
            ("timestamp", 1, _FDP.TYPE_UINT64, False, "", True),
            ("headers", 2, _FDP.TYPE_MESSAGE, True, "Header", False),
            ("body", 3, _FDP.TYPE_BYTES, False, "", False),
        ],
    ),
    (
        "AppendInput",
        [
            ("records", 1, _FDP.TYPE_MESSAGE, True, "AppendRecord", False),
            ("match_seq_num", 2, _FDP.TYPE_UINT64, False, "", True),
            ("fencing_token", 3, _FDP.TYPE_STRING, False, "", True),
        ],
    ),
    (
        "AppendAck",
        [
            ("start", 1, _FDP.TYPE_MESSAGE, False, "StreamPosition", False),
            ("end", 2, _FDP.TYPE_MESSAGE, False, "StreamPosition", False),
            ("tail", 3, _FDP.TYPE_MESSAGE, False, "StreamPosition", False),
        ],
    ),
    (
        "SequencedRecord",
        [
            ("seq_num", 1, _FDP.TYPE_UINT64, False, "", False),
            ("timestamp", 2, _FDP.TYPE_UINT64, False, "", False),
            ("headers", 3, _FDP.TYPE_MESSAGE, True, "Header", False),
            ("body", 4, _FDP.TYPE_BYTES, False, "", False),
        ],
    ),
    (
        "ReadBatch",
        [
            ("records", 1, _FDP.TYPE_MESSAGE, True, "SequencedRecord", False),
            ("tail", 2, _FDP.TYPE_MESSAGE, False, "StreamPosition", True),
        ],
    ),
]


def _build() -> dict[str, Any]:
    """Message classes for ``s2.v1``, in a pool of their own (so an SDK's generated ``s2.v1`` cannot clash)."""
    file = descriptor_pb2.FileDescriptorProto(name="resumable_stream/s2.proto", package="s2.v1", syntax="proto3")
    for name, fields in _MESSAGES:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, repeated, type_name, optional in fields:
            field = msg.field.add(name=field_name, number=number, type=kind)
            field.label = _FDP.LABEL_REPEATED if repeated else _FDP.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".s2.v1.{type_name}"
            if optional:  # proto3 `optional`: a synthetic one-field oneof
                field.proto3_optional = True
                field.oneof_index = len(msg.oneof_decl)
                msg.oneof_decl.add(name=f"_{field_name}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"s2.v1.{name}")) for name, _ in _MESSAGES}


_CLASSES = _build()
_AppendInput = _CLASSES["AppendInput"]
_AppendAck = _CLASSES["AppendAck"]
_ReadBatch = _CLASSES["ReadBatch"]


def parse_append_input(data: bytes) -> tuple[list[Record], int | None, str | None]:
    """An ``AppendInput``: its records, ``match_seq_num`` and ``fencing_token``; 400 ``bad_proto`` if malformed."""
    parsed = _AppendInput()
    try:
        parsed.ParseFromString(data)
    except message.DecodeError as exc:
        raise api_error("bad_proto", f"Failed to decode the protobuf body: {exc}") from None
    records = [
        Record(
            item.body,
            tuple((header.name, header.value) for header in item.headers),
            item.timestamp if item.HasField("timestamp") else None,
        )
        for item in parsed.records
    ]
    match_seq_num = parsed.match_seq_num if parsed.HasField("match_seq_num") else None
    fencing_token = parsed.fencing_token if parsed.HasField("fencing_token") else None
    return records, match_seq_num, fencing_token


def _set_position(target: Any, position: StreamPosition) -> None:
    target.seq_num = position.seq_num
    target.timestamp = position.timestamp


def append_ack(ack: AppendAck) -> bytes:
    out = _AppendAck()
    _set_position(out.start, ack.start)
    _set_position(out.end, ack.end)
    _set_position(out.tail, ack.tail)
    return bytes(out.SerializeToString())


def read_batch(batch: ReadBatch | StreamPosition) -> bytes:
    """A ``ReadBatch`` message; a :class:`StreamPosition` (a session's heartbeat) becomes an empty batch with a tail."""
    out = _ReadBatch()
    if isinstance(batch, StreamPosition):
        _set_position(out.tail, batch)
        return bytes(out.SerializeToString())
    records = out.records
    for record in batch.records:
        item = records.add(seq_num=record.seq_num, timestamp=record.timestamp, body=record.body)
        for name, value in record.headers:
            item.headers.add(name=name, value=value)
    if batch.tail is not None:
        _set_position(out.tail, batch.tail)
    return bytes(out.SerializeToString())


# -- S2S framing -----------------------------------------------------------------

_TERMINAL = 0x80
_COMPRESSION_SHIFT = 5
_MAX_FRAME = 2 * 1024 * 1024


def frame(body: bytes) -> bytes:
    """A regular, uncompressed S2S frame."""
    return (len(body) + 1).to_bytes(3, "big") + b"\x00" + body


def terminal_frame(status: int, error: Mapping[str, Any]) -> bytes:
    """The S2S frame that ends a session with an error: its HTTP status and S2's JSON error body."""
    body = status.to_bytes(2, "big") + json.dumps(error, separators=(",", ":")).encode()
    return (len(body) + 1).to_bytes(3, "big") + bytes([_TERMINAL]) + body


def _decompress(body: bytes, compression: int) -> bytes:
    if compression == 0:
        return body
    if compression == 2:
        return gzip.decompress(body)
    if compression == 1:
        try:
            import zstandard
        except ImportError:
            raise api_error("bad_frame", "zstd-compressed frames need the `zstandard` package") from None
        with zstandard.ZstdDecompressor().stream_reader(body) as reader:
            return bytes(reader.read())
    raise api_error("bad_frame", f"unknown S2S compression {compression}")


def read_frames(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The message bodies of an S2S request body, decompressed; 400 ``bad_frame`` for a malformed frame."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 4:
            length = int.from_bytes(buffer[:3], "big")
            if length < 1 or length > _MAX_FRAME:
                raise api_error("bad_frame", f"invalid S2S frame length {length}")
            if len(buffer) < 3 + length:
                break
            flag = buffer[3]
            body = bytes(buffer[4 : 3 + length])
            del buffer[: 3 + length]
            if flag & _TERMINAL:
                return
            yield _decompress(body, (flag >> _COMPRESSION_SHIFT) & 0x3)
    if buffer:
        raise api_error("bad_frame", "the S2S request body ended inside a frame")
