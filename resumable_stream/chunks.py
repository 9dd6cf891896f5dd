"""What a chunk becomes on the log: pieces that fit a record, and text that is valid Unicode.

A chunk over S2's 1 MiB record limit becomes several records (text cut at character boundaries),
each a chunk with its own cursor, for the creator and every reader alike; text with lone surrogates
gets U+FFFD in their place, and so do failure messages, which are also cut to what the log keeps.
"""

from __future__ import annotations

from . import _wire
from .log import MAX_BATCH_BYTES

__all__ = ["MAX_CHUNK_BYTES", "describe_failure", "split_chunk", "valid_text"]

# Largest data record body. A full record with its headers and the stream's terminal fence (at most
# 8 + 2 + 5 + 36 bytes) must still fit the 1 MiB of one read, which stream_status relies on.
MAX_CHUNK_BYTES = MAX_BATCH_BYTES - 128


def valid_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD (and surrogate pairs joined), so it encodes as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def describe_failure(exc: BaseException) -> str:
    """The message recorded for a source that raised ``exc``: ``"ValueError: boom"``.

    It is valid Unicode and no longer than the log keeps, so the creator and every reader see the same.
    """
    name = type(exc).__name__
    try:
        text = str(exc)
        if not isinstance(text, str):  # a __str__ that returns something else
            raise TypeError(f"__str__ returned {type(text).__name__}")
    except Exception as failure:  # a source's exception must be recorded, whatever its __str__ does
        text = f"(its message could not be shown: {type(failure).__name__})"
    return _wire.recordable_message(valid_text(f"{name}: {text}" if text else name))


def split_chunk(value: str | bytes) -> list[tuple[str | bytes, bytes]]:
    """Split a chunk into pieces whose bodies fit a record: ``(piece, encoded piece)`` pairs.

    Text that is not valid Unicode (lone surrogates) gets U+FFFD in their place, for the creator and
    every reader alike.
    """
    if isinstance(value, bytes):
        if len(value) <= MAX_CHUNK_BYTES:
            return [(value, value)]
        slices = (value[i : i + MAX_CHUNK_BYTES] for i in range(0, len(value), MAX_CHUNK_BYTES))
        return [(piece, piece) for piece in slices]
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        value = valid_text(value)
        data = value.encode("utf-8")
    if len(data) <= MAX_CHUNK_BYTES:
        return [(value, data)]
    pieces: list[tuple[str | bytes, bytes]] = []
    start = 0
    while start < len(data):
        end = min(start + MAX_CHUNK_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # do not cut a character in two
            end -= 1
        pieces.append((data[start:end].decode("utf-8"), data[start:end]))
        start = end
    return pieces
