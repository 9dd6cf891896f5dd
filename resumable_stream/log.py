"""The small interface between the engine and a durable log, and its data types.

Two implementations satisfy :class:`Log`: :class:`~resumable_stream.S2Client`
(S2 over HTTP) and :class:`~resumable_stream.MemoryLog` (in this process).
The engine is written against :class:`Log` only. Both follow S2's semantics:
sequence numbers start at 0, appends are atomic batches that may be made
conditional on a fencing token and on the next sequence number, and reads can
long-poll at the tail.

Records are bytes: a body and a list of ``(name, value)`` headers. A record
with exactly one header whose name is empty is a *command record*: ``fence``
(the body is the new fencing token) or ``trim`` (the body is an 8-byte
big-endian sequence number).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple, Protocol

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_FENCING_TOKEN_BYTES",
    "MAX_READ_WAIT",
    "AppendAck",
    "Header",
    "Log",
    "ReadBatch",
    "ReadSession",
    "Record",
    "SequencedRecord",
    "StreamPosition",
    "TextBatch",
    "append_in_batches",
    "bodies",
    "metered_size",
    "plain",
    "split_batches",
    "unstamped",
    "validate_stream_name",
]

Header = tuple[bytes, bytes]

#: Most records in one append, or in one unary read.
MAX_BATCH_RECORDS = 1000
#: Most metered bytes in one append or unary read; also the largest record.
MAX_BATCH_BYTES = 1024 * 1024
#: Longest fencing token, in UTF-8 bytes.
MAX_FENCING_TOKEN_BYTES = 36
#: Longest long-poll of a unary read, in seconds.
MAX_READ_WAIT = 60
#: Longest stream name, in UTF-8 bytes.
MAX_STREAM_NAME_BYTES = 512

_FENCE = b"fence"
_TRIM = b"trim"


def metered_size(body: bytes, headers: Sequence[Header] = ()) -> int:
    """Size of a record as S2 meters it: 8 bytes, plus 2 and the name and value of each header, plus the body."""
    if not headers:
        return 8 + len(body)
    return 8 + sum(2 + len(name) + len(value) for name, value in headers) + len(body)


class Record(NamedTuple):
    """A record to append.

    ``timestamp`` (milliseconds since the epoch) is optional; the log assigns
    the arrival time when it is ``None``.
    """

    body: bytes = b""
    headers: tuple[Header, ...] = ()
    timestamp: int | None = None

    @classmethod
    def fence(cls, token: str) -> Record:
        """A command record that sets the stream's fencing token (``""`` clears it)."""
        return cls(token.encode(), ((b"", _FENCE),))

    @classmethod
    def trim(cls, seq_num: int) -> Record:
        """A command record that trims the stream up to (not including) ``seq_num``."""
        return cls(seq_num.to_bytes(8, "big"), ((b"", _TRIM),))

    @property
    def metered_size(self) -> int:
        return metered_size(self.body, self.headers)


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A sequence number and the timestamp (ms) of the record at or before it."""

    seq_num: int
    timestamp: int


class SequencedRecord(NamedTuple):
    """A record as read back from the log."""

    seq_num: int
    timestamp: int
    body: bytes = b""
    headers: tuple[Header, ...] = ()

    @property
    def command(self) -> str | None:
        """``"fence"`` or ``"trim"`` for a command record, else ``None``."""
        if len(self.headers) == 1 and self.headers[0][0] == b"":
            return self.headers[0][1].decode("utf-8", "replace")
        return None

    @property
    def metered_size(self) -> int:
        return metered_size(self.body, self.headers)


@dataclass(frozen=True, slots=True)
class AppendAck:
    """Where an append landed.

    ``start`` is the first record's position, ``end.seq_num`` is one past the
    last appended record, and ``tail`` is the stream's tail after the append.
    """

    start: StreamPosition
    end: StreamPosition
    tail: StreamPosition


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Records returned by one read.

    ``tail`` is present only when the read reached recent records.
    """

    records: tuple[SequencedRecord, ...]
    tail: StreamPosition | None = None


