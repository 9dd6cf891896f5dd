"""One semantic suite for both logs: MemoryLog in-process, and S2Client over HTTP to the local server.

Whatever S2 does, both must do the same; a difference here is a bug in one of them.
"""

from __future__ import annotations

import threading
import time

import pytest

from resumable_stream import (
    FencingTokenMismatch,
    NotFound,
    RangeNotSatisfiable,
    Record,
    SeqNumMismatch,
)
from resumable_stream.log import MAX_BATCH_BYTES, Log, ReadBatch, TextBatch, split_batches


def bodies(log: Log, stream: str, **kwargs: object) -> list[bytes]:
    return [r.body for r in log.read(stream, **kwargs).records]  # type: ignore[arg-type]


def test_sequence_numbers_start_at_zero_and_acks_describe_the_batch(log: Log, stream_name: str) -> None:
    ack = log.append(stream_name, [Record(b"a"), Record(b"b")])
    assert (ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num) == (0, 2, 2)
    ack = log.append(stream_name, [Record(b"c")])
    assert (ack.start.seq_num, ack.end.seq_num) == (2, 3)
    assert ack.start.timestamp <= ack.end.timestamp
    tail = log.check_tail(stream_name)
    assert tail.seq_num == 3 and tail.timestamp == ack.end.timestamp
    assert bodies(log, stream_name, seq_num=0) == [b"a", b"b", b"c"]


def test_bodies_and_headers_round_trip_exactly(log: Log, stream_name: str) -> None:
    records = [
        Record("héllo ✓".encode()),
        Record(b"\xff\x00\xfe binary", ((b"k\xff", b"\x00v"),)),
        Record(b"", ((b"only", b"headers"),)),
        Record(b"two", ((b"a", b"1"), (b"b", b""))),
    ]
    log.append(stream_name, records)
    got = log.read(stream_name, seq_num=0).records
    assert [(r.body, r.headers) for r in got] == [(r.body, r.headers) for r in records]
    assert [r.seq_num for r in got] == [0, 1, 2, 3]


@pytest.mark.parametrize("text", [False, True])
def test_batches_of_one_shape_read_back_exactly(log: Log, stream_name: str, text: bool) -> None:
    # A batch of plain bodies only (the client's fast path), then one of headers only: its records have
    # as many fields as plain ones.
    plain = [Record(f"token {i}".encode()) for i in range(5)]
    headers_only = [Record(b"", ((b"k", f"v{i}".encode()),)) for i in range(3)]
    log.append(stream_name, plain)
    log.append(stream_name, headers_only)
    expected = [(r.body, r.headers) for r in plain + headers_only]
    read = [(r.body, r.headers) for r in log.read(stream_name, seq_num=0).records]
    session = log.read_session(stream_name, seq_num=0, count=8, text=text)
    followed = [(r.body, r.headers) for batch in session if isinstance(batch, (ReadBatch, TextBatch))
                for r in batch.records]
    assert read == followed == expected


def test_a_text_session_reads_plain_text_records_as_they_were_written(log: Log, stream_name: str) -> None:
    # Whatever shape a text session gives its batches (over HTTP, a batch of plain text records comes as
    # a TextBatch), their records are the ones a read returns, timestamps included.
    log.append(stream_name, [Record(f"token {i} ✓".encode()) for i in range(300)])
    read = log.read(stream_name, seq_num=0).records
    session = log.read_session(stream_name, seq_num=0, count=300, text=True)
    followed = [r for batch in session if isinstance(batch, (ReadBatch, TextBatch)) for r in batch.records]
    assert followed == list(read)


@pytest.mark.parametrize("text", ['quo"te, back\\slash, sl/ash', "tab\tnew\nline\x00\x1f\x7f", "\u2028\u2029 😀 ünï",
                                  "\x01" * 300])
def test_plain_text_of_any_characters_round_trips_exactly(log: Log, stream_name: str, text: str) -> None:
    # Over HTTP a batch of plain records is written out by hand, as raw JSON (or base64 when escaping the
    # control characters would make it larger): whatever the characters, the bytes come back.
    records = [Record(f"{text} {i}".encode()) for i in range(50)]
    log.append(stream_name, records, match_seq_num=0, fencing_token="")
    assert bodies(log, stream_name, seq_num=0) == [r.body for r in records]


def test_bodies_may_be_any_bytes_like_object(log: Log, stream_name: str) -> None:
    records = [Record(bytearray(b"text")), Record(memoryview(b"more")), Record(bytearray(b"\xff"))]  # type: ignore[arg-type]
    log.append(stream_name, records)
    assert [r.body for r in log.read(stream_name, seq_num=0).records] == [b"text", b"more", b"\xff"]


