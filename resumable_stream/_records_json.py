"""S2's JSON shapes of records, for the client: append bodies, read batches, acks, query parameters.

An append goes as ``raw`` JSON (UTF-8 text as JSON strings) unless escaping would make it larger than
``base64``, or its bytes are not UTF-8; reads come back in the format asked for (``s2-format``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from ._http import position
from .log import AppendAck, ReadBatch, Record, SequencedRecord, StreamPosition, TextBatch, bodies, plain, unstamped

__all__ = ["BASE64", "RAW", "ack", "append_payload", "read_batch", "read_params", "read_text_batch", "tail_of"]

#: Request headers that ask for bodies as base64, or as text.
BASE64 = {"s2-format": "base64"}
RAW = {"s2-format": "raw"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


if sys.version_info >= (3, 11):

    def _unb64(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)  # as strict as b64decode(validate=True), and cheaper

else:

    def _unb64(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


_utf8 = functools.partial(str, encoding="utf-8")  # strict; any bytes-like object


def read_params(**values: int | bool | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, value in values.items():
        if value is True:
            params[name] = "true"
        elif value is not None and value is not False:
            params[name] = int(value)
    return params


def append_payload(batch: Sequence[Record], match_seq_num: int | None, fencing_token: str | None) -> tuple[bytes, str]:
    """The JSON body of an append and its ``s2-format``: whichever of ``raw`` and ``base64`` is smaller.

    ``raw`` is the common case (UTF-8 text), but JSON escapes control characters six bytes apiece, so a
    text full of them goes as ``base64`` (a third larger than its bytes, whatever they are); bytes that
    are not UTF-8 always do. The bytes are those of ``json.dumps`` (compact, non-ASCII kept).
    """
    simple = plain(batch) and unstamped(batch)
    end = ""
    if match_seq_num is not None:
        end += f',"match_seq_num":{json.dumps(match_seq_num)}'
    if fencing_token is not None:
        end += f',"fencing_token":{_string(fencing_token)}'
    end += "}"

    def encoded(encode: Callable[[bytes], str]) -> bytes:
        def item(body: bytes, headers: tuple[tuple[bytes, bytes], ...], timestamp: int | None) -> str:
            entry: dict[str, Any] = {"body": encode(body)}
            if headers:
                entry["headers"] = [[encode(name), encode(value)] for name, value in headers]
            if timestamp is not None:
                entry["timestamp"] = timestamp
            return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)

        if simple:  # the bulk of a stream: bodies and nothing else, made in C
            records = '{"body":' + '},{"body":'.join(map(_string, map(encode, bodies(batch)))) + "}"
        else:
            records = ",".join([item(*record) for record in batch])
        return ('{"records":[' + records + "]" + end).encode()

    try:
        try:
            raw = encoded(bytes.decode)  # UTF-8, strict: the cheapest call there is
        except TypeError:  # a body or header given as a bytearray or memoryview
            raw = encoded(_utf8)
    except UnicodeDecodeError:
        return encoded(_b64), "base64"
    if simple:
        payload = sum(map(len, bodies(batch)))
    else:
        payload = sum([len(body) + (sum(len(n) + len(v) for n, v in headers) if headers else 0)
                       for body, headers, _ in batch])
    if len(raw) - payload > payload // 3 + 64 * len(batch) + 64:  # escaping may have outgrown base64
        base64 = encoded(_b64)
        if len(base64) < len(raw):
            return base64, "base64"
    return raw, "raw"


_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept: as dumps(ensure_ascii=False)


def tail_of(data: Mapping[str, Any]) -> StreamPosition:
    return position(data["tail"])


def ack(data: Mapping[str, Any]) -> AppendAck:
    return AppendAck(position(data["start"]), position(data["end"]), position(data["tail"]))


def read_batch(data: Mapping[str, Any], decode: Callable[[str], bytes] = _unb64) -> ReadBatch:
    """A ``ReadBatch`` from its JSON; ``decode`` turns each encoded string into bytes (base64 by default)."""
    items = data["records"]
    new, cls = tuple.__new__, SequencedRecord  # the tuple's own constructor: a third of the named one's cost
    if set(map(len, items)) == {3}:  # nearly every batch: records of a body and nothing else, taken apart in C
        try:
            records = tuple(map(new, repeat(cls), zip(map(_SEQ_NUM, items), map(_TIMESTAMP, items),
                                                      map(decode, map(_BODY, items)), repeat(()))))
        except KeyError:  # three fields, but headers among them
            pass
        else:
            return ReadBatch(records, _tail(data))
    records = tuple([
        new(cls, (
            int(item["seq_num"]),
            int(item["timestamp"]),
            decode(item.get("body", "")),
            tuple([(decode(name), decode(value)) for name, value in headers]) if (headers := item.get("headers"))
            else (),
        ))
        for item in items
    ])
    return ReadBatch(records, _tail(data))


_SEQ_NUM, _TIMESTAMP, _BODY = itemgetter("seq_num"), itemgetter("timestamp"), itemgetter("body")


def _tail(data: Mapping[str, Any]) -> StreamPosition | None:
    tail = data.get("tail")
    return position(tail) if tail else None


def read_text_batch(data: Mapping[str, Any]) -> ReadBatch | TextBatch:
    """A batch of a ``raw`` read: a ``TextBatch`` when every record is plain text (nearly every batch).

    The check is done in C: every record has exactly its three fields, every body is a non-empty
    ``str`` that encodes as UTF-8 (no lone surrogate). Anything else takes :func:`read_batch`'s way.
    """
    items = data["records"]
    if items and set(map(len, items)) == {3}:
        try:
            texts = tuple(map(_BODY, items))
            "".join(texts).encode()  # TypeError for a body that is not a str, UnicodeEncodeError for a lone surrogate
        except (KeyError, TypeError, UnicodeEncodeError):
            pass
        else:
            if all(texts):
                return TextBatch(tuple(map(_SEQ_NUM, items)), tuple(map(_TIMESTAMP, items)), texts, _tail(data))
    return read_batch(data, str.encode)
