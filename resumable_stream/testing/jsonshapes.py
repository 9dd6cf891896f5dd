"""S2's JSON shapes of records: append inputs, read batches (with each record's JSON cached), query strings."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from itertools import repeat
from operator import itemgetter, methodcaller
from typing import Any
from urllib.parse import parse_qsl

from ..log import MAX_FENCING_TOKEN_BYTES, ReadBatch, Record, SequencedRecord, validate_stream_name
from .config import bad_json, json_object, json_string, opt_u64
from .errors import api_error

__all__ = [
    "BASIN_NAME_RULE",
    "U32_MAX",
    "check_basin_name",
    "check_stream_name",
    "dumps",
    "parse_append",
    "parse_format",
    "parse_last_event_id",
    "parse_query",
    "query_bool",
    "query_int",
    "read_batch_json",
    "record_json",
    "records_json",
    "rfc3339",
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1
_BASIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{6,46}[a-z0-9]$")
BASIN_NAME_RULE = "8-48 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    """Compact JSON, UTF-8."""
    return _ENCODER.encode(value).encode("utf-8")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _encoder(fmt: str) -> Callable[[bytes], str]:
    return _b64 if fmt == "base64" else _text


_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept: as dumps(ensure_ascii=False)


def record_json(record: SequencedRecord, fmt: str = "raw") -> bytes:
    """One record as S2's JSON (empty ``headers`` and ``body`` omitted), encoded once: the store caches raw ones.

    Written out by hand (every append and every read of a record passes here), the same bytes as ``dumps``.
    """
    seq_num, timestamp, body, headers = record
    if body and not headers and fmt == "raw":  # a plain text record: nearly all of them
        return f'{{"seq_num":{seq_num},"timestamp":{timestamp},"body":{_string(_text(body))}}}'.encode()
    encode = _encoder(fmt)
    text = f'{{"seq_num":{seq_num},"timestamp":{timestamp}'
    if headers:
        pairs = ",".join(f"[{_string(encode(name))},{_string(encode(value))}]" for name, value in headers)
        text += f',"headers":[{pairs}]'
    if body:
        text += f',"body":{_string(encode(body))}'
    return (text + "}").encode("utf-8")


_PLAIN_JSON = b'{"seq_num":%d,"timestamp":%d,"body":%s}'.__mod__


def records_json(records: Sequence[SequencedRecord]) -> list[bytes]:
    """Each record's raw JSON, as :func:`record_json` makes it; a batch of plain text records all in C."""
    if not any(map(_HEADERS, records)) and all(map(_BODY, records)):
        texts = map(methodcaller("decode", "utf-8", "replace"), map(_BODY, records))
        return list(map(_PLAIN_JSON, zip(map(_SEQ_NUM, records), map(_TIMESTAMP, records),
                                         map(str.encode, map(_string, texts)), strict=True)))
    return [record_json(record) for record in records]


_SEQ_NUM, _TIMESTAMP, _BODY, _HEADERS = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)  # of a record
_BODY_FIELD = itemgetter("body")


def read_batch_json(batch: ReadBatch, fmt: str, cached: Sequence[bytes] | None = None) -> bytes:
    """A ``ReadBatch`` as S2's JSON; ``cached`` are the records' raw JSON (:func:`record_json`) when known."""
    if cached is None or fmt != "raw":
        cached = [record_json(record, fmt) for record in batch.records]
    out = b'{"records":[' + b",".join(cached) + b"]"
    if batch.tail is not None:
        out += b',"tail":{"seq_num":%d,"timestamp":%d}' % (batch.tail.seq_num, batch.tail.timestamp)
    return out + b"}"