def test_an_empty_list_of_records_is_no_batch() -> None:
    assert split_batches([]) == []


def test_fencing_absent_token_is_never_checked(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record.fence("writer-1")])
    log.append(stream_name, [Record(b"unfenced")])  # cooperative fencing: no token, no check
    assert log.check_tail(stream_name).seq_num == 2


def test_fencing_empty_token_means_not_fenced(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"x")], fencing_token="")
    log.append(stream_name, [Record.fence("writer-1")], fencing_token="")
    with pytest.raises(FencingTokenMismatch) as info:
        log.append(stream_name, [Record(b"y")], fencing_token="")
    assert info.value.current_token == "writer-1"
    log.append(stream_name, [Record.fence("")], fencing_token="writer-1")  # clears the fence
    log.append(stream_name, [Record(b"z")], fencing_token="")


def test_fence_takes_effect_for_the_next_batch(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record.fence("a")])
    # The check happens once per batch, before the batch's own fence applies.
    log.append(stream_name, [Record.fence("b"), Record(b"still a's batch")], fencing_token="a")
    with pytest.raises(FencingTokenMismatch) as info:
        log.append(stream_name, [Record(b"late")], fencing_token="a")
    assert info.value.current_token == "b"
    log.append(stream_name, [Record(b"ok")], fencing_token="b")


def test_match_seq_num_and_fencing_checked_fencing_first(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record.fence("t")])
    with pytest.raises(SeqNumMismatch) as info:
        log.append(stream_name, [Record(b"x")], match_seq_num=5, fencing_token="t")
    assert info.value.next_seq_num == 1
    with pytest.raises(FencingTokenMismatch):
        log.append(stream_name, [Record(b"x")], match_seq_num=5, fencing_token="wrong")
    ack = log.append(stream_name, [Record(b"x")], match_seq_num=1, fencing_token="t")
    assert ack.start.seq_num == 1
    assert log.check_tail(stream_name).seq_num == 2


def test_trim_command_hides_earlier_records(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"0"), Record(b"1"), Record(b"2")])
    log.append(stream_name, [Record.trim(2)])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and bodies(log, stream_name, seq_num=0)[:1] != [b"2"]:
        time.sleep(0.05)  # S2 may trim in the background
    records = log.read(stream_name, seq_num=0).records
    assert [r.seq_num for r in records] == [2, 3]
    assert records[1].command == "trim"


def test_read_limits_and_start_positions(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(bytes([65 + i]) * 10) for i in range(10)])
    assert [r.seq_num for r in log.read(stream_name, seq_num=3, count=2).records] == [3, 4]
    assert [r.seq_num for r in log.read(stream_name, tail_offset=3).records] == [7, 8, 9]
    assert [r.seq_num for r in log.read(stream_name, tail_offset=50).records][:1] == [0]
    # Each record meters 8 + 10 = 18 bytes: 40 bytes hold two of them.
    assert [r.seq_num for r in log.read(stream_name, seq_num=0, bytes=40).records] == [0, 1]


def test_reads_beyond_the_tail_or_at_it_without_waiting_are_416(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"a")])
    with pytest.raises(RangeNotSatisfiable) as info:
        log.read(stream_name, seq_num=5)
    assert info.value.tail.seq_num == 1
    with pytest.raises(RangeNotSatisfiable):
        log.read(stream_name, seq_num=1)  # at the tail, no wait
    with pytest.raises(RangeNotSatisfiable):
        log.read(stream_name)  # no start: the tail
    assert log.read(stream_name, seq_num=5, clamp=True, wait=1).records == ()


def test_long_poll_returns_as_soon_as_records_land(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"first")])
    timer = threading.Timer(0.3, lambda: log.append(stream_name, [Record(b"second")]))
    timer.start()
    started = time.monotonic()
    batch = log.read(stream_name, seq_num=1, wait=20)
    elapsed = time.monotonic() - started
    timer.join()
    assert [r.body for r in batch.records] == [b"second"]
    assert batch.tail is not None and batch.tail.seq_num == 2
    assert elapsed < 10, "the long-poll should end when the record lands, not when the wait does"


def test_long_poll_ends_empty_when_nothing_arrives(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"only")])
    started = time.monotonic()
    assert log.read(stream_name, seq_num=1, wait=1).records == ()
    assert time.monotonic() - started >= 0.9