@dataclass(frozen=True, slots=True)
class TextBatch:
    """Records of a text read session, every one plain text (a body and no headers), kept as text.

    What :meth:`Log.read_session` with ``text=True`` may yield in place of
    a :class:`ReadBatch` whose records are all plain: the same records,
    with the bodies left as the ``str`` they arrived as, which spares
    encoding them and a text reader decoding them back. :attr:`records`
    gives them as a :class:`ReadBatch` would.
    """

    seq_nums: tuple[int, ...]
    timestamps: tuple[int, ...]
    texts: tuple[str, ...]
    tail: StreamPosition | None = None

    @property
    def records(self) -> tuple[SequencedRecord, ...]:
        """The records, with UTF-8 bodies."""
        return tuple(map(SequencedRecord, self.seq_nums, self.timestamps, map(str.encode, self.texts)))


class ReadSession:
    """What :meth:`Log.read_session` returns: an iterator of batches and heartbeats that any thread may close.

    :meth:`close` ends the session: a thread blocked in ``next()`` on it returns promptly (the iterator
    ends). ``produce(cancelled)`` makes the underlying iterator, which must end soon after ``cancelled``
    is set once ``interrupt()`` has been called.
    """

    __slots__ = ("_interrupt", "_items", "cancelled")

    def __init__(self, produce: Callable[[threading.Event], Iterator[ReadBatch | TextBatch | StreamPosition]],
                 interrupt: Callable[[], None]) -> None:
        self.cancelled = threading.Event()
        self._items = produce(self.cancelled)
        self._interrupt = interrupt

    def __iter__(self) -> ReadSession:
        return self

    def __next__(self) -> ReadBatch | TextBatch | StreamPosition:
        if self.cancelled.is_set():
            raise StopIteration
        try:
            return next(self._items)
        except Exception:
            if self.cancelled.is_set():
                raise StopIteration from None  # what closing it broke off, not a failure
            raise

    def close(self) -> None:
        """End the session, from any thread."""
        self.cancelled.set()
        self._interrupt()
        close = getattr(self._items, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # being read by another thread: it ends by itself now
                close()


class Log(Protocol):
    """What the engine needs from a durable log. Implementations are thread-safe.

    Errors are :class:`~resumable_stream.exceptions.S2Error` subclasses:
    ``append`` raises :class:`FencingTokenMismatch` or :class:`SeqNumMismatch`
    when its condition fails, ``read`` raises :class:`RangeNotSatisfiable`
    when it starts beyond the tail (or at it without ``wait``), and every
    operation raises :class:`NotFound` for a stream that does not exist and
    is not created on demand.
    """

    def append(
        self,
        stream: str,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
        timeout: float | None = None,
    ) -> AppendAck:
        """Append ``records`` atomically.

        ``fencing_token=None`` skips the token check; ``""`` asserts that the
        stream is not fenced. ``match_seq_num`` asserts the sequence number
        the first record gets. ``timeout`` (seconds) bounds the whole call,
        retries included.
        """
        ...

    def read(
        self,
        stream: str,
        *,
        seq_num: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
        bytes: int | None = None,
        wait: int | None = None,
        clamp: bool = False,
    ) -> ReadBatch:
        """Read from ``seq_num`` (or ``tail_offset`` records before the tail).

        With neither, the read starts at the tail. ``wait`` (seconds, at most
        60) makes a read at the tail long-poll: it returns as soon as records
        arrive, or an empty batch when the wait ends.
        """
        ...

    def read_session(
        self,
        stream: str,
        *,
        seq_num: int | None = None,
        wait: int | None = None,
        clamp: bool = False,
        text: bool = False,
    ) -> ReadSession:
        """A streaming read from ``seq_num``: batches as they are written, and heartbeats.

        Yields non-empty :class:`ReadBatch` objects and, while following the
        tail, :class:`StreamPosition` heartbeats (the tail). ``wait`` (whole
        seconds) bounds the gap between records: the session ends when no
        record arrives for that long (``0``: at the tail); without ``wait``
        it follows forever. :meth:`ReadSession.close`, from any thread, ends the session.

        ``text=True`` says the records are UTF-8 text: a log may then carry
        them as text (S2's ``raw`` format, cheaper to decode than base64),
        and bytes that are not UTF-8 arrive with U+FFFD in their place; it
        may then also yield a batch of plain text records as a
        :class:`TextBatch`.
        """
        ...

    def check_tail(self, stream: str) -> StreamPosition:
        """The next sequence number and the last record's timestamp."""
        ...

    def ensure_stream(self, stream: str) -> None:
        """Create ``stream`` if it does not exist."""
        ...

    def close(self) -> None:
        """Release connections; blocked long-polls return early."""
        ...


def validate_stream_name(name: object) -> str:
    """Return ``name`` if it is a valid S2 stream name, else raise :class:`ValueError`.

    Any string of 1 to 512 UTF-8 bytes works except ``"."`` and ``".."``.
    """
    if not isinstance(name, str):
        raise ValueError(f"stream name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("stream name must not be empty")
    if name in (".", ".."):
        raise ValueError(f"stream name must not be {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("stream name must be valid UTF-8 (it contains a lone surrogate)") from None
    if size > MAX_STREAM_NAME_BYTES:
        raise ValueError(f"stream name must not exceed {MAX_STREAM_NAME_BYTES} bytes in UTF-8 (it has {size})")
    return name


def split_batches(records: Sequence[Record]) -> list[list[Record]]:
    """Split ``records`` into batches of at most 1000 records and 1 MiB metered.

    Raises :class:`ValueError` for a record that is itself over 1 MiB.
    """
    if records and len(records) <= MAX_BATCH_RECORDS:
        if plain(records):  # nearly all: metered in C
            total = 8 * len(records) + sum(map(len, bodies(records)))
        else:
            total = sum([metered_size(body, headers) for body, headers, _ in records])
        if total <= MAX_BATCH_BYTES:
            return [list(records)]  # the common case: one batch (a record over the limit would exceed the sum)
    batches: list[list[Record]] = []
    current: list[Record] = []
    current_bytes = 0
    for record in records:
        size = record.metered_size
        if size > MAX_BATCH_BYTES:
            raise ValueError(f"record of {size} metered bytes exceeds the 1 MiB limit; split it before appending")
        if current and (len(current) == MAX_BATCH_RECORDS or current_bytes + size > MAX_BATCH_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(record)
        current_bytes += size
    if current:
        batches.append(current)
    return batches


_BODY, _HEADERS, _TIMESTAMP = itemgetter(0), itemgetter(1), itemgetter(2)  # of a Record


def plain(records: Sequence[Record]) -> bool:
    """True when no record has a header (nearly every batch of a stream), checked in C."""
    return not any(map(_HEADERS, records))


def bodies(records: Sequence[Record]) -> Iterator[bytes]:
    """The records' bodies, taken in C."""
    return map(_BODY, records)


def unstamped(records: Sequence[Record]) -> bool:
    """True when no record carries a timestamp of its own (the log stamps them all), checked in C."""
    return set(map(_TIMESTAMP, records)) <= {None}


def append_in_batches(
    records: Sequence[Record],
    match_seq_num: int | None,
    append_batch: Callable[[Sequence[Record], int | None], AppendAck],
) -> AppendAck:
    """Append ``records`` as consecutive batches within S2's limits, each with ``match_seq_num`` continuing.

    ``append_batch(batch, match_seq_num)`` appends one batch; the returned ack spans all of them.
    """
    first: AppendAck | None = None
    ack: AppendAck | None = None
    for batch in split_batches(records):
        ack = append_batch(batch, match_seq_num)
        first = first or ack
        if match_seq_num is not None:
            match_seq_num = ack.end.seq_num
    assert first is not None and ack is not None
    return AppendAck(first.start, ack.end, ack.tail)
