"""The engine, on both logs: create, resume, stop, outcomes, cursors, bounded memory.

Multi-process behaviour (concurrent creators, SIGKILLed producers, stop from
another process) is in test_processes.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from resumable_stream import (
    MemoryLog,
    NotFound,
    PermissionDenied,
    Record,
    ResumableStreamContext,
    ResumableStreamError,
    StreamAbandoned,
    StreamFailed,
    StreamState,
    Unavailable,
)
from resumable_stream.chunks import MAX_CHUNK_BYTES as _MAX_CHUNK_BYTES
from resumable_stream.log import MAX_BATCH_BYTES, Log
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY, Gate, run_to_end


@pytest.fixture
def ctx(log: Log) -> Iterator[ResumableStreamContext]:
    context = ResumableStreamContext(log, abandon_after=3, stop_timeout=5)
    yield context
    context.close(timeout=5)


def tokens(n: int, delay: float = 0.0, prefix: str = "tok") -> Callable[[], Iterator[str]]:
    def make() -> Iterator[str]:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield f"{prefix}{i} "

    return make


def text(n: int, prefix: str = "tok") -> str:
    return "".join(f"{prefix}{i} " for i in range(n))


def test_creator_and_resumer_see_the_same_chunks_and_cursors(ctx: ResumableStreamContext, stream_name: str) -> None:
    live = ctx.create_new_resumable_stream(stream_name, tokens(20, 0.01))
    assert live is not None
    resumed = ctx.resume_existing_stream(stream_name)
    assert resumed is not None
    live_events = list(live.events())
    resumed_events = list(resumed.events())
    assert [chunk for _, chunk in live_events] == [f"tok{i} " for i in range(20)]
    assert resumed_events == live_events  # byte-identical, same cursors
    assert live.status == resumed.status
    assert live.status is not None and live.status.state is StreamState.COMPLETED
    assert ctx.stream_status(stream_name) == live.status


def test_resume_after_every_cursor_delivers_exactly_the_rest(ctx: ResumableStreamContext, stream_name: str) -> None:
    live = ctx.create_new_resumable_stream(stream_name, tokens(12))
    assert live is not None
    events = list(live.events())
    for index, (cursor, _) in enumerate(events):
        reader = ctx.resume_existing_stream(stream_name, after=cursor)
        expected = [chunk for _, chunk in events[index + 1 :]]
        if not expected:
            # Nothing but the end is left: the reader still sees the terminal record once.
            assert reader is not None
        assert reader is not None
        assert list(reader) == expected
    assert live.status is not None
    end_cursor = str(live.status.tail - 1)
    assert ctx.resume_existing_stream(stream_name, after=end_cursor) is None
    assert ctx.resume_existing_stream(stream_name, after=int(end_cursor) + 5) is None


def test_a_reader_joining_mid_stream_replays_then_follows(ctx: ResumableStreamContext, stream_name: str) -> None:
    gate = Gate(["before "], ["after"])
    live = ctx.create_new_resumable_stream(stream_name, gate)
    assert live is not None
    assert next(live) == "before "
    reader = ctx.resume_existing_stream(stream_name)
    assert reader is not None
    assert next(reader) == "before "
    gate.open()
    assert list(reader) == ["after"]
    assert list(live) == ["after"]


@pytest.mark.parametrize("reader_of", ["creator", "resumer"])
def test_every_way_of_reading_one_reader_shares_its_position(ctx: ResumableStreamContext, stream_name: str,
                                                             reader_of: str) -> None:
    live = ctx.create_new_resumable_stream(stream_name, tokens(40, 0.002))
    assert live is not None
    reader = live if reader_of == "creator" else ctx.resume_existing_stream(stream_name, after=0)
    assert reader is not None
    got = []
    for chunk in reader:  # a for loop that breaks off, then every other way of reading, in turn
        got.append(chunk)
        if len(got) == 5:
            break
    got.append(next(reader))
    event = reader.next_event(timeout=10)
    assert event is not None
    got.append(event[1])
    cursors = []
    for cursor, chunk in reader.events():
        cursors.append(cursor)
        got.append(chunk)
        if len(got) == 20:
            break
    assert cursors[-1] == "20"
    got.extend(reader)
    assert got == [f"tok{i} " for i in range(40)]
    if reader is not live:
        list(live)


def test_finished_streams_are_not_recreated_or_resumed_without_a_cursor(
    ctx: ResumableStreamContext, stream_name: str
) -> None:
    calls = []
    live = ctx.create_new_resumable_stream(stream_name, tokens(3))
    assert live is not None
    assert "".join(live) == text(3)

    def again() -> Iterator[str]:
        calls.append(1)
        yield "never"

    assert ctx.create_new_resumable_stream(stream_name, again) is None
    assert ctx.resumable_stream(stream_name, again) is None
    assert ctx.resume_existing_stream(stream_name) is None
    assert calls == []
    assert ctx.has_existing_stream(stream_name) == "DONE"


def test_unknown_streams(ctx: ResumableStreamContext, stream_name: str) -> None:
    assert ctx.resume_existing_stream(stream_name) is None
    assert ctx.resume_existing_stream(stream_name, after="3") is None
    assert ctx.has_existing_stream(stream_name) is None
    status = ctx.stream_status(stream_name)
    assert status.state is StreamState.MISSING and status.tail == 0 and not status.done


def test_racing_creators_run_the_source_exactly_once(ctx: ResumableStreamContext, stream_name: str) -> None:
    calls: list[int] = []
    results: list[str] = []
    barrier = threading.Barrier(6)

    def make() -> Iterator[str]:
        calls.append(1)
        yield from tokens(10, 0.01)()

    def create() -> None:
        barrier.wait(timeout=10)
        stream = ctx.resumable_stream(stream_name, make)
        assert stream is not None
        results.append("".join(stream))

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert calls == [1]
    assert results == [text(10)] * 6


def test_has_existing_stream_while_running(ctx: ResumableStreamContext, stream_name: str) -> None:
    gate = Gate(["x"])
    live = ctx.create_new_resumable_stream(stream_name, gate)
    assert live is not None
    assert next(live) == "x"
    assert ctx.has_existing_stream(stream_name) is True
    assert ctx.stream_status(stream_name).state is StreamState.ACTIVE
    gate.open()
    assert list(live) == []
    assert ctx.has_existing_stream(stream_name) == "DONE"


def test_a_failing_source_fails_the_stream_for_everyone(ctx: ResumableStreamContext, stream_name: str) -> None:
    class Boom(Exception):
        pass

    def make() -> Iterator[str]:
        yield "partial "
        raise Boom("the model went away")

    live = ctx.create_new_resumable_stream(stream_name, make)
    assert live is not None
    got = []
    with pytest.raises(Boom, match="the model went away"):
        for chunk in live:
            got.append(chunk)
    assert got == ["partial "]
    assert live.status is not None and live.status.state is StreamState.FAILED

    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    got = []
    with pytest.raises(StreamFailed) as info:
        for chunk in reader:
            got.append(chunk)
    assert got == ["partial "]
    assert info.value.message == "Boom: the model went away"
    assert info.value.stream_id == stream_name
    status = ctx.stream_status(stream_name)
    assert status.state is StreamState.FAILED and status.error == "Boom: the model went away"
    assert reader.status == status


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: iter(["ok", 42]), "yielded int"),
        (lambda: iter(["text", b"bytes"]), "yielded bytes after str"),
        (lambda: iter([b"bytes", "text"]), "yielded str after bytes"),
        (lambda: 42, "make_stream must be an iterable"),
        ("not a stream", "make_stream must be an iterable"),
    ],
)
def test_bad_sources_fail_the_stream_with_a_clear_type_error(
    ctx: ResumableStreamContext, stream_name: str, make: Any, message: str
) -> None:
    live = ctx.create_new_resumable_stream(stream_name, make)
    assert live is not None
    with pytest.raises(TypeError, match=message):
        list(live)
    status = ctx.stream_status(stream_name)
    assert status.state is StreamState.FAILED
    assert status.error is not None and status.error.startswith("TypeError") and message in status.error


def test_bytes_sources_stay_bytes(ctx: ResumableStreamContext, stream_name: str) -> None:
    chunks = [b"\x00\xff\xfe", bytearray(b"arr"), memoryview(b"view"), "é".encode()]
    live = ctx.create_new_resumable_stream(stream_name, lambda: iter(chunks))
    assert live is not None
    assert list(live) == [b"\x00\xff\xfe", b"arr", b"view", "é".encode()]
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert list(reader) == [b"\x00\xff\xfe", b"arr", b"view", "é".encode()]


def test_empty_chunks_are_skipped(ctx: ResumableStreamContext, stream_name: str) -> None:
    live = ctx.create_new_resumable_stream(stream_name, lambda: iter(["", "a", "", "b", ""]))
    assert live is not None
    assert list(live) == ["a", "b"]
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert list(reader) == ["a", "b"]


def test_chunks_over_the_record_limit_are_split_transparently(ctx: ResumableStreamContext, stream_name: str) -> None:
    big_text = ("ab✓" * (MAX_BATCH_BYTES // 2))[: MAX_BATCH_BYTES]  # multi-byte characters across the cut
    live = ctx.create_new_resumable_stream(stream_name, lambda: iter(["start ", big_text, " end"]))
    assert live is not None
    live_chunks = list(live)
    assert "".join(live_chunks) == "start " + big_text + " end"
    assert len(live_chunks) > 3
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert list(reader) == live_chunks

    big_bytes = bytes(range(256)) * (MAX_BATCH_BYTES // 100)
    other = stream_name + "-bytes"
    live_b = ctx.create_new_resumable_stream(other, lambda: iter([big_bytes]))
    assert live_b is not None
    assert b"".join(live_b) == big_bytes
    reader_b = ctx.resume_existing_stream(other, after="0")
    assert reader_b is not None
    assert b"".join(reader_b) == big_bytes


def test_a_disconnected_creator_does_not_stop_the_source(ctx: ResumableStreamContext, stream_name: str) -> None:
    finished = threading.Event()

    def make() -> Iterator[str]:
        yield from tokens(30, 0.01)()
        finished.set()

    live = ctx.create_new_resumable_stream(stream_name, make)
    assert live is not None
    assert next(live) == "tok0 "
    live.close()  # the browser went away
    assert finished.wait(20)
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert "".join(reader) == text(30)
    assert reader.status is not None and reader.status.state is StreamState.COMPLETED


def test_stop_ends_readers_persists_what_was_produced_and_closes_the_source(
    log: Log, ctx: ResumableStreamContext, stream_name: str
) -> None:
    closed = threading.Event()
    produced: list[str] = []

    def make() -> Iterator[str]:
        try:
            for i in range(1000):
                produced.append(f"{i} ")
                yield f"{i} "
                time.sleep(0.02)
        finally:
            closed.set()

    live = ctx.create_new_resumable_stream(stream_name, make)
    assert live is not None
    reader = ctx.resume_existing_stream(stream_name)
    assert reader is not None
    assert next(live) == "0 "
    time.sleep(0.2)
    # Stop from another context on the same log, as another process would.
    with ResumableStreamContext(log, stop_timeout=5) as other:
        status = other.stop_stream(stream_name)
    assert status.state is StreamState.STOPPED
    assert closed.wait(10), "the source generator was not closed"
    live_text = "0 " + "".join(live)
    reader_text = "".join(reader)
    assert live.status == reader.status == status
    assert live_text == reader_text
    # Everything yielded before the stop landed is kept; at most the one chunk in flight is dropped.
    assert live_text.split() == [p.strip() for p in produced][: len(live_text.split())]
    assert len(produced) - len(live_text.split()) <= 1
    assert len(produced) < 1000
    assert ctx.stream_status(stream_name) == status
    assert ctx.create_new_resumable_stream(stream_name, tokens(1)) is None


def test_stop_cancels_even_an_idle_source(ctx: ResumableStreamContext, stream_name: str) -> None:
    release = threading.Event()
    closed = threading.Event()

    def make() -> Iterator[str]:
        try:
            yield "thinking "
            release.wait(30)  # a long tool call
            yield "never delivered"
        finally:
            closed.set()

    live = ctx.create_new_resumable_stream(stream_name, make)
    assert live is not None
    assert next(live) == "thinking "
    assert ctx.stop_stream(stream_name).state is StreamState.STOPPED
    assert list(live) == []  # ends without waiting for the source
    release.set()
    assert closed.wait(10)
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert list(reader) == ["thinking "]


def test_stop_before_create_wins_and_stop_after_finish_changes_nothing(
    ctx: ResumableStreamContext, stream_name: str
) -> None:
    assert ctx.stop_stream(stream_name).state is StreamState.STOPPED
    assert ctx.create_new_resumable_stream(stream_name, tokens(3)) is None
    other = stream_name + "-done"
    live = ctx.create_new_resumable_stream(other, tokens(3))
    assert live is not None
    list(live)
    before = ctx.stream_status(other)
    assert ctx.stop_stream(other) == before
    assert before.state is StreamState.COMPLETED


def test_stop_ends_a_stream_whose_producer_is_gone(log: Log, stream_name: str) -> None:
    # A claim and some data, but no producer anywhere: the stop request goes unanswered.
    log.append(stream_name, [Record.fence("session-dead")], fencing_token="", match_seq_num=0)
    log.append(stream_name, [Record(b"orphan")], fencing_token="session-dead", match_seq_num=1)
    with ResumableStreamContext(log, stop_timeout=1) as ctx:
        status = ctx.stop_stream(stream_name)
        assert status.state is StreamState.STOPPED
        reader = ctx.resume_existing_stream(stream_name, after="0")
        assert reader is not None
        assert list(reader) == ["orphan"]


def test_readers_of_an_abandoned_stream_end_within_the_bound(log: Log, stream_name: str) -> None:
    # A producer of ours (its claim declares a silence bound of 1 s) died after its claim and one chunk:
    # nothing will ever be written again.
    log.append(stream_name, [Record.fence("session-1s-dead")], fencing_token="", match_seq_num=0)
    log.append(stream_name, [Record(b"partial")], fencing_token="session-1s-dead", match_seq_num=1)
    with ResumableStreamContext(log, abandon_after=30) as ctx:
        reader = ctx.resume_existing_stream(stream_name)
        assert reader is not None
        started = time.monotonic()
        got = []
        with pytest.raises(StreamAbandoned):
            for chunk in reader:
                got.append(chunk)
        assert got == ["partial"]
        assert time.monotonic() - started < 15
        status = ctx.stream_status(stream_name)
        assert status.state is StreamState.ABANDONED
        assert reader.status == status
        # It is recorded: every later reader learns it at once.
        late = ctx.resume_existing_stream(stream_name, after="1")
        assert late is not None
        with pytest.raises(StreamAbandoned):
            list(late)
        assert ctx.create_new_resumable_stream(stream_name, tokens(1)) is None


def test_status_reports_a_silent_producer_as_abandoned(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record.fence("session-dead")], fencing_token="", match_seq_num=0)
    with ResumableStreamContext(log, abandon_after=1) as ctx:
        assert ctx.stream_status(stream_name).state is StreamState.ACTIVE
        time.sleep(1.3)
        assert ctx.stream_status(stream_name).state is StreamState.ABANDONED
        assert ctx.has_existing_stream(stream_name) == "DONE"


def test_an_idle_but_alive_producer_is_never_taken_for_dead(log: Log, stream_name: str) -> None:
    def make() -> Iterator[str]:
        yield "before the tool call "
        time.sleep(3.5)  # more than abandon_after without a chunk
        yield "after"

    with ResumableStreamContext(log, abandon_after=1.2) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, make)
        assert live is not None
        reader = ctx.resume_existing_stream(stream_name)
        assert reader is not None
        assert "".join(reader) == "before the tool call after"
        assert "".join(live) == "before the tool call after"
        assert ctx.stream_status(stream_name).state is StreamState.COMPLETED
        heartbeats = [r for r in log.read(stream_name, seq_num=0).records if r.headers == ((b"rs", b"heartbeat"),)]
        assert heartbeats, "an idle producer writes heartbeats"


def test_a_slow_creator_iterator_falls_back_to_the_log(log: Log, stream_name: str) -> None:
    with ResumableStreamContext(log, live_buffer_bytes=200) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(500))
        assert live is not None
        assert next(live) == "tok0 "
        deadline = time.monotonic() + 20
        while ctx.stream_status(stream_name).state is StreamState.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.05)  # the reader does not consume while the source runs to its end
        events = list(live.events())
        assert "tok0 " + "".join(chunk for _, chunk in events) == text(500)
        assert [int(c) for c, _ in events] == sorted(int(c) for c, _ in events)
        assert live.status is not None and live.status.state is StreamState.COMPLETED


def test_cursors_are_validated(ctx: ResumableStreamContext, stream_name: str) -> None:
    for bad in ("", "abc", "-1", "1.5", "1e3", " ", "١٢", True, 1.5):
        with pytest.raises(ValueError, match="cursor"):
            ctx.resume_existing_stream(stream_name, after=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", ".", "..", "x" * 513, 42, "resumable-stream.control"])
def test_bad_stream_ids_are_refused_before_any_request(bad: Any) -> None:
    log = MemoryLog()
    with ResumableStreamContext(log) as ctx:
        for call in (
            lambda: ctx.create_new_resumable_stream(bad, tokens(1)),
            lambda: ctx.resume_existing_stream(bad),
            lambda: ctx.stream_status(bad),
            lambda: ctx.stop_stream(bad),
            lambda: ctx.has_existing_stream(bad),
        ):
            with pytest.raises(ValueError):
                call()
    assert len(log) == 0


@pytest.mark.parametrize("stream_id", ["chat/42?x#y", "100% sure", "ünïcødé ✓ 日本"])
def test_stream_ids_with_special_characters(ctx: ResumableStreamContext, stream_id: str) -> None:
    live = ctx.create_new_resumable_stream(stream_id, tokens(3))
    assert live is not None
    assert "".join(live) == text(3)
    reader = ctx.resume_existing_stream(stream_id, after="0")
    assert reader is not None
    assert "".join(reader) == text(3)


def test_a_stream_with_foreign_records_is_refused(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record(b"someone else's data")])
    with ResumableStreamContext(log) as ctx, pytest.raises(ResumableStreamError, match="did not write"):
        ctx.create_new_resumable_stream(stream_name, tokens(1))


def test_close_lets_running_streams_finish(log: Log, stream_name: str) -> None:
    ctx = ResumableStreamContext(log)
    live = ctx.create_new_resumable_stream(stream_name, tokens(10, 0.05))
    assert live is not None
    ctx.close(timeout=10)
    with ResumableStreamContext(log) as reader_ctx:
        assert reader_ctx.stream_status(stream_name).state is StreamState.COMPLETED
        reader = reader_ctx.resume_existing_stream(stream_name, after="0")
        assert reader is not None
        assert "".join(reader) == text(10)
    with pytest.raises(ResumableStreamError, match="closed"):
        ctx.create_new_resumable_stream(stream_name + "-2", tokens(1))


def test_close_writes_out_what_was_produced_when_the_deadline_passes(log: Log, stream_name: str) -> None:
    ctx = ResumableStreamContext(log)
    live = ctx.create_new_resumable_stream(stream_name, tokens(1000, 0.05))
    assert live is not None
    first = [next(live) for _ in range(3)]
    ctx.close(timeout=1.5)
    with ResumableStreamContext(log) as reader_ctx:
        assert reader_ctx.stream_status(stream_name).state is StreamState.ABANDONED
        reader = reader_ctx.resume_existing_stream(stream_name, after="0")
        assert reader is not None
        persisted, error = run_to_end(reader)
        assert isinstance(error, StreamAbandoned)
    # Everything the creator saw was written out, and nothing else.
    rest, error = run_to_end(live)
    assert isinstance(error, StreamAbandoned)
    assert persisted == first + rest
    assert len(persisted) < 1000


class CountingLog(MemoryLog):
    """A MemoryLog that records the size of every append to one stream."""

    def __init__(self, stream: str) -> None:
        super().__init__()
        self.stream = stream
        self.appends: list[int] = []

    def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
        if stream == self.stream:
            self.appends.append(len(records))
        return super().append(stream, records, **kwargs)


def test_resuming_a_quiet_stream_takes_one_read(stream_name: str) -> None:
    # A resume call is on a request's path, and under load every request it makes waits for a connection:
    # judging a quiet producer (which takes reading its claim) is left to the reader, which does it anyway.
    reads: list[str] = []

    class ReadCountingLog(MemoryLog):
        def read(self, stream: str, **kwargs: Any) -> Any:
            reads.append(stream)
            return super().read(stream, **kwargs)

    gate = Gate(["a "], ["b"])
    with ResumableStreamContext(ReadCountingLog()) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, gate)
        assert live is not None
        assert next(live) == "a "
        time.sleep(1.5)  # quiet for longer than the shortest silence bound a producer may declare
        reads.clear()
        reader = ctx.resume_existing_stream(stream_name)
        assert reads == [stream_name]
        assert reader is not None
        gate.open()
        assert "".join(reader) == "a b"
        assert "".join(live) == "b"


def test_batching_coalesces_under_a_steady_flow(stream_name: str) -> None:
    log = CountingLog(stream_name)
    with ResumableStreamContext(log, linger=0.2, batch_size=1000) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(40, 0.01))
        assert live is not None
        assert "".join(live) == text(40)
    appends = log.appends
    assert appends[0] == 1  # the claim
    assert appends[1] == 1  # the first chunk goes out at once
    assert len(appends) < 20  # the rest coalesced
    assert sum(appends) >= 42


def test_batch_size_caps_a_batch(stream_name: str) -> None:
    log = CountingLog(stream_name)
    with ResumableStreamContext(log, linger=5, batch_size=7) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(50))
        assert live is not None
        assert "".join(live) == text(50)
    assert max(log.appends) <= 7


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2_BATCH_SIZE", "25")
    monkeypatch.setenv("S2_LINGER_DURATION", "120")
    ctx = ResumableStreamContext(MemoryLog())
    assert (ctx.batch_size, ctx.linger) == (25, 0.12)
    ctx = ResumableStreamContext(MemoryLog(), batch_size=3, linger=0)
    assert (ctx.batch_size, ctx.linger) == (3, 0)
    monkeypatch.setenv("S2_BATCH_SIZE", "lots")
    with pytest.raises(ValueError, match="S2_BATCH_SIZE"):
        ResumableStreamContext(MemoryLog())
    monkeypatch.setenv("S2_BATCH_SIZE", "5000")
    with pytest.raises(ValueError, match="S2_BATCH_SIZE"):
        ResumableStreamContext(MemoryLog())


def test_a_source_faster_than_the_log_is_paused(stream_name: str) -> None:
    release = threading.Event()

    class StalledLog(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and kwargs.get("fencing_token") != "":
                release.wait(30)  # the log is slow: nothing after the claim lands until released
            return super().append(stream, records, **kwargs)

    produced = []

    def make() -> Iterator[str]:
        for i in range(20_000):
            produced.append(i)
            yield f"{i:06}" + "x" * 994

    with ResumableStreamContext(StalledLog(), live_buffer_bytes=64 * 1024) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, make)
        assert live is not None
        time.sleep(1.0)
        paused_at = len(produced)
        # At most a few MiB of 1 KB chunks wait for the log; the source waits too.
        assert paused_at < 8_000
        release.set()
        assert sum(1 for _ in live) == 20_000
    assert len(produced) == 20_000


# -- regressions found in review -----------------------------------------------------------------------------


def test_a_reader_whose_cursor_is_beyond_the_end_still_ends(ctx: ResumableStreamContext, stream_name: str) -> None:
    gate = Gate(["a"], ["b"])
    live = ctx.create_new_resumable_stream(stream_name, gate)
    assert live is not None
    ahead = ctx.resume_existing_stream(stream_name, after=50)  # e.g. a reconnect with a cursor not yet durable
    assert ahead is not None
    gate.open()
    assert list(live) == ["a", "b"]
    assert run_to_end(ahead) == ([], None)
    assert ahead.status is not None and ahead.status.state is StreamState.COMPLETED


def test_readers_ahead_of_the_log_all_learn_of_an_abandonment(log: Log, stream_name: str) -> None:
    log.append(stream_name, [Record.fence("session-dead")], fencing_token="", match_seq_num=0)
    log.append(stream_name, [Record(b"x")], fencing_token="session-dead", match_seq_num=1)
    with ResumableStreamContext(log, abandon_after=1) as ctx:
        tabs = [ctx.resume_existing_stream(stream_name, after=after) for after in ("5", "5", "1")]
        results = [run_to_end(tab) for tab in tabs]
    assert [type(error) for _, error in results] == [StreamAbandoned] * 3


def test_the_creators_reader_never_takes_its_own_producer_for_dead(stream_name: str) -> None:
    slow = threading.Event()

    class SlowLog(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and len(records) > 1 and not slow.is_set():
                slow.set()
                time.sleep(1.5)  # one slow append while the creator is far behind
            return super().append(stream, records, **kwargs)

    with ResumableStreamContext(SlowLog(), abandon_after=1, live_buffer_bytes=200, linger=0.05) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(300, 0.002))
        assert live is not None
        assert next(live) == "tok0 "
        time.sleep(0.5)  # fall behind: the live queue overflows, the rest comes from the log
        chunks, error = run_to_end(live)
        assert error is None
        assert "tok0 " + "".join(chunks) == text(300)
        assert ctx.stream_status(stream_name).state is StreamState.COMPLETED


def test_a_forced_stop_never_shows_the_creator_what_resumers_cannot_see(stream_name: str) -> None:
    class LaggingLog(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and kwargs.get("fencing_token", "").startswith("session-"):
                time.sleep(0.4)  # the producer's writes lag behind its source
            return super().append(stream, records, **kwargs)

    log = LaggingLog()
    with ResumableStreamContext(log) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(50, 0.02))
        assert live is not None
        time.sleep(0.6)
        # A stop that does not wait for the producer fences the stream at its durable tail.
        with ResumableStreamContext(log, stop_timeout=0) as other:
            assert other.stop_stream(stream_name).state is StreamState.STOPPED
        # The producer learns of the fence at its next append; chunks it queued for the creator past the
        # fence are dropped then. (Chunks the creator had already read cannot be taken back.)
        assert live._producer is not None and live._producer.done.wait(10)
        creator = list(live.events())
        reader = ctx.resume_existing_stream(stream_name, after=0)
        assert reader is not None
        assert creator == list(reader.events())
        assert live.status == reader.status


def test_a_stream_fenced_while_its_context_closes_ends_with_the_recorded_outcome(stream_name: str) -> None:
    log = MemoryLog()
    ctx = ResumableStreamContext(log)
    gate = Gate(["a"], ["b"])
    live = ctx.create_new_resumable_stream(stream_name, gate)
    assert live is not None
    assert next(live) == "a"
    closing = threading.Thread(target=ctx.close, kwargs={"timeout": 5})
    closing.start()
    time.sleep(0.2)
    log.append(stream_name, [Record.fence("end-stopped-by-someone")])  # someone else ends it meanwhile
    gate.open()
    chunks, error = run_to_end(live)
    closing.join(10)
    assert error is None and chunks in ([], ["b"])  # "b" was produced as the fence landed
    assert live.status is not None and live.status.state is StreamState.STOPPED and live.status.tail == 3


def test_the_stop_watcher_survives_unexpected_errors(stream_name: str) -> None:
    failed = threading.Event()

    class FlakyLog(MemoryLog):
        def read_session(self, stream: str, **kwargs: Any) -> Any:
            if stream == "resumable-stream.control" and not failed.is_set():
                failed.set()
                raise ValueError("a proxy answered with HTML")
            return super().read_session(stream, **kwargs)

    log = FlakyLog()
    with ResumableStreamContext(log, stop_timeout=30) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(10_000, 0.01))
        assert live is not None
        assert failed.wait(5)
        started = time.monotonic()
        assert ctx.stop_stream(stream_name).state is StreamState.STOPPED
        assert time.monotonic() - started < 15, "the producer did not answer: the watcher died"
        list(live)


def test_the_stop_watcher_reads_a_control_stream_made_anew_from_its_start(stream_name: str) -> None:
    # A control stream deleted and made anew (S2's delete_on_empty does that; a MemoryLog forgets an idle
    # stream) starts again at 0: a watcher that had read two records must not wait at 2 while the new
    # stream's first record, a stop request, sits at 0.
    with S2Server(basins=(BASIN,), heartbeat_interval=0.2) as server, \
            ResumableStreamContext(server.client(BASIN, retry=FAST_RETRY), stop_timeout=8) as ctx, \
            ResumableStreamContext(server.client(BASIN, retry=FAST_RETRY), stop_timeout=8) as other:
        live = ctx.create_new_resumable_stream(stream_name, tokens(100_000, 0.01))
        assert live is not None
        other.log.append("resumable-stream.control", [Record(b"not a stop request"), Record(b"nor this")])
        time.sleep(0.5)  # the watcher has read them
        deleted = requests.delete(f"{server.url}/v1/streams/resumable-stream.control", headers={"s2-basin": BASIN},
                                  timeout=5)
        assert deleted.status_code in (200, 202, 204)
        started = time.monotonic()
        assert other.stop_stream(stream_name).state is StreamState.STOPPED
        assert time.monotonic() - started < 6, "the producer missed the stop request and was fenced after the timeout"
        list(live)


def test_a_stop_during_the_claim_reaches_the_producer(stream_name: str) -> None:
    claimed = threading.Event()
    calls = []

    class SlowAckLog(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            ack = super().append(stream, records, **kwargs)
            if stream == stream_name and kwargs.get("fencing_token") == "" and not claimed.is_set():
                claimed.set()
                time.sleep(1.0)  # the claim landed, but its answer is slow to come back
            return ack

    def make() -> Iterator[str]:
        calls.append(1)
        yield "never"

    log = SlowAckLog()
    with ResumableStreamContext(log, stop_timeout=30) as ctx:
        results: list[Any] = []
        creating = threading.Thread(target=lambda: results.append(ctx.create_new_resumable_stream(stream_name, make)))
        creating.start()
        assert claimed.wait(5)
        started = time.monotonic()
        with ResumableStreamContext(log, stop_timeout=30) as other:
            assert other.stop_stream(stream_name).state is StreamState.STOPPED
        assert time.monotonic() - started < 15
        creating.join(10)
        assert calls == []  # the model was never called
        assert list(results[0]) == []


def test_a_finished_stream_with_a_full_size_last_chunk_reads_as_finished(ctx: ResumableStreamContext,
                                                                          stream_name: str) -> None:
    # The largest record the engine writes, then the terminal fence: both must fit the one read of stream_status.
    live = ctx.create_new_resumable_stream(stream_name, lambda: iter([b"\xff" * _MAX_CHUNK_BYTES]))
    assert live is not None
    assert [len(c) for c in live] == [_MAX_CHUNK_BYTES]
    assert ctx.stream_status(stream_name).state is StreamState.COMPLETED
    assert ctx.resume_existing_stream(stream_name) is None


def test_text_that_is_not_valid_unicode_reads_the_same_for_everyone(ctx: ResumableStreamContext,
                                                                   stream_name: str) -> None:
    live = ctx.create_new_resumable_stream(stream_name, lambda: iter(["a\ud800b", "\ud83d\ude00"]))
    assert live is not None
    assert list(live) == ["a\ufffdb", "😀"]
    reader = ctx.resume_existing_stream(stream_name, after=0)
    assert reader is not None
    assert list(reader) == ["a\ufffdb", "😀"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"abandon_after": float("inf")}, "abandon_after"),
        ({"abandon_after": 0.5}, "abandon_after"),
        ({"batch_size": 2.7}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"linger": 100}, "linger"),
        ({"linger": -1}, "linger"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"live_buffer_bytes": 0}, "live_buffer_bytes"),
    ],
)
def test_settings_are_validated_and_named(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ResumableStreamContext(MemoryLog(), **settings)


def test_everything_works_on_a_basin_that_creates_no_streams(strict_log: Log, stream_name: str) -> None:
    with ResumableStreamContext(strict_log, stop_timeout=5) as ctx:
        assert ctx.resume_existing_stream(stream_name) is None
        assert ctx.stream_status(stream_name).state is StreamState.MISSING
        with pytest.raises(NotFound):
            strict_log.check_tail(stream_name)  # looking did not create it
        live = ctx.create_new_resumable_stream(stream_name, tokens(3))
        assert live is not None
        assert "".join(live) == text(3)
        endless = ctx.create_new_resumable_stream(stream_name + "-2", tokens(100_000, 0.01))
        assert endless is not None
        next(endless)
        assert ctx.stop_stream(stream_name + "-2").state is StreamState.STOPPED
        assert ctx.stop_stream(stream_name + "-3").state is StreamState.STOPPED  # never created


def test_a_foreign_fence_fails_the_stream_for_its_creator(stream_name: str) -> None:
    log = MemoryLog()
    with ResumableStreamContext(log) as ctx:
        gate = Gate(["a"], ["b"])
        live = ctx.create_new_resumable_stream(stream_name, gate)
        assert live is not None
        assert next(live) == "a"
        log.append(stream_name, [Record.fence("not-ours")])  # a writer that does not follow the protocol
        gate.open()
        _, error = run_to_end(live)
        assert isinstance(error, StreamFailed) and "not-ours" in error.message
        assert live.status is not None and live.status.state is StreamState.FAILED


# -- what the creator may be handed when writing fails (issue 8) ------------------


class _Outage(MemoryLog):
    """A MemoryLog whose appends to one stream fail (as a log answering 503) once ``down`` is set."""

    def __init__(self, stream: str, *, terminal_lands: bool) -> None:
        super().__init__()
        self.stream, self.terminal_lands = stream, terminal_lands
        self.down = threading.Event()
        self.given_up = threading.Event()  # the producer tried to record its failure

    def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
        if stream == self.stream and self.down.is_set():
            give_up = "match_seq_num" not in kwargs and any(r.headers == ((b"", b"fence"),) for r in records)
            try:
                if not (self.terminal_lands and give_up):
                    raise Unavailable("HTTP 503 unavailable", status=503, code="unavailable")
            finally:
                if give_up:
                    self.given_up.set()
        return super().append(stream, records, **kwargs)


@pytest.mark.parametrize("terminal_lands", [False, True])
def test_the_creator_is_never_handed_a_chunk_the_log_did_not_take(stream_name: str, terminal_lands: bool) -> None:
    log = _Outage(stream_name, terminal_lands=terminal_lands)
    gate = Gate(["one "], ["two ", "three "])
    with ResumableStreamContext(log) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, gate)
        assert live is not None
        deadline = time.monotonic() + 10
        while log.check_tail(stream_name).seq_num < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # "one " is written
        log.down.set()
        gate.open()  # the creator has read nothing yet; "two " and "three " are queued and never written
        assert log.given_up.wait(10)
        chunks, error = run_to_end(live)
    assert chunks == ["one "]
    assert isinstance(error, Unavailable)
    assert live.status is not None and live.status.state is StreamState.FAILED
    records = log.read(stream_name, seq_num=0).records
    if terminal_lands:
        # The failure is recorded right after what was written; the creator's cursors match the log's.
        assert [r.body for r in records[:2]] == [records[0].body, b"one "]
        assert [r.command for r in records[2:]] == [None, "fence"] and records[2].body == b""
        assert live.status.tail == 4
        reader = ctx_reader(log, stream_name)
        assert run_to_end(reader)[0] == ["one "]
    else:
        assert len(records) == 2  # nothing after "one " reached the log


def ctx_reader(log: Log, stream_name: str) -> Any:
    ctx = ResumableStreamContext(log)
    reader = ctx.resume_existing_stream(stream_name, after=0)
    assert reader is not None
    return reader


def test_a_producer_of_another_library_is_never_fenced(log: Log, stream_name: str) -> None:
    # @s2-dev/resumable-stream's producer: a claim "session-<5 base36>" and data, then silence while its
    # source thinks. Readers of ours end by their bound; the stream stays writable for its producer.
    log.append(stream_name, [Record.fence("session-k3j9a")], fencing_token="", match_seq_num=0)
    log.append(stream_name, [Record(b"a "), Record(b"b ")], fencing_token="session-k3j9a", match_seq_num=1)
    with ResumableStreamContext(log, abandon_after=1) as ctx:
        reader = ctx.resume_existing_stream(stream_name)
        assert reader is not None
        chunks, error = run_to_end(reader)
        assert chunks == ["a ", "b "] and isinstance(error, StreamAbandoned)
        assert ctx.stream_status(stream_name).state is StreamState.ABANDONED  # reported, not recorded
    log.append(stream_name, [Record(b"c "), Record(b"d ")], fencing_token="session-k3j9a", match_seq_num=3)
    log.append(stream_name, [Record.fence("end-x1")], fencing_token="session-k3j9a", match_seq_num=5)
    with ResumableStreamContext(log, abandon_after=1) as ctx:
        reader = ctx.resume_existing_stream(stream_name, after=0)
        assert reader is not None
        assert list(reader) == ["a ", "b ", "c ", "d "]
        assert ctx.stream_status(stream_name).state is StreamState.COMPLETED


@pytest.mark.parametrize("chunk", ["\x1b" * 400_000, "\x00" * 400_000, "\x01é\x02" * 200_000],
                         ids=["escape", "nul", "mixed"])
def test_text_full_of_control_characters_is_written(log: Log, stream_name: str, chunk: str) -> None:
    with ResumableStreamContext(log) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, lambda: iter([chunk, "end"]))
        assert live is not None
        written = "".join(live)
        assert live.status is not None and live.status.state is StreamState.COMPLETED
        reader = ctx.resume_existing_stream(stream_name, after=0)
        assert reader is not None
        assert written == "".join(reader) == chunk + "end"


def test_a_failure_message_reads_the_same_for_creator_and_resumers(ctx: ResumableStreamContext,
                                                                   stream_name: str) -> None:
    def failing() -> Iterator[str]:
        yield "x"
        raise ValueError("cannot open \udcff.txt " + "é" * 10_000)

    live = ctx.create_new_resumable_stream(stream_name, failing)
    assert live is not None
    run_to_end(live)
    assert live.status is not None and live.status.error is not None
    assert live.status.error.startswith("ValueError: cannot open \ufffd.txt")
    assert len(live.status.error.encode()) <= 8192
    resumed = ctx.resume_existing_stream(stream_name, after=0)
    assert resumed is not None
    run_to_end(resumed)
    assert resumed.status == live.status == ctx.stream_status(stream_name)


def test_a_context_that_failed_to_build_has_a_repr() -> None:
    with pytest.raises(Exception) as raised:
        ResumableStreamContext(MemoryLog(), abandon_after=-1)
    assert "abandon_after" in str(raised.value)
    broken = ResumableStreamContext.__new__(ResumableStreamContext)
    assert repr(broken).startswith("<ResumableStreamContext")


def test_an_append_that_cannot_land_is_given_up_before_readers_would_judge_the_producer(stream_name: str) -> None:
    # The log hangs every append: the producer must give up (and end the stream) within its append
    # deadline, so that a live producer is never silent for its whole silence bound.
    calls: list[float | None] = []

    class Hanging(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and kwargs.get("match_seq_num", 0) > 0:
                calls.append(kwargs.get("timeout"))
                raise Unavailable("timed out", status=None)
            return super().append(stream, records, **kwargs)

    with ResumableStreamContext(Hanging(), abandon_after=6) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, lambda: iter(["a"]))
        assert live is not None
        run_to_end(live)
    heartbeat, deadline = 6 / 3, calls[0]
    assert deadline is not None and heartbeat + deadline < 6  # consistent by construction


def test_the_creator_runs_no_further_ahead_of_a_stalled_log_than_its_lead(
    stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("resumable_stream.producer.LIVE_LEAD", 0.3)
    stalled = threading.Event()

    class Stalling(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and kwargs.get("match_seq_num", 0) > 1:
                stalled.wait(10)  # the log takes the first chunk, then answers nothing for a while
            return super().append(stream, records, **kwargs)

    with ResumableStreamContext(Stalling()) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, tokens(30, 0.05))
        assert live is not None
        seen: list[str] = []
        started = time.monotonic()
        while time.monotonic() - started < 1.2:
            event = live.next_event(0.1)
            if event is not None:
                seen.append(event[1])
        # The source produced ~24 chunks meanwhile; the creator was handed the written one and those
        # produced within LIVE_LEAD of the stall, then had to wait.
        assert 2 <= len(seen) <= 10
        stalled.set()
        assert seen + list(live) == [f"tok{i} " for i in range(30)]


def test_a_creator_held_back_by_its_lead_gets_the_chunks_once_they_are_written_while_its_source_is_idle(
    stream_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The creator waits with no timeout of its own: the append that lands must wake it, even though its
    # source (a model thinking) yields nothing more for now.
    monkeypatch.setattr("resumable_stream.producer.LIVE_LEAD", 0.3)
    stalled, thinking = threading.Event(), threading.Event()

    class Stalling(MemoryLog):
        def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
            if stream == stream_name and kwargs.get("match_seq_num", 0) > 1:
                stalled.wait(10)
            return super().append(stream, records, **kwargs)

    def source() -> Iterator[str]:
        for i in range(20):
            time.sleep(0.05)
            yield f"tok{i} "
        thinking.wait(10)

    with ResumableStreamContext(Stalling()) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, source)
        assert live is not None
        seen: list[str] = []
        started = time.monotonic()
        while time.monotonic() - started < 1.3:
            if (event := live.next_event(0.1)) is not None:
                seen.append(event[1])
        assert len(seen) < 20  # held back
        stalled.set()
        started = time.monotonic()
        while len(seen) < 20 and time.monotonic() - started < 5:
            if (event := live.next_event(5)) is not None:
                seen.append(event[1])
        assert seen == [f"tok{i} " for i in range(20)] and not thinking.is_set()
        thinking.set()
        assert list(live) == []


@pytest.mark.parametrize("which", ["resumer", "creator"])
def test_a_reader_closed_from_another_thread_returns_at_once(log: Log, stream_name: str, which: str) -> None:
    gate = Gate(["one "], ["two "])
    with ResumableStreamContext(log) as ctx:
        live = ctx.create_new_resumable_stream(stream_name, gate)
        assert live is not None and next(live) == "one "
        if which == "creator":
            reader = live  # waits on its producer
        else:
            resumer = ctx.resume_existing_stream(stream_name)  # reads the log, then waits in its read session
            assert resumer is not None and next(resumer) == "one "
            reader = resumer
        ended = threading.Event()

        def read_on() -> None:
            list(reader)
            ended.set()

        threading.Thread(target=read_on, daemon=True).start()
        time.sleep(0.3)  # the reader waits for its next record
        started = time.monotonic()
        reader.close()
        assert ended.wait(5) and time.monotonic() - started < 2  # not the session's whole wait
        gate.open()
        if which == "resumer":
            assert list(live) == ["two "]
        assert run_to_end(ctx.resume_existing_stream(stream_name, after=0)) == (["one ", "two "], None)  # it went on


def test_an_iterator_of_a_reader_goes_on_after_an_error(s2_server: Any, s2_client: Log, stream_name: str) -> None:
    """``iter(stream)`` is the stream: an error (here a 403 on its read session) leaves it usable, in place."""
    with ResumableStreamContext(s2_client) as ctx:
        assert run_to_end(ctx.create_new_resumable_stream(stream_name, tokens(6)))[1] is None
        reader = ctx.resume_existing_stream(stream_name, after=0)
        assert reader is not None
        iterator = iter(reader)
        assert iterator is reader
        s2_server.faults.add(op="read", stream=stream_name, status=403, times=1)
        with pytest.raises(PermissionDenied):
            next(iterator)
        assert list(iterator) == [f"tok{i} " for i in range(6)]
        assert reader.status is not None and reader.status.state is StreamState.COMPLETED


def test_a_reader_used_as_a_source_is_closed_with_its_stream(log: Log, stream_name: str) -> None:
    with ResumableStreamContext(log, stop_timeout=5) as ctx:
        inner_gate = Gate(["a "], ["b "])
        assert ctx.create_new_resumable_stream(stream_name, inner_gate) is not None
        inner = ctx.resume_existing_stream(stream_name, after=0)
        assert inner is not None
        outer = ctx.create_new_resumable_stream(stream_name + "-outer", lambda: inner)
        assert outer is not None and next(outer) == "a "
        ctx.stop_stream(stream_name + "-outer")
        inner_gate.open()  # the outer source's next yield, where its producer closes it
        deadline = time.monotonic() + 5
        while not inner.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inner.closed  # the producer closed its source: the reader let go of its read session


def test_a_closed_context_leaves_no_thread_behind(log: Log, stream_name: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    ctx = ResumableStreamContext(log)
    live = ctx.create_new_resumable_stream(stream_name, tokens(5))
    assert live is not None and list(live) == [f"tok{i} " for i in range(5)]
    ctx.close()
    # The source, writer and stop-watcher threads are gone (the local server's are its own, and so is the
    # I/O thread of an HTTP/2 connection the client keeps: tests/test_http2.py sees it end with the client).
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.name.startswith("resumable-stream")
            and not t.name.startswith("resumable-stream h2")]
    assert left == []