def test_a_read_before_the_tail_does_not_wait(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"a")])
    started = time.monotonic()
    assert bodies(log, stream_name, seq_num=0, wait=30) == [b"a"]
    assert time.monotonic() - started < 10


def test_large_appends_are_split_into_valid_batches(log: Log, stream_name: str) -> None:
    records = [Record(str(i).encode()) for i in range(2500)]
    ack = log.append(stream_name, records, match_seq_num=0)
    assert (ack.start.seq_num, ack.end.seq_num) == (0, 2500)
    big = Record(b"x" * (MAX_BATCH_BYTES // 2))
    ack = log.append(stream_name, [big, big, big])  # 1.5 MiB: more than one batch
    assert ack.end.seq_num == 2503
    got = []
    position = 0
    while position < 2503:
        batch = log.read(stream_name, seq_num=position)
        got.extend(batch.records)
        position = batch.records[-1].seq_num + 1
    assert [r.body for r in got[:2500]] == [r.body for r in records]
    assert [len(r.body) for r in got[2500:]] == [MAX_BATCH_BYTES // 2] * 3


@pytest.mark.parametrize("text", [False, True])
def test_a_read_session_carries_batches_near_the_byte_limit_whole(log: Log, stream_name: str, text: bool) -> None:
    # Over HTTP each batch is one event whose data line (~1 MiB of JSON, more as base64) takes many
    # socket reads; bodies of two-byte characters let a read end inside a character.
    piece = ("é" * 80_000 + "x").encode()
    records = [Record(piece + str(i).encode()) for i in range(20)]  # about 3 MiB: three batches or more
    log.append(stream_name, records)
    session = log.read_session(stream_name, seq_num=0, count=len(records), text=text)
    batches = [batch for batch in session if isinstance(batch, (ReadBatch, TextBatch))]
    assert len(batches) >= 3
    assert [r.body for batch in batches for r in batch.records] == [r.body for r in records]


def test_a_record_over_one_mib_is_refused_before_anything_is_written(log: Log, stream_name: str) -> None:
    with pytest.raises(ValueError, match="1 MiB"):
        log.append(stream_name, [Record(b"ok"), Record(b"x" * MAX_BATCH_BYTES)])
    with pytest.raises((NotFound, RangeNotSatisfiable)):
        log.read(stream_name, seq_num=0)


@pytest.mark.parametrize("name", ["a/b", "q?x=1#frag", "100%", "with space", "ünï©ødé ✓", "x" * 512, "..a", ".hidden"])
def test_any_valid_stream_name_works(log: Log, name: str) -> None:
    log.append(name, [Record(name.encode())])
    assert bodies(log, name, seq_num=0)[-1] == name.encode()


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 513, "é" * 257])
def test_invalid_stream_names_are_refused(log: Log, name: str) -> None:
    with pytest.raises(ValueError):
        log.append(name, [Record(b"x")])
    with pytest.raises(ValueError):
        log.read(name, seq_num=0)


def test_racing_conditional_fences_have_exactly_one_winner(log: Log, stream_name: str) -> None:
    winners: list[str] = []
    losers: list[str] = []
    barrier = threading.Barrier(8)

    def claim(token: str) -> None:
        barrier.wait(timeout=10)
        try:
            log.append(stream_name, [Record.fence(token)], fencing_token="", match_seq_num=0)
            winners.append(token)
        except FencingTokenMismatch as exc:
            losers.append(exc.current_token)

    threads = [threading.Thread(target=claim, args=(f"session-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1
    assert losers == [winners[0]] * 7


def test_missing_streams_are_not_found_unless_the_basin_creates_them(strict_log: Log, stream_name: str) -> None:
    with pytest.raises(NotFound):
        strict_log.append(stream_name, [Record(b"x")])
    with pytest.raises(NotFound):
        strict_log.read(stream_name, seq_num=0)
    with pytest.raises(NotFound):
        strict_log.check_tail(stream_name)
    strict_log.ensure_stream(stream_name)
    strict_log.ensure_stream(stream_name)  # idempotent
    assert strict_log.check_tail(stream_name).seq_num == 0
    strict_log.append(stream_name, [Record(b"x")])
    assert bodies(strict_log, stream_name, seq_num=0) == [b"x"]


def test_streams_are_created_on_first_use_by_default(log: Log, stream_name: str) -> None:
    assert log.check_tail(stream_name).seq_num == 0
    assert log.read(stream_name, seq_num=0, wait=1).records == ()