def _strict_b64decode(text: str) -> bytes:
    """Decode standard, padded base64, refusing anything non-canonical (as base64ct does)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        raise api_error("invalid", "invalid Base64 encoding") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise api_error("invalid", "invalid Base64 encoding")
    return data


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_json("Failed to deserialize the JSON body: string is not valid Unicode") from None


def parse_append(data: Any, fmt: str) -> tuple[list[Record], int | None, str | None]:
    """Parse an ``AppendInput``: shape errors are 400 ``bad_json``, bad base64 is 422 ``invalid``."""
    obj = json_object(data, "AppendInput")
    if "records" not in obj:
        raise bad_json("Failed to deserialize the JSON body: missing field `records`")
    if not isinstance(obj["records"], list):
        raise bad_json("Failed to deserialize the JSON body: `records` must be an array")
    match_seq_num = opt_u64(obj.get("match_seq_num"), "match_seq_num")
    fencing_token = obj.get("fencing_token")
    if fencing_token is not None:
        fencing_token = json_string(fencing_token, "fencing_token")
        if len(_utf8(fencing_token)) > MAX_FENCING_TOKEN_BYTES:
            raise bad_json(
                f"Failed to deserialize the JSON body: fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes"
            )
    items = obj["records"]
    if fmt == "raw" and set(map(type, items)) == {dict} and set(map(len, items)) == {1}:
        # Nearly every append: records of a body and nothing else, taken apart in C. Anything unusual in
        # them (another field, a body that is not a string or not Unicode) takes the way below.
        try:
            bodies = list(map(str.encode, map(_BODY_FIELD, items)))
        except (KeyError, TypeError, UnicodeEncodeError):
            pass
        else:
            plain = list(map(tuple.__new__, repeat(Record), zip(bodies, repeat(()), repeat(None))))
            return plain, match_seq_num, fencing_token
    parsed: list[tuple[int | None, list[tuple[str, str]], str]] = []
    for index, item in enumerate(items):  # every record of every append: the names of what
        if not isinstance(item, dict):  # is wrong are only formatted when something is
            json_object(item, f"records[{index}]")
        timestamp = item.get("timestamp")
        if timestamp is not None and (type(timestamp) is not int or not 0 <= timestamp <= U64_MAX):
            opt_u64(timestamp, f"records[{index}].timestamp")
        headers = []
        raw_headers = item.get("headers", ())
        if raw_headers != ():
            if not isinstance(raw_headers, list):
                raise bad_json(f"Failed to deserialize the JSON body: `records[{index}].headers` must be an array")
            for header in raw_headers:
                if not (isinstance(header, list) and len(header) == 2 and all(isinstance(p, str) for p in header)):
                    raise bad_json(
                        f"Failed to deserialize the JSON body: each header of `records[{index}]` must be [name, value]"
                    )
                headers.append((header[0], header[1]))
        body = item.get("body", "")
        if not isinstance(body, str):
            json_string(body, f"records[{index}].body")
        parsed.append((timestamp, headers, body))
    decode = _strict_b64decode if fmt == "base64" else _utf8
    new = tuple.__new__  # the tuple's own constructor: a third of the named one's cost, per record
    records = [
        new(Record, (decode(body), tuple([(decode(name), decode(value)) for name, value in headers]) if headers else (),
                     timestamp))
        for timestamp, headers, body in parsed
    ]
    return records, match_seq_num, fencing_token


def parse_query(raw: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise api_error("bad_query", "Failed to deserialize query string: invalid UTF-8") from None
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise api_error("bad_query", f"Failed to deserialize query string: duplicate field `{key}`")
        out[key] = value
    return out


def query_int(query: Mapping[str, str], name: str, maximum: int = U64_MAX) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if not text.isascii() or not text.isdigit() or int(text) > maximum:
        raise api_error("bad_query", f"Failed to deserialize query string: {name}: invalid value {text!r}")
    return int(text)


def query_bool(query: Mapping[str, str], name: str) -> bool:
    text = query.get(name)
    if text is None:
        return False
    if text not in ("true", "false"):
        raise api_error("bad_query", f"Failed to deserialize query string: {name}: expected `true` or `false`")
    return text == "true"


def parse_format(header: str | None) -> str:
    value = (header or "raw").strip()
    if value in ("raw", "json"):
        return "raw"
    if value in ("base64", "json-binsafe"):
        return "base64"
    raise api_error("bad_header", f"invalid header `s2-format`: expected `raw` or `base64`, got {value!r}")


def parse_last_event_id(header: str | None) -> tuple[int, int, int] | None:
    if header is None:
        return None
    parts = header.split(",", 2)
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise api_error("bad_header", f"invalid header `last-event-id`: expected `seq_num,count,bytes`, got {header!r}")
    seq_num, count, size = (int(p) for p in parts)
    return seq_num, count, size


def check_stream_name(raw: str, code: str) -> str:
    try:
        return validate_stream_name(raw)
    except ValueError as exc:
        raise api_error(code, f"invalid stream name: {exc}") from None


def check_basin_name(raw: str, code: str) -> str:
    if not _BASIN_NAME.match(raw):
        raise api_error(code, f"invalid basin name {raw!r}: {BASIN_NAME_RULE}")
    return raw
