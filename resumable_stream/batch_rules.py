"""S2's rules for one append batch, as the in-memory logs apply them (MemoryLog and the local server).

A batch holds 1 to 1000 records of at most 1 MiB metered in all; a record with an
empty header name must be a well-formed ``fence`` or ``trim`` command. Each
broken rule is S2's 422 ``invalid`` answer, with S2's message.
"""

from __future__ import annotations

from collections.abc import Sequence

from .exceptions import BadRequest
from .log import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES, Record, bodies, plain

__all__ = ["check_batch", "invalid"]


def invalid(message: str) -> BadRequest:
    """S2's 422 ``invalid`` answer to a request that breaks its rules."""
    return BadRequest(message, status=422, code="invalid")


def check_batch(records: Sequence[Record], sizes: Sequence[int] | None = None) -> Sequence[int]:
    """Apply S2's rules for one append batch; return each record's metered size. Raises 422 :class:`BadRequest`.

    ``sizes`` are the records' metered sizes, when the caller has them.
    """
    if not records:
        raise invalid("record batch must not be empty")
    if len(records) > MAX_BATCH_RECORDS:
        raise invalid(f"record batch must not exceed {MAX_BATCH_RECORDS} records")
    without_headers = plain(records)  # nearly every batch
    if sizes is None:
        sizes = [8 + n for n in map(len, bodies(records))] if without_headers else [r.metered_size for r in records]
    if sum(sizes) > MAX_BATCH_BYTES:
        if max(sizes) > MAX_BATCH_BYTES:
            raise invalid("record must have metered size less than 1 MiB")
        raise invalid("record batch must not exceed a metered size of 1 MiB")
    if not without_headers:
        for record in records:
            headers = record.headers
            if headers and any(name == b"" for name, _ in headers):
                _check_command(record)
    return sizes


def _check_command(record: Record) -> None:
    """S2's rules for a record with an empty header name: a fence or trim command, or invalid."""
    if len(record.headers) != 1:
        raise invalid("invalid header: empty name")
    op = record.headers[0][1]
    if op == b"fence":
        try:
            token = record.body.decode()
        except UnicodeDecodeError:
            raise invalid("fencing token must be valid UTF-8") from None
        if len(token.encode()) > MAX_FENCING_TOKEN_BYTES:
            raise invalid(f"fencing token must not exceed {MAX_FENCING_TOKEN_BYTES} bytes in length")
    elif op == b"trim":
        if len(record.body) != 8:
            raise invalid(f"earliest sequence number to trim to was {len(record.body)} bytes, must be 8")
    else:
        raise invalid("unknown command")
