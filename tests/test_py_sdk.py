"""Independent clients against the local S2-compatible server: S2's official Python SDK (``s2-sdk``, PyPI).

The SDK speaks only HTTP/2 (cleartext, prior knowledge) with protobuf bodies
for appends and reads and S2S for sessions: every check here goes through the
server's HTTP/2 transport, on the SDK's defaults. It needs Python 3.11+; the
``dev`` extra installs it there, and these tests fail (never skip) without it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from resumable_stream.testing import S2Server

if sys.version_info < (3, 11):  # pragma: no cover - the SDK needs 3.11
    pytest.skip("s2-sdk needs Python 3.11 or newer", allow_module_level=True)

if importlib.util.find_spec("s2_sdk") is None:  # pragma: no cover
    pytest.fail("s2-sdk is not installed; `make test` installs the dev extra", pytrace=False)

from s2_sdk import (
    S2,
    AppendInput,
    BasinConfig,
    CommandRecord,
    Endpoints,
    FencingTokenMismatchError,
    ReadLimit,
    ReadUnwrittenError,
    Record,
    Retry,
    S2ServerError,
    SeqNum,
    SeqNumMismatchError,
)

BASIN = "py-sdk-basin"
MANUAL_BASIN = "py-sdk-manual"  # no streams on demand
T = TypeVar("T")


@pytest.fixture(scope="module")
def server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN,), heartbeat_interval=0.5) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_faults(server: S2Server) -> Iterator[None]:
    server.faults.clear()
    yield
    server.faults.clear()


def run(server: S2Server, body: Callable[[S2], Awaitable[T]], timeout: float = 30) -> T:
    """Run ``body(s2)`` with an SDK client of the server, no retries, under a deadline."""

    async def main() -> T:
        async with S2("any-token", endpoints=Endpoints(account=server.url, basin=server.url), retry=Retry(1)) as s2:
            return await asyncio.wait_for(body(s2), timeout)

    return asyncio.run(main())


async def bodies_of(session: Any) -> list[bytes]:
    return [record.body async for batch in session for record in batch.records]


def test_append_read_and_check_tail_round_trip(server: S2Server) -> None:
    async def body(s2: S2) -> Any:
        stream = s2.basin(BASIN).stream("round-trip")
        records = [Record(body=b"\xff\x00 binary", headers=[(b"k", b"\x01v")]), Record(body="héllo".encode())]
        ack = await stream.append(AppendInput(records=records))
        batch = await stream.read(start=SeqNum(0))
        return ack, batch, await stream.check_tail()

    ack, batch, tail = run(server, body)
    assert (ack.start.seq_num, ack.end.seq_num, ack.tail.seq_num) == (0, 2, 2)
    assert [(r.seq_num, r.body, r.headers) for r in batch.records] == [
        (0, b"\xff\x00 binary", [(b"k", b"\x01v")]),
        (1, "héllo".encode(), []),
    ]
    assert (tail.seq_num, tail.timestamp) == (2, ack.end.timestamp)


def test_fencing_and_match_seq_num(server: S2Server) -> None:
    async def body(s2: S2) -> Any:
        stream = s2.basin(BASIN).stream("fenced")
        await stream.append(AppendInput(records=[CommandRecord.fence("writer-1")]))
        errors: list[BaseException] = []
        for attempt in (
            AppendInput(records=[Record(body=b"x")], fencing_token="nope"),
            AppendInput(records=[Record(body=b"x")], fencing_token="writer-1", match_seq_num=0),
        ):
            try:
                await stream.append(attempt)
            except BaseException as exc:
                errors.append(exc)
        ok = await stream.append(AppendInput(records=[Record(body=b"y")], fencing_token="writer-1", match_seq_num=1))
        return errors, ok

    errors, ok = run(server, body)
    assert isinstance(errors[0], FencingTokenMismatchError) and errors[0].expected_fencing_token == "writer-1"
    assert isinstance(errors[1], SeqNumMismatchError) and errors[1].expected_seq_num == 1
    assert ok.start.seq_num == 1


def test_reading_past_the_tail_is_416_with_the_tail(server: S2Server) -> None:
    async def body(s2: S2) -> BaseException:
        stream = s2.basin(BASIN).stream("past-the-tail")
        await stream.append(AppendInput(records=[Record(body=b"x")]))
        try:
            await stream.read(start=SeqNum(5))
        except ReadUnwrittenError as exc:
            return exc
        raise AssertionError("no 416")

    error = run(server, body)
    assert isinstance(error, ReadUnwrittenError) and error.tail.seq_num == 1


def test_a_long_poll_wakes_up_when_a_record_lands(server: S2Server) -> None:
    async def body(s2: S2) -> list[bytes]:
        stream = s2.basin(BASIN).stream("long-poll")
        poll = asyncio.create_task(stream.read(start=SeqNum(0), wait=20))
        await asyncio.sleep(0.3)
        await stream.append(AppendInput(records=[Record(body=b"woken")]))
        return [r.body for r in (await poll).records]

    assert run(server, body, timeout=10) == [b"woken"]


def test_sessions_deliver_new_records(server: S2Server) -> None:
    async def body(s2: S2) -> tuple[list[int], list[bytes]]:
        stream = s2.basin(BASIN).stream("sessions")
        reader = stream.read_session(start=SeqNum(0), limit=ReadLimit(count=3), wait=10)
        reading = asyncio.create_task(bodies_of(reader))
        acks = []
        async with stream.append_session() as session:
            for text in (b"a", b"b", b"c"):
                await asyncio.sleep(0.1)
                acks.append((await (await session.submit(AppendInput(records=[Record(body=text)])))).start.seq_num)
        return acks, await reading

    assert run(server, body) == ([0, 1, 2], [b"a", b"b", b"c"])


def test_an_append_session_refuses_a_wrong_fencing_token(server: S2Server) -> None:
    async def body(s2: S2) -> BaseException:
        stream = s2.basin(BASIN).stream("session-fenced")
        await stream.append(AppendInput(records=[CommandRecord.fence("owner")]))
        try:
            async with stream.append_session() as session:
                await (await session.submit(AppendInput(records=[Record(body=b"x")], fencing_token="intruder")))
        except BaseException as exc:
            return exc
        raise AssertionError("the session accepted a wrong token")

    error = run(server, body)
    cause = error if isinstance(error, FencingTokenMismatchError) else error.__cause__ or error
    assert isinstance(cause, FencingTokenMismatchError), repr(error)
    assert cause.expected_fencing_token == "owner"


def test_names_that_need_percent_encoding(server: S2Server) -> None:
    name = "chat/42 ü%?#"

    async def body(s2: S2) -> list[bytes]:
        stream = s2.basin(BASIN).stream(name)
        await stream.append(AppendInput(records=[Record(body=b"odd")]))
        return await bodies_of(stream.read_session(start=SeqNum(0), limit=ReadLimit(count=1)))

    assert run(server, body) == [b"odd"]
    assert server.basin_log(BASIN).check_tail(name).seq_num == 1


def test_error_bodies(server: S2Server) -> None:
    async def body(s2: S2) -> list[BaseException]:
        await s2.ensure_basin(MANUAL_BASIN, config=BasinConfig(create_stream_on_append=False))
        errors: list[BaseException] = []
        for call in (
            lambda: s2.basin(MANUAL_BASIN).stream("missing").append(AppendInput(records=[Record(body=b"x")])),
            lambda: s2.basin(MANUAL_BASIN).stream("missing").check_tail(),
            lambda: s2.create_basin(MANUAL_BASIN),
            lambda: s2.basin("no-such-basin").stream("s").check_tail(),
        ):
            try:
                await call()
            except S2ServerError as exc:
                errors.append(exc)
        return errors

    found = [(e.status_code, e.code) for e in run(server, body) if isinstance(e, S2ServerError)]
    assert found == [
        (404, "stream_not_found"),
        (404, "stream_not_found"),
        (409, "resource_already_exists"),
        (404, "basin_not_found"),
    ]


def test_faults_apply_to_unary_calls_and_sessions(server: S2Server) -> None:
    server.faults.add("append", "faulty", status=503, times=2)
    server.faults.add("read", "faulty", code="rate_limited", times=1)

    async def body(s2: S2) -> list[Any]:
        stream = s2.basin(BASIN).stream("faulty")
        outcomes: list[Any] = []
        for call in (
            lambda: stream.append(AppendInput(records=[Record(body=b"lost")])),
            lambda: _session_append(stream, b"lost too"),
            lambda: bodies_of(stream.read_session(start=SeqNum(0))),
        ):
            try:
                outcomes.append(await call())
            except Exception as exc:
                outcomes.append(exc)
        outcomes.append((await stream.append(AppendInput(records=[Record(body=b"kept")]))).start.seq_num)
        return outcomes

    outcomes = run(server, body)
    statuses = [getattr(getattr(o, "__cause__", None) or o, "status_code", o) for o in outcomes[:3]]
    assert statuses == [503, 503, 429]
    assert outcomes[3] == 0  # nothing faulted was appended


async def _session_append(stream: Any, data: bytes) -> Any:
    async with stream.append_session() as session:
        return await (await session.submit(AppendInput(records=[Record(body=data)])))


def test_a_dropped_connection_is_a_transport_error_and_nothing_lands(server: S2Server) -> None:
    server.faults.add("append", "dropped", drop=True, times=1)

    async def body(s2: S2) -> tuple[BaseException | None, int]:
        stream = s2.basin(BASIN).stream("dropped")
        error = None
        try:
            await stream.append(AppendInput(records=[Record(body=b"lost")]))
        except Exception as exc:
            error = exc
        return error, (await stream.append(AppendInput(records=[Record(body=b"kept")]))).start.seq_num

    error, seq_num = run(server, body)
    assert error is not None and not isinstance(error, S2ServerError)
    assert seq_num == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"wait": 0}, [b"a"]),  # wait=0 ends at the tail
        ({"limit": ReadLimit(count=5)}, [b"a"]),  # bounded, no wait: ends at the tail
        ({"wait": 1}, [b"a"]),  # ends one second after the last record
    ],
)
def test_s2s_read_sessions_follow_s2s_wait_rules(server: S2Server, options: dict[str, Any], expected: Any) -> None:
    async def body(s2: S2) -> list[bytes]:
        stream = s2.basin(BASIN).stream(f"wait-{sorted(options)}-{id(options)}")
        await stream.append(AppendInput(records=[Record(body=b"a")]))
        return await bodies_of(stream.read_session(start=SeqNum(0), **options))

    assert run(server, body, timeout=10) == expected


def test_latency_and_commit_then_drop_over_http2(server: S2Server) -> None:
    server.faults.add("check_tail", "slow", latency=0.5, times=1)
    server.faults.add("append", "committed", drop_after_commit=True, times=1)

    async def body(s2: S2) -> tuple[float, BaseException | None, list[bytes]]:
        started = asyncio.get_running_loop().time()
        await s2.basin(BASIN).stream("slow").check_tail()
        slow = asyncio.get_running_loop().time() - started
        stream = s2.basin(BASIN).stream("committed")
        error = None
        try:
            await _session_append(stream, b"landed")
        except Exception as exc:
            error = exc
        return slow, error, [r.body for r in (await stream.read(start=SeqNum(0))).records]

    slow, error, landed = run(server, body)
    assert slow >= 0.5
    assert error is not None and landed == [b"landed"]  # appended, then the connection was cut
