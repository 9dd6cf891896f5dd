"""Exact data: what a stream's log holds, read without the engine, and every reader compared with it.

:func:`read_log` reads a stream's records and checks their layout against the documented one (README,
"How it is laid out on S2") with a parser of its own, not the engine's: the claim at 0, data records,
empty-body metadata records, one terminal fence, last. The log is the reference: every reader must
have been given exactly its chunks after the reader's cursor, each once, in order, with the log's
sequence numbers as cursors. Only the creator may have been shown more, and only chunks after the
log's last one that were produced within ``LIVE_LEAD`` of each other (:func:`creator_extras`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from resumable_stream.log import Log, SequencedRecord

FENCE = ((b"", b"fence"),)
BYTES = ((b"rs", b"bytes"),)
HEARTBEAT = ((b"rs", b"heartbeat"),)
# Terminal fence prefixes, longest first, and the outcome each records.
TERMINALS = (("end-stopped-", "stopped"), ("end-", "completed"), ("error-abandoned-", "abandoned"),
             ("error-", "failed"))

Chunk = str | bytes
Event = tuple[int, Chunk]


def terminal_state(token: str) -> str | None:
    return next((state for prefix, state in TERMINALS if token.startswith(prefix)), None)


@dataclass
class Logged:
    """A stream as its log holds it."""

    stream: str
    claim: str | None = None  # the claim's session token (None: no claim, e.g. stopped before creation)
    events: list[Event] = field(default_factory=list)  # (sequence number, chunk) of every data record
    state: str | None = None  # completed, stopped, failed, abandoned; None while not ended on the log
    terminal: str | None = None  # the terminal fence's token
    error: str | None = None  # the recorded failure message
    heartbeats: int = 0
    tail: int = 0
    others: int = 0  # records written by another library (their empty-body records, say)

    @property
    def chunks(self) -> list[Chunk]:
        return [chunk for _, chunk in self.events]

    def after(self, cursor: int | None) -> list[Event]:
        """The events a reader resuming strictly after ``cursor`` (None: from the start) must get."""
        return self.events if cursor is None else [e for e in self.events if e[0] > cursor]


def all_records(log: Log, stream: str) -> list[SequencedRecord]:
    """Every record of ``stream``, from 0 to its tail (unary reads, 1000 at a time)."""
    tail = log.check_tail(stream).seq_num
    records: list[SequencedRecord] = []
    while len(records) < tail:
        batch = log.read(stream, seq_num=len(records), clamp=True).records
        assert batch, f"{stream!r}: reading at {len(records)} of {tail} returned nothing"
        records.extend(batch)
    return records


def read_log(log: Log, stream: str, *, foreign: bool = False) -> Logged:
    """The stream's log, checked against the documented layout (``foreign``: written by the TS package)."""
    records = all_records(log, stream)
    out = Logged(stream, tail=len(records))
    kinds: set[str] = set()
    for index, record in enumerate(records):
        where = f"{stream!r} record {index}"
        assert record.seq_num == index, f"{where}: sequence number {record.seq_num}"
        assert out.terminal is None, f"{where}: a record after the terminal fence {out.terminal!r}"
        if record.headers == FENCE:
            token = record.body.decode("utf-8")
            state = terminal_state(token)
            if state is not None:
                out.terminal, out.state = token, state
            elif index == 0 and token.startswith("session-"):
                out.claim = token
            else:
                raise AssertionError(f"{where}: unexpected fence {token!r}")
            continue
        assert index > 0, f"{where}: the first record is not a claim"
        if record.body:
            assert record.headers in ((), BYTES), f"{where}: data with headers {record.headers!r}"
            kind = "bytes" if record.headers else "text"
            kinds.add(kind)
            assert len(kinds) == 1, f"{where}: a stream of both text and bytes"
            chunk: Chunk = record.body if kind == "bytes" else record.body.decode("utf-8")  # strict: valid UTF-8
            out.events.append((record.seq_num, chunk))
        elif record.headers == HEARTBEAT:
            out.heartbeats += 1
        elif record.headers[:1] == ((b"rs", b"error"),):
            assert dict(record.headers).keys() == {b"rs", b"rs-message"}, f"{where}: {record.headers!r}"
            out.error = dict(record.headers)[b"rs-message"].decode("utf-8")
        elif foreign:
            out.others += 1
        else:
            raise AssertionError(f"{where}: unexpected record {record!r}")
    if out.error is not None:
        assert out.state == "failed" and records[-2].headers[:1] == ((b"rs", b"error"),), \
            f"{stream!r}: a failure message not right before an error- fence"
    return out


def mismatch(name: str, got: Sequence[Event], expected: Sequence[Event]) -> str | None:
    """A description of how a reader's events differ from the log's, or ``None`` when they are exact."""
    if list(got) == list(expected):
        return None
    seqs = [seq for seq, _ in got]
    doubled = len(seqs) - len(set(seqs))
    missing = len({seq for seq, _ in expected} - set(seqs))
    extra = len(set(seqs) - {seq for seq, _ in expected})
    first = next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
                 min(len(got), len(expected)))
    ours = got[first] if first < len(got) else None
    theirs = expected[first] if first < len(expected) else None
    return (f"{name}: {len(got)} events, the log has {len(expected)}; {doubled} doubled, {missing} missing, "
            f"{extra} not on the log, first difference at #{first}: {ours!r:.80} vs {theirs!r:.80}")


def assert_exact(name: str, got: Sequence[Event], expected: Sequence[Event]) -> None:
    problem = mismatch(name, got, expected)
    assert problem is None, problem


def creator_extras(name: str, got: Sequence[Event], logged: Logged) -> list[Event]:
    """The creator's events beyond the log's: asserts that the others are exactly the log's, and returns them.

    The creator must have been given every chunk the log holds, with the log's cursors; beyond those it
    may only have been shown chunks the log never took, with increasing cursors past the log's last chunk.
    """
    held = len(logged.events)
    assert_exact(name, got[:held], logged.events)
    extras = list(got[held:])
    seqs = [seq for seq, _ in extras]
    last = logged.events[-1][0] if logged.events else 0
    assert all(a < b for a, b in zip([last, *seqs], seqs, strict=False)), \
        f"{name}: chunks beyond the log at cursors {seqs[:5]}..., after the log's last chunk at {last}"
    return extras


def decoded(events: Sequence[Event]) -> list[tuple[int, Any]]:
    """Events as JSON can carry them (bytes as a list of ints is too long: hex)."""
    return [(seq, chunk.hex() if isinstance(chunk, bytes) else chunk) for seq, chunk in events]
