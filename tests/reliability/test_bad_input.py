"""Bad input, generated (``hypothesis``): a clear error or a written stream, never a crash, a hang, a bad byte.

Stream ids (any Unicode, lone surrogates, NUL, the limits of 512 bytes, ``.`` and ``..``, the reserved
control stream), resume cursors and ``Last-Event-ID`` / ``?from=`` (any type, any text), chunks around
every size limit of the log (1 MiB - 128 per record, 1 MiB per record and per batch, 10 MiB chunks) in every
encoding (NUL and control characters that JSON escapes six bytes apiece, characters of 2 to 4 bytes cut at
the limits, lone surrogates, bytes that are not UTF-8), hostile SSE payloads and hostile failure messages.
Each case must end, within a bound, either with a clear ``ValueError``/``TypeError`` or with a stream that
every reader reads back exactly; every SSE byte must be valid UTF-8 and no chunk or message may add an SSE
field. Ids and sizes go over real HTTP to the local server (percent-encoding, JSON escaping, base64).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import flask
import pytest
import requests
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from resumable_stream import MemoryLog, ResumableStreamContext, S2Client, StreamFailed, StreamState
from resumable_stream.flask import resume_cursor, sse_response
from resumable_stream.log import Log
from resumable_stream.sse import GENERIC_ERROR, sse_frames

from ..support import parse_sse
from .exact import read_log
from .processes import BASIN, ServerProcess
from .scale import MARKS, pick

pytestmark = MARKS

T = TypeVar("T")
MIB = 1024 * 1024
MAX_RECORD_BODY = MIB - 128  # the engine's largest data record body (a record with its fence fits a read)
LIMITS = (1, 2, 3, 4, MAX_RECORD_BODY - 8, MAX_RECORD_BODY, MIB - 8, MIB, 2 * MAX_RECORD_BODY, 2 * MIB)
CONTROL = "resumable-stream.control"
LINE_BREAK = re.compile(r"\r\n|\r|\n")
observed: dict[str, int] = {}


def bounded(action: Callable[[], T], timeout: float = 60) -> T:
    """Run ``action`` on a thread; its result or exception, and a failure if it does not end in time."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(action())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"hung for {timeout} s"
    if errors:
        raise errors[0]
    return result[0]  # type: ignore[no-any-return]


def count(name: str) -> None:
    observed[name] = observed.get(name, 0) + 1


def valid_text(text: str) -> str:
    """The documented rule, written again: a surrogate pair is its character, a lone surrogate is U+FFFD."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if "\ud800" <= c <= "\udbff" and i + 1 < len(text) and "\udc00" <= text[i + 1] <= "\udfff":
            out.append(chr(0x10000 + ((ord(c) - 0xD800) << 10) + ord(text[i + 1]) - 0xDC00))
            i += 2
            continue
        out.append("\ufffd" if "\ud800" <= c <= "\udfff" else c)
        i += 1
    return "".join(out)


def sse_text(chunk: str | bytes) -> str:
    text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else valid_text(chunk)
    return "\n".join(LINE_BREAK.split(text))


def check_frames(body: bytes) -> list[tuple[str | None, str, str]]:
    """An SSE body: valid UTF-8, only SSE's own lines, and its events."""
    text = body.decode("utf-8")  # strict
    for line in LINE_BREAK.split(text):
        assert line == "" or line.startswith(("data: ", "id: ", "event: ", "retry: ", ": keep-alive")), repr(line)
    events, _ = parse_sse(text)
    return [(e.id, e.event, e.data) for e in events]


@pytest.fixture(scope="module")
def s2(rel_server: ServerProcess) -> Iterator[S2Client]:
    client = rel_server.client()
    yield client
    client.close()


@pytest.fixture(params=["memory", "s2"])
def ctx(request: pytest.FixtureRequest) -> Iterator[ResumableStreamContext]:
    log: Log = MemoryLog() if request.param == "memory" else request.getfixturevalue("s2")
    with ResumableStreamContext(log, abandon_after=5) as context:
        yield context



# -- stream ids -------------------------------------------------------------------------------------------

SPECIAL_IDS = ["", ".", "..", "...", CONTROL, " ", "\x00", "a\x00b", "\n", "a/b", "a/../b", "%2F", "?#&=+", "a" * 512,
               "a" * 513, "é" * 256, "é" * 257, "🙂" * 128, "🙂" * 129, "\ud800", "a\udfffb", "\ufeff", "\u2028"]
