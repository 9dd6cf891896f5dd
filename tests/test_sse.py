"""SSE framing of resumable streams, framework-free."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from resumable_stream import MemoryLog, Record, ResumableStreamContext, StreamFailed
from resumable_stream.sse import ABANDONED_MESSAGE, GENERIC_ERROR, cursor_from, format_event, sse_frames

from .support import Gate, parse_sse


@pytest.fixture
def ctx() -> Iterator[ResumableStreamContext]:
    with ResumableStreamContext(MemoryLog(), abandon_after=1, stop_timeout=2) as context:
        yield context


def body(ctx: ResumableStreamContext, stream_id: str, after: str | None = None, **kwargs: object) -> str:
    stream = ctx.resume_existing_stream(stream_id, after=after)
    assert stream is not None
    return b"".join(sse_frames(stream, **kwargs)).decode()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    ["plain", "two\nlines", "crlf\r\nline", "cr\rline", "trailing\n", "\nleading", "", "x\n\nevent: evil\ndata: y",
     "id: 99", ": not a comment", "unicode ✓ 日本"],
)
def test_any_text_survives_framing_unchanged(data: str) -> None:
    events, comments = parse_sse(format_event(data, id="7").decode())
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert events == [(("7", "message", expected))]
    assert comments == []


def test_ids_and_event_names_cannot_break_the_frame() -> None:
    with pytest.raises(ValueError):
        format_event("x", id="1\n2")
    with pytest.raises(ValueError):
        format_event("x", event="a\rb")


def test_cursor_from_prefers_the_header() -> None:
    assert cursor_from("5", "3") == "5"
    assert cursor_from(None, "3") == "3"
    assert cursor_from("", " 4 ") == "4"
    assert cursor_from(None, None) is None
    with pytest.raises(ValueError):
        cursor_from("abc", None)
    with pytest.raises(ValueError):
        cursor_from(None, "-2")


def test_chunks_become_events_with_their_cursors_then_an_end_event(ctx: ResumableStreamContext) -> None:
    live = ctx.create_new_resumable_stream("s", lambda: iter(["a", "b\nc", "d"]))
    assert live is not None
    events, _ = parse_sse(b"".join(sse_frames(live)).decode())
    assert events[:3] == [("1", "message", "a"), ("2", "message", "b\nc"), ("3", "message", "d")]
    assert events[3] == ("4", "end", "")
    assert ctx.resume_existing_stream("s", after=events[3].id) is None  # a reconnect after the end: nothing left
    assert parse_sse(body(ctx, "s", after="2"))[0] == [("3", "message", "d"), ("4", "end", "")]


def test_the_body_starts_with_a_retry_hint(ctx: ResumableStreamContext) -> None:
    live = ctx.create_new_resumable_stream("s", lambda: iter(["a"]))
    assert live is not None
    assert next(sse_frames(live)) == b"retry: 1000\n\n"


def test_failure_stop_and_abandonment_have_their_own_events(ctx: ResumableStreamContext) -> None:
    def failing() -> Iterator[str]:
        yield "x"
        raise RuntimeError("quota exceeded")

    live = ctx.create_new_resumable_stream("failed", failing)
    assert live is not None
    live_events, _ = parse_sse(b"".join(sse_frames(live)).decode())
    resumed_events, _ = parse_sse(body(ctx, "failed", after="0"))
    assert live_events == resumed_events  # the creator and a resumer get the same bytes
    assert live_events[-1] == ("3", "error", GENERIC_ERROR)  # clients are not told the source's exception
    assert ctx.stream_status("failed").error == "RuntimeError: quota exceeded"  # the application is

    ctx.log.append("stopped-later", [Record.fence("session-x")], fencing_token="", match_seq_num=0)
    ctx.log.append("stopped-later", [Record(b"y")], fencing_token="session-x", match_seq_num=1)
    ctx.log.append("stopped-later", [Record.fence("end-stopped-x")], fencing_token="session-x", match_seq_num=2)
    assert parse_sse(body(ctx, "stopped-later", after="0"))[0] == [("1", "message", "y"), ("2", "stopped", "")]

    # A producer of ours (its claim declares a 1 s silence bound) that died after its claim.
    ctx.log.append("dead", [Record.fence("session-1s-dead")], fencing_token="", match_seq_num=0)
    events, _ = parse_sse(body(ctx, "dead", after="0"))
    assert events == [("1", "abandoned", ABANDONED_MESSAGE)]


def test_the_application_chooses_what_clients_see_of_a_failure(
    ctx: ResumableStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    class QuotaExceeded(Exception):
        pass

    def failing() -> Iterator[str]:
        yield "x"
        raise QuotaExceeded("account 42 over quota (internal host db-7)")

    seen: list[StreamFailed] = []

    def error_message(exc: StreamFailed) -> str:
        seen.append(exc)
        return "Over quota, try later" if exc.message.startswith("QuotaExceeded:") else "Something went wrong"

    live = ctx.create_new_resumable_stream("quota", failing)
    assert live is not None
    with caplog.at_level("WARNING", logger="resumable_stream"):
        creator = b"".join(sse_frames(live, error_message=error_message)).decode()
    resumer = body(ctx, "quota", after="0", error_message=error_message)
    assert creator == resumer
    assert parse_sse(creator)[0][-1].data == "Over quota, try later"
    # Both were asked with the same recorded message, which the status and the log keep whole.
    full = "QuotaExceeded: account 42 over quota (internal host db-7)"
    assert [(e.stream_id, e.message) for e in seen] == [("quota", full)] * 2
    assert ctx.stream_status("quota").error == seen[0].message
    [record] = [r for r in caplog.records if r.name == "resumable_stream.sse"]
    assert "db-7" in record.getMessage() and record.exc_info is not None  # the creator logs the traceback

    def broken(exc: StreamFailed) -> str:
        raise KeyError("oops")

    with caplog.at_level("ERROR", logger="resumable_stream"):
        assert parse_sse(body(ctx, "quota", after="0", error_message=broken))[0][-1].data == GENERIC_ERROR
    assert "error_message raised" in caplog.text
    with pytest.raises(TypeError, match="error_message"):
        sse_frames(live, error_message="no")  # type: ignore[arg-type]


def test_every_byte_sent_is_utf8_even_for_lone_surrogates(ctx: ResumableStreamContext) -> None:
    def failing() -> Iterator[str]:
        yield "caf\udcff"
        raise ValueError("cannot open \udcff.txt")

    live = ctx.create_new_resumable_stream("surrogates", failing)
    assert live is not None
    resumed = ctx.resume_existing_stream("surrogates", after="0")
    assert resumed is not None
    creator, resumer = (b"".join(sse_frames(s, error_message=lambda exc: exc.message)) for s in (live, resumed))
    assert creator == resumer  # the same message for everyone, as recorded
    events, _ = parse_sse(creator.decode("utf-8"))  # strict: raises on an invalid byte
    assert events[0].data == "caf\ufffd"
    assert events[-1].event == "error" and events[-1].data == "ValueError: cannot open \ufffd.txt"
    assert format_event("a\ud800b\udfff", id="1") == "id: 1\ndata: a\ufffdb\ufffd\n\n".encode()
    ai = format_event(json.dumps({"type": "error", "errorText": "x\udcff"}, ensure_ascii=False))
    assert json.loads(parse_sse(ai.decode("utf-8"))[0][0].data) == {"type": "error", "errorText": "x\ufffd"}


def test_ai_sdk_endings(ctx: ResumableStreamContext) -> None:
    part = json.dumps({"type": "text-delta", "id": "t", "delta": "hi"})
    live = ctx.create_new_resumable_stream("ok", lambda: iter([part]))
    assert live is not None
    events, _ = parse_sse(b"".join(sse_frames(live, ai_sdk=True)).decode())
    assert [e.data for e in events] == [part, "[DONE]"]

    def failing() -> Iterator[str]:
        yield part
        raise RuntimeError("boom")

    live = ctx.create_new_resumable_stream("bad", failing)
    assert live is not None
    events, _ = parse_sse(b"".join(sse_frames(live, ai_sdk=True)).decode())
    assert [json.loads(e.data) for e in events[1:2]] == [{"type": "error", "errorText": GENERIC_ERROR}]
    assert events[-1].data == "[DONE]" and events[-1].id is not None

    gate = Gate([part])
    live = ctx.create_new_resumable_stream("stop", gate)
    assert live is not None
    frames = sse_frames(live, ai_sdk=True)
    assert next(frames).startswith(b"retry")
    assert parse_sse(next(frames).decode())[0][0].data == part
    ctx.stop_stream("stop")
    gate.open()
    events, _ = parse_sse(b"".join(frames).decode())
    assert [e.data for e in events] == ['{"type": "abort"}', "[DONE]"]


def test_keep_alive_comments_while_the_source_is_idle(ctx: ResumableStreamContext) -> None:
    def slow() -> Iterator[str]:
        yield "a"
        time.sleep(1.0)
        yield "b"

    live = ctx.create_new_resumable_stream("idle", slow)
    assert live is not None
    events, comments = parse_sse(b"".join(sse_frames(live, keepalive=0.2)).decode())
    assert [e.data for e in events[:2]] == ["a", "b"]
    assert comments.count("keep-alive") >= 2


def test_bytes_chunks_are_sent_as_text() -> None:
    with ResumableStreamContext(MemoryLog()) as ctx:
        live = ctx.create_new_resumable_stream("b", lambda: iter([b"caf\xc3\xa9", b"\xff"]))
        assert live is not None
        events, _ = parse_sse(b"".join(sse_frames(live)).decode())
        assert [e.data for e in events[:2]] == ["café", "\ufffd"]


def test_a_log_failure_ends_the_body_without_a_final_event() -> None:
    log = MemoryLog()
    ctx = ResumableStreamContext(log)
    gate = Gate(["a"])
    ctx.create_new_resumable_stream("s", gate)
    reader = ctx.resume_existing_stream("s")
    assert reader is not None
    frames = sse_frames(reader, keepalive=0.2)
    next(frames)
    assert parse_sse(next(frames).decode())[0][0].data == "a"
    log.close()  # the log goes away under the reader
    rest = b"".join(frames).decode()
    events, _ = parse_sse(rest)
    assert events == []  # the client reconnects with its last cursor instead of seeing an end
    gate.open()
    ctx.close(timeout=1)


def test_closing_the_body_detaches_the_reader(ctx: ResumableStreamContext) -> None:
    gate = Gate(["a"], ["b"])
    live = ctx.create_new_resumable_stream("s", gate)
    assert live is not None
    frames = sse_frames(live)
    next(frames)
    next(frames)
    frames.close()  # the client disconnected
    with pytest.raises(StopIteration):
        next(live)
    gate.open()
    reader = ctx.resume_existing_stream("s", after="0")
    assert reader is not None
    assert list(reader) == ["a", "b"]  # the stream itself went on


def test_a_closed_reader_ends_the_body(ctx: ResumableStreamContext) -> None:
    gate = Gate()
    live = ctx.create_new_resumable_stream("s", gate)
    assert live is not None
    frames = sse_frames(live, keepalive=0.1)
    next(frames)
    live.close()  # e.g. from another thread
    assert [f for f in frames if not f.startswith(b":")] == []
    gate.open()


@pytest.mark.parametrize("keepalive", [0, -1, float("inf"), float("nan")])
def test_keepalive_must_be_positive(ctx: ResumableStreamContext, keepalive: float) -> None:
    live = ctx.create_new_resumable_stream("s", lambda: iter(["a"]))
    assert live is not None
    with pytest.raises(ValueError, match="keepalive"):
        sse_frames(live, keepalive=keepalive)
