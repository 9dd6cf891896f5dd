"""MemoryLog and MemoryStream beyond the Log interface: read sessions and S2's `wait` rules, timestamps, closing."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from resumable_stream import (
    BadRequest,
    ConfigurationError,
    MemoryLog,
    NotFound,
    RangeNotSatisfiable,
    Record,
    ResumableStreamContext,
    Unavailable,
)
from resumable_stream.log import ReadBatch, ReadSession, StreamPosition
from resumable_stream.memory_stream import MemoryStream

from .support import run_racing


def kinds(items: Iterator[ReadBatch | StreamPosition]) -> list[str]:
    return ["batch" if isinstance(item, ReadBatch) else "ping" for item in items]


@pytest.fixture
def log() -> Iterator[MemoryLog]:
    memory = MemoryLog(heartbeat_interval=0.1)
    memory.append("s", [Record(b"a"), Record(b"b")])
    yield memory
    memory.close()


# S2's `wait` in a session bounds the time between records once at the tail; a regression test per case.


def test_a_session_with_wait_0_ends_at_the_tail(log: MemoryLog) -> None:
    assert kinds(log.read_session("s", seq_num=0, wait=0)) == ["batch"]
    assert kinds(log.read_session("s", seq_num=2, wait=0)) == []  # at the tail: nothing, no 416 (it may follow)


def test_a_bounded_session_without_wait_ends_at_the_tail_and_may_not_start_there(log: MemoryLog) -> None:
    assert kinds(log.read_session("s", seq_num=0, count=10)) == ["batch"]
    with pytest.raises(RangeNotSatisfiable):
        next(log.read_session("s", seq_num=2, count=10))


def test_a_session_with_wait_ends_after_that_long_without_records(log: MemoryLog) -> None:
    started = time.monotonic()
    got = kinds(log.read_session("s", seq_num=0, wait=1))
    assert 0.9 < time.monotonic() - started < 3
    assert got[0] == "batch" and set(got[1:]) == {"ping"} and len(got) >= 3  # heartbeats while idle


def test_an_unbounded_session_without_wait_follows_until_closed(log: MemoryLog) -> None:
    session = log.read_session("s", seq_num=2)
    assert isinstance(next(session), StreamPosition)  # caught up at once
    threading.Timer(0.3, lambda: log.append("s", [Record(b"live")])).start()
    items = [next(session) for _ in range(4)]
    batches = [item for item in items if isinstance(item, ReadBatch)]
    assert [r.body for b in batches for r in b.records] == [b"live"]  # heartbeats before it, and it follows on
    log.close()
    with pytest.raises(Unavailable):
        for _ in session:
            pass


def test_a_record_resets_the_wait(log: MemoryLog) -> None:
    for delay in (0.4, 0.8):
        threading.Timer(delay, lambda: log.append("s", [Record(b"x")])).start()
    started = time.monotonic()
    got = [item for item in log.read_session("s", seq_num=2, wait=1) if isinstance(item, ReadBatch)]
    assert len(got) == 2 and time.monotonic() - started > 1.5


def test_unary_reads_long_poll_only_with_a_wait(log: MemoryLog) -> None:
    with pytest.raises(RangeNotSatisfiable):
        log.read("s", seq_num=2, wait=0)
    assert log.read("s", seq_num=2, wait=1).records == ()  # an empty batch once the wait ends
    assert [r.body for r in log.read("s", seq_num=0, wait=5).records] == [b"a", b"b"]  # before the tail: at once


def test_a_session_stops_at_its_byte_limit_even_when_the_next_record_does_not_fit(log: MemoryLog) -> None:
    assert kinds(log.read_session("s", seq_num=0, bytes=3)) == []
    assert kinds(log.read_session("s", seq_num=0, bytes=9)) == ["batch"]


# -- the rest --------------------------------------------------------------------


def test_timestamps_follow_the_stream_mode() -> None:
    stream = MemoryStream("t")
    future = int(time.time() * 1000) + 3_600_000
    stamps = [stream.append([Record(b"x", timestamp=t)]).start.timestamp for t in (5, 3, future)]
    assert stamps[0] == 5 and stamps[1] == 5  # monotonic
    assert stamps[2] < future  # capped at arrival time
    stream.timestamping = ("client-prefer", True)
    assert stream.append([Record(b"x", timestamp=future)]).start.timestamp == future
    stream.timestamping = ("arrival", False)
    assert stream.append([Record(b"x", timestamp=5)]).start.timestamp >= future
    stream.timestamping = ("client-require", False)
    with pytest.raises(BadRequest, match="timestamp was required"):
        stream.append([Record(b"no timestamp")])


def test_a_persist_hook_that_fails_leaves_the_stream_unchanged() -> None:
    def refuse(*args: object) -> None:
        raise OSError("disk full")

    stream = MemoryStream("p", persist=refuse)
    with pytest.raises(OSError):
        stream.append([Record.fence("t"), Record(b"x")])
    assert stream.check_tail() == StreamPosition(0, 0) and stream.fencing_token == ""


def test_streams_of_a_log_do_not_share_a_lock() -> None:
    release = threading.Event()

    def slow(*args: object) -> None:
        release.wait(10)

    slow_stream = MemoryStream("slow", persist=slow)
    writer = threading.Thread(target=lambda: slow_stream.append([Record(b"x")]))
    writer.start()
    try:
        log = MemoryLog()
        for name in ("a", "b"):  # another stream, and the log, go on while that append holds its stream
            log.append(name, [Record(b"y")])
        assert log.read("a", seq_num=0).records[0].body == b"y" and len(log) == 2
    finally:
        release.set()
        writer.join(10)
    assert slow_stream.check_tail().seq_num == 1


def test_closing_ends_long_polls_and_refuses_more_work() -> None:
    log = MemoryLog()
    log.append("s", [Record(b"x")])
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            log.read("s", seq_num=1, wait=30)
        except Unavailable as exc:
            errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    log.close()
    poller.join(timeout=5)
    assert not poller.is_alive() and len(errors) == 1
    with pytest.raises(Unavailable):
        log.append("s", [Record(b"y")])
    with pytest.raises(Unavailable):
        log.append("new", [Record(b"y")])


def test_streams_are_created_only_as_configured() -> None:
    log = MemoryLog(create_stream_on_append=False, create_stream_on_read=False)
    with pytest.raises(NotFound):
        log.append("s", [Record(b"x")])
    with pytest.raises(NotFound):
        log.check_tail("s")
    log.ensure_stream("s")
    assert log.append("s", [Record(b"x")]).end.seq_num == 1


def test_a_long_fencing_token_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as info:
        MemoryLog().append("s", [Record(b"x")], fencing_token="t" * 37)
    assert info.value.status == 400


# Retention: a stream idle for `retention` seconds, with no read open on it, is forgotten whole.


def test_a_stream_idle_for_the_retention_is_forgotten_whole_and_a_busy_one_is_kept_whole() -> None:
    log = MemoryLog(retention=0.3)
    log.append("old", [Record(b"a"), Record(b"b")])
    log.append("kept", [Record(b"1")])
    time.sleep(0.2)
    log.append("kept", [Record(b"2")])
    time.sleep(0.15)  # "old" has been idle past the retention; "kept" was appended to within it
    log.check_tail("kept")  # a call finds the sweep due: it runs on this thread
    assert len(log) == 1
    batch = log.read("kept", seq_num=0)
    assert [r.body for r in batch.records] == [b"1", b"2"]  # all of it, its older record too
    assert log.check_tail("old").seq_num == 0  # forgotten: the id names a new, empty stream
    strict = MemoryLog(retention=0.05, create_stream_on_read=False)
    strict.append("gone", [Record(b"x")])
    time.sleep(0.1)
    with pytest.raises(NotFound):
        strict.read("gone", seq_num=0)
    log.close()
    strict.close()


def test_a_stream_with_a_read_session_open_is_not_forgotten_waiting_or_not() -> None:
    # Open before its first item, parked between two items, or waiting at the tail: each keeps its
    # stream, and sees what is appended to it after the retention (nothing raises NotFound).
    log = MemoryLog(retention=0.1, heartbeat_interval=0.05)
    for name in ("unstarted", "parked", "waiting"):
        log.append(name, [Record(b"a")])
    unstarted = log.read_session("unstarted", seq_num=1)
    parked = log.read_session("parked", seq_num=1)
    assert isinstance(next(parked), StreamPosition)  # caught up; not in next() while the sweep runs
    waiting = log.read_session("waiting", seq_num=1)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(r.body for b in waiting if isinstance(b, ReadBatch)
                                                        for r in b.records), daemon=True)
    reader.start()
    time.sleep(0.3)
    log.check_tail("other")  # sweeps: all three are idle, but a session is open on each
    assert len(log) == 4
    for name in ("unstarted", "parked", "waiting"):
        log.append(name, [Record(b"b")])
    for session in (unstarted, parked):
        item = next(session)
        while not isinstance(item, ReadBatch):  # heartbeats first, while it was idle
            item = next(session)
        assert [r.body for r in item.records] == [b"b"]
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == [b"b"]
    for session in (unstarted, parked, waiting):
        session.close()
    reader.join(5)
    time.sleep(0.3)
    log.check_tail("other")  # closed: nothing holds them now
    assert len(log) == 1
    log.close()


def test_a_session_dropped_unread_holds_its_stream_no_longer() -> None:
    log = MemoryLog(retention=0.05)
    log.append("s", [Record(b"a")])
    log.read_session("s", seq_num=0)  # never read, never closed: dropped
    time.sleep(0.15)
    log.check_tail("other")
    assert len(log) == 1
    log.close()


def test_calls_racing_the_sweep_never_see_a_forgotten_stream() -> None:
    # Calls on a few ids while the sweep forgets them over and over (threads switched as often as
    # CPython allows): a call that looked a stream up just before the sweep deleted it is served by
    # the stream that replaces it, never refused with NotFound.
    log = MemoryLog(retention=0.001)  # each id goes idle that long between two workers' calls on it
    errors: list[BaseException] = []

    def call(worker: int) -> None:
        try:
            for i in range(2000):
                name = f"s{i % 20}"
                log.append(name, [Record(b"%d-%d" % (worker, i))])
                log.check_tail(name)
        except BaseException as exc:
            errors.append(exc)

    run_racing([threading.Thread(target=call, args=(w,)) for w in range(4)])
    assert errors == []
    log.close()


def test_retention_must_be_positive_and_finite_or_none() -> None:
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="retention"):
            MemoryLog(retention=bad)
    MemoryLog(retention=None).close()
    assert MemoryLog().retention == 24 * 3600


def test_a_finished_stream_is_forgotten_after_the_retention_and_its_id_can_be_used_again() -> None:
    log = MemoryLog(retention=1.0)
    ctx = ResumableStreamContext(log, abandon_after=1.0)
    try:
        assert "".join(ctx.create_new_resumable_stream("chat", lambda: iter(["a", "b"]))) == "ab"
        assert "".join(ctx.resume_existing_stream("chat", after=0) or ()) == "ab"
        time.sleep(1.1)
        assert ctx.resume_existing_stream("chat") is None  # this call's sweep forgot it
        assert log.check_tail("chat").seq_num == 0  # its records and their tail are gone with it
        assert "".join(ctx.create_new_resumable_stream("chat", lambda: iter(["c"]))) == "c"
    finally:
        ctx.close()
        log.close()


def test_a_live_producer_whose_source_is_quiet_keeps_its_stream() -> None:
    # Its heartbeats (a third of abandon_after apart) are appends: with a retention no shorter than
    # abandon_after, a source silent for twice the retention loses nothing.
    def quiet() -> Iterator[str]:
        yield "a"
        time.sleep(2.2)
        yield "b"

    log = MemoryLog(retention=1.0)
    ctx = ResumableStreamContext(log, abandon_after=1.0)
    try:
        assert "".join(ctx.create_new_resumable_stream("quiet", quiet) or ()) == "ab"
        assert "".join(ctx.resume_existing_stream("quiet", after=0) or ()) == "ab"
    finally:
        ctx.close()
        log.close()


def test_a_context_refuses_a_memory_log_that_forgets_sooner_than_it_judges_silence() -> None:
    log = MemoryLog(retention=5)
    with pytest.raises(ConfigurationError, match="retention"):
        ResumableStreamContext(log, abandon_after=30)
    ResumableStreamContext(log, abandon_after=5).close()
    log.close()


def test_a_session_dropped_in_a_reference_cycle_never_hangs_the_thread_whose_collection_closes_it() -> None:
    # The cyclic collector runs such a session's `finally: session.close()` on whichever thread allocates,
    # the appender's included, inside the stream's lock: the close must not wait for that lock forever.
    log = MemoryLog()
    log.append("s", [Record(b"a")])
    stop = threading.Event()
    appends = [0]

    def consumer(session: ReadSession, box: list[object]) -> Iterator[object]:
        try:
            yield from session
        finally:
            session.close()

    def garbage() -> None:
        while not stop.is_set():
            box: list[object] = []
            items = consumer(log.read_session("s", tail_offset=1), box)
            box.append(items)
            next(items)
            del items, box

    def appender() -> None:
        while not stop.is_set():
            log.append("s", [Record(b"x")] * 20)
            appends[0] += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (garbage, appender)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(8):
            before = appends[0]
            time.sleep(0.25)
            assert appends[0] > before, "the appender hung: a collection inside its lock closed a session"
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    log.close()