stream_ids = st.one_of(
    st.sampled_from(SPECIAL_IDS),
    st.text(max_size=30),
    st.text(st.characters(min_codepoint=0xD700, max_codepoint=0xE000), max_size=5),  # surrogates among others
    st.integers(505, 520).map(lambda n: "x" * n),
    st.integers(250, 260).map(lambda n: "ß" * n),
)


@given(stream_id=stream_ids)
def test_any_stream_id_is_a_clear_error_or_a_working_stream(ctx: ResumableStreamContext, rel_server: ServerProcess,
                                                            stream_id: str) -> None:
    """Every operation on an id either raises ``ValueError`` (all of them alike) or works, exactly."""
    try:
        live = bounded(lambda: ctx.create_new_resumable_stream(stream_id, lambda: iter(["x", "y"])), 30)
    except ValueError as exc:
        assert str(exc)
        for operation in (lambda: ctx.resume_existing_stream(stream_id), lambda: ctx.stream_status(stream_id),
                          lambda: ctx.stop_stream(stream_id), lambda: ctx.has_existing_stream(stream_id)):
            with pytest.raises(ValueError):
                bounded(operation, 30)
        count("ids refused")
        return
    if live is not None:
        assert bounded(lambda: list(live), 30) == ["x", "y"]
    again = ctx.resume_existing_stream(stream_id, after=0)
    assert again is not None and bounded(lambda: list(again), 30) == ["x", "y"]
    assert ctx.stream_status(stream_id).state is StreamState.COMPLETED
    if isinstance(ctx.log, S2Client):  # the server holds a stream of exactly that name
        names = requests.get(f"{rel_server.url}/v1/streams", params={"prefix": stream_id}, timeout=10,
                             headers={"s2-basin": BASIN, "Authorization": "Bearer local"}).json()["streams"]
        assert stream_id in [s["name"] for s in names]
    count("ids written")


# -- cursors ------------------------------------------------------------------------------------------------

CURSORS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.binary(max_size=6),
    st.text(max_size=24), st.from_regex(r"[0-9]{1,19}", fullmatch=True),
    st.from_regex(r"\s{0,2}[0-9]{1,21}\s{0,2}", fullmatch=True),
    st.sampled_from(["", " ", "+1", "-0", "-1", "1e3", "0x1", "1_0", "\u0661", "\uff11", "3\n", "\x003", "0" * 19 + "3",
                     str(2**63 - 1), str(2**63), "99999999999999999999", "7", "6", "5", "0"]),
)


def canonical(cursor: object) -> int | None:
    """The chunk a cursor names when it is a plain non-negative decimal (which must never be refused)."""
    if isinstance(cursor, int) and not isinstance(cursor, bool) and 0 <= cursor < 2**63:
        return cursor
    if isinstance(cursor, str) and re.fullmatch(r"[0-9]{1,19}", cursor) and int(cursor) < 2**63:
        return int(cursor)
    return None


@pytest.fixture
def finished(ctx: ResumableStreamContext) -> str:
    """A completed stream of five chunks (cursors 1 to 5; its terminal record is 6)."""
    sid = "cursor-target"
    if ctx.stream_status(sid).state is StreamState.MISSING:
        live = ctx.create_new_resumable_stream(sid, lambda: iter(["a", "b", "c", "d", "e"]))
        assert live is not None and list(live) == ["a", "b", "c", "d", "e"]
    return sid


@given(cursor=CURSORS)
def test_any_cursor_is_a_clear_error_or_resumes_strictly_after_it(ctx: ResumableStreamContext, finished: str,
                                                                  cursor: Any) -> None:
    """``resume_existing_stream(after=...)`` with any value: ``ValueError``, or exactly the chunks after it."""
    plain = canonical(cursor)
    try:
        reader = bounded(lambda: ctx.resume_existing_stream(finished, after=cursor), 30)
    except ValueError:
        assert plain is None, f"a plain cursor {cursor!r} was refused"
        count("cursors refused")
        return
    after = plain if plain is not None else (None if cursor is None else int(str(cursor).strip()))
    if reader is None:
        assert after is None or after >= 6
        count("cursors at or past the end")
        return
    assert after is not None and after < 6
    events = bounded(lambda: [(int(c), x) for c, x in reader.events()], 30)
    assert events == [(i, x) for i, x in enumerate("abcde", 1) if i > after]
    count("cursors resumed")


@pytest.fixture
def resume_app() -> Iterator[flask.testing.FlaskClient]:
    ctx = ResumableStreamContext(MemoryLog())
    live = ctx.create_new_resumable_stream("s", lambda: iter(["a", "b\nevent: x", "c"]))
    assert live is not None and len(list(live)) == 3
    app = flask.Flask(__name__)

    @app.get("/s")
    def resume() -> flask.Response:
        return sse_response(ctx.resume_existing_stream("s", after=resume_cursor()))

    yield app.test_client()
    ctx.close()


@given(header=st.one_of(st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=22),
                        st.from_regex(r"[0-5]", fullmatch=True),
                        CURSORS.filter(lambda c: isinstance(c, str) and "\n" not in c and "\r" not in c
                                       and all(" " <= ch <= "\xff" for ch in c))),
       query=st.one_of(st.none(), st.text(max_size=22), st.from_regex(r"[0-9]{1,3}", fullmatch=True)))
def test_any_last_event_id_or_from_is_400_204_or_the_events_after_it(resume_app: flask.testing.FlaskClient,
                                                                      header: str | None, query: str | None) -> None:
    """The Flask helpers with any ``Last-Event-ID`` and ``?from=``: 400, 204, or SSE strictly after the cursor."""
    headers = {} if header is None else {"Last-Event-ID": header}
    response = bounded(lambda: resume_app.get("/s", headers=headers,
                                              query_string={} if query is None else {"from": query}), 30)
    chosen = header if header is not None and header.strip() else query if query is not None and query.strip() else None
    body = bounded(lambda: response.get_data(), 30)
    if response.status_code == 400:
        assert chosen is not None and canonical(chosen.strip()) is None
        count("Last-Event-ID or from: 400")
        return
    if response.status_code == 204:
        assert body == b"" and (chosen is None or int(chosen.strip()) >= 4)
        count("Last-Event-ID or from: 204")
        return
    assert response.status_code == 200 and chosen is not None
    after = int(chosen.strip())
    events = check_frames(body)
    expected = [(str(i), "message", data) for i, data in ((1, "a"), (2, "b\nevent: x"), (3, "c")) if i > after]
    assert events == [*expected, ("4", "end", "")]
    count("Last-Event-ID or from: 200")


# -- chunk sizes and encodings -----------------------------------------------------------------------------

ENCODINGS = ("ascii", "nul", "escape", "controls", "2-byte", "3-byte", "4-byte", "surrogates", "bytes", "not utf-8")


def make_chunk(encoding: str, size: int, shift: int) -> str | bytes:
    """A chunk of about ``size`` bytes (UTF-8) of ``encoding``; ``shift`` ASCII bytes first move the cut points."""
    head = "s" * shift
    if encoding == "bytes":
        return bytes(range(256)) * (size // 256) + bytes(size % 256)
    if encoding == "not utf-8":
        return (b"\xff\xfe\xc3" * (size // 3 + 1))[:size]
    unit = {"ascii": "a", "nul": "\x00", "escape": "\x1b", "controls": "\x01\x1f\x7f\t", "2-byte": "é",
            "3-byte": "日", "4-byte": "🙂", "surrogates": "a\udc80b\ud83d\ude42c\ud800"}[encoding]
    width = len(unit.encode("utf-8", "surrogatepass"))
    return head + unit * max(1, (size - shift) // width)


@given(encoding=st.sampled_from(ENCODINGS), size=st.sampled_from(LIMITS).flatmap(lambda n: st.integers(n - 3, n + 3)),
       shift=st.integers(0, 3))
@example(encoding="ascii", size=10 * MIB, shift=0)
@example(encoding="controls", size=MAX_RECORD_BODY + 1, shift=1)
@example(encoding="surrogates", size=MAX_RECORD_BODY + 1, shift=2)
@example(encoding="not utf-8", size=MIB + 1, shift=0)
@example(encoding="escape", size=MIB - 1, shift=0)
@example(encoding="3-byte", size=MAX_RECORD_BODY, shift=1)
@example(encoding="nul", size=10 * MIB, shift=1)
@example(encoding="4-byte", size=10 * MIB, shift=3)
@example(encoding="bytes", size=10 * MIB, shift=0)
@settings(max_examples=pick(12, 80))
def test_chunks_around_every_limit_are_written_exactly(s2: S2Client, encoding: str, size: int, shift: int) -> None:
    """A chunk of any size and encoding between two small ones, over HTTP: every reader gets it exactly."""
    if size < 1:
        return
    chunk = make_chunk(encoding, size, shift)
    small: Any = b"<" if isinstance(chunk, bytes) else "<"
    end: Any = b">" if isinstance(chunk, bytes) else ">"
    expected = small + (chunk if isinstance(chunk, bytes) else valid_text(chunk)) + end
    sid = f"limits/{encoding}/{size}/{shift}"
    with ResumableStreamContext(s2) as ctx:
        if ctx.stream_status(sid).state is not StreamState.MISSING:
            return  # generated twice
        live = ctx.create_new_resumable_stream(sid, lambda: iter([small, chunk, end]))
        assert live is not None
        got = bounded(lambda: list(live), 120)
        assert got[0] + got[-1] == small + end and type(got[1]) is type(expected)
        assert got[0][:0].join(got) == expected
        reader = ctx.resume_existing_stream(sid, after=0)
        assert reader is not None
        assert got[0][:0].join(bounded(lambda: list(reader), 120)) == expected
    logged = read_log(s2, sid)  # strictly valid UTF-8 records, the documented layout
    assert logged.state == "completed" and logged.chunks[0][:0].join(logged.chunks) == expected
    assert all(len(c if isinstance(c, bytes) else c.encode()) <= MAX_RECORD_BODY for c in logged.chunks)
    count(f"chunks of {encoding}")


# -- hostile SSE payloads and failure messages --------------------------------------------------------------

HOSTILE = st.lists(st.one_of(st.sampled_from(["\n", "\r", "\r\n", ":", "data:", "event:", "id:", "retry:", "\x00",
                                              "\ufeff", "\u2028", "\u0085", "\ud800", "\udfff", " ", "[DONE]"]),
                             st.characters()), max_size=40).map("".join)


@given(chunks=st.one_of(st.lists(HOSTILE, max_size=8), st.lists(st.binary(max_size=40), max_size=8)),
       ai_sdk=st.booleans())
def test_hostile_chunks_never_add_an_sse_field(chunks: list[Any], ai_sdk: bool) -> None:
    """Any text or bytes as chunks: the creator's and a resumer's bodies are the same, valid, and one event each."""
    with ResumableStreamContext(MemoryLog()) as ctx:
        live = ctx.create_new_resumable_stream("hostile", lambda: iter(chunks))
        assert live is not None
        created = bounded(lambda: b"".join(sse_frames(live, ai_sdk=ai_sdk)), 30)
        reader = ctx.resume_existing_stream("hostile", after=0)
        assert reader is not None
        resumed = bounded(lambda: b"".join(sse_frames(reader, ai_sdk=ai_sdk)), 30)
    assert created == resumed
    events = check_frames(created)
    kept = [sse_text(c) for c in chunks if c]
    assert [e[2] for e in events[: len(kept)]] == kept
    assert [e[0] for e in events[: len(kept)]] == [str(i) for i in range(1, len(kept) + 1)]
    assert [e[1] for e in events[: len(kept)]] == ["message"] * len(kept)
    assert events[len(kept):] == ([(str(len(kept) + 1), "message", "[DONE]")] if ai_sdk
                                   else [(str(len(kept) + 1), "end", "")])
    count("hostile chunk lists")


class SourceFailure(Exception):
    pass


@given(message=st.one_of(HOSTILE, st.text(max_size=20_000), st.just("é" * 9000)),
       shown=st.one_of(st.none(), HOSTILE, st.just("raise")), ai_sdk=st.booleans())
def test_hostile_failure_messages_reach_every_reader_alike(message: str, shown: str | None, ai_sdk: bool) -> None:
    """A source that fails with any message, and an ``error_message`` that returns any text (or raises)."""
    assume(not (ai_sdk and shown == ""))  # test_an_empty_error_message_still_ends_an_ai_sdk_stream_with_an_error
    unhandled: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = unhandled.append

    def source() -> Iterator[str]:
        yield "x"
        raise SourceFailure(message)

    def error_message(failure: StreamFailed) -> str:
        if shown == "raise":
            raise RuntimeError("the application's error_message failed")
        return str(shown)

    try:
        with ResumableStreamContext(MemoryLog()) as ctx:
            live = ctx.create_new_resumable_stream("failing", source)
            assert live is not None
            options: dict[str, Any] = {"ai_sdk": ai_sdk, "error_message": None if shown is None else error_message}
            created = bounded(lambda: b"".join(sse_frames(live, **options)), 30)
            reader = ctx.resume_existing_stream("failing", after=0)
            assert reader is not None
            resumed = bounded(lambda: b"".join(sse_frames(reader, **options)), 30)
            status = ctx.stream_status("failing")
    finally:
        threading.excepthook = previous
    assert not unhandled, unhandled
    assert live.status == reader.status == status and status.state is StreamState.FAILED
    assert status.error is not None and status.error.startswith("SourceFailure")
    assert len(status.error.encode("utf-8")) <= 8192  # strict: valid Unicode
    assert created == resumed
    events = check_frames(created)
    told = GENERIC_ERROR if shown in (None, "raise") else sse_text(shown)
    assert events[0] == ("1", "message", "x")
    if ai_sdk:
        assert [e[1] for e in events[1:]] == ["message", "message"] and events[-1] == ("3", "message", "[DONE]")
        part = json.loads(events[1][2])
        assert part == {"type": "error", "errorText": GENERIC_ERROR if shown in (None, "raise") else valid_text(shown)}
    else:
        assert events[1:] == [("3", "error", told)]
    count("failure messages")


@pytest.mark.parametrize("yielded", [1, None, 2.5, {"a": 1}, ["x"], object()], ids=type)
def test_a_chunk_of_the_wrong_type_fails_the_stream_clearly(yielded: object) -> None:
    """A source yielding something else than ``str``/``bytes`` ends failed, with a ``TypeError`` that says why."""
    with ResumableStreamContext(MemoryLog()) as ctx:
        live = ctx.create_new_resumable_stream("typed", lambda: iter(["ok", yielded]))
        assert live is not None
        with pytest.raises(TypeError, match="must yield str or bytes"):
            bounded(lambda: list(live), 30)
        assert ctx.stream_status("typed").state is StreamState.FAILED


@pytest.mark.parametrize("make_stream", [42, None, "text", b"bytes", lambda: 42],
                         ids=["int", "None", "str", "bytes", "a function returning an int"])
def test_a_make_stream_of_the_wrong_type_fails_the_stream_clearly(make_stream: Any) -> None:
    with ResumableStreamContext(MemoryLog()) as ctx:
        live = ctx.create_new_resumable_stream("typed", make_stream)
        assert live is not None
        with pytest.raises(TypeError, match="make_stream must be"):
            bounded(lambda: list(live), 30)
        assert ctx.stream_status("typed").error.startswith("TypeError")  # type: ignore[union-attr]


def test_an_empty_error_message_still_ends_an_ai_sdk_stream_with_an_error() -> None:
    """``sse._end`` sends the AI SDK's ``error`` part only ``if message``: an empty text drops it."""
    with ResumableStreamContext(MemoryLog()) as ctx:
        def failing() -> Iterator[str]:
            yield "x"
            raise SourceFailure("quota")

        live = ctx.create_new_resumable_stream("empty-message", failing)
        assert live is not None
        body = bounded(lambda: b"".join(sse_frames(live, ai_sdk=True, error_message=lambda failure: "")), 30)
    parts = [json.loads(e[2]) for e in check_frames(body)[1:-1]]
    assert parts == [{"type": "error", "errorText": ""}]


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be shown")


class NotText(Exception):
    def __str__(self) -> Any:
        return 42


@pytest.mark.parametrize("exception", [Unprintable, NotText], ids=["str raises", "str is not text"])
def test_a_source_exception_that_cannot_be_shown_is_recorded_as_a_failure(exception: type[Exception]) -> None:
    """``describe_failure`` calls ``str()`` on the source's exception, under no guard: when that raises, the
    source thread dies (an unhandled exception), no terminal record is written, and while the creator sees the
    stream failed, every other reader waits for the silence bound and sees it abandoned."""
    unhandled: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = unhandled.append

    def source() -> Iterator[str]:
        yield "x"
        raise exception()

    try:
        with ResumableStreamContext(MemoryLog(), abandon_after=2) as ctx:
            live = ctx.create_new_resumable_stream("unprintable", source)
            assert live is not None
            with pytest.raises(exception):
                bounded(lambda: list(live), 30)
            reader = ctx.resume_existing_stream("unprintable", after=0)
            assert reader is not None
            with pytest.raises(StreamFailed):
                bounded(lambda: list(reader), 30)
            assert ctx.stream_status("unprintable").state is StreamState.FAILED
    finally:
        threading.excepthook = previous
    assert not unhandled, [u.exc_value for u in unhandled]


def test_record_what_was_generated(record: Callable[..., None]) -> None:
    """What the properties of this module generated and how each case ended (it runs last in the module)."""
    record(examples_per_property=settings().max_examples, **observed)
    assert observed, "no example ran"
