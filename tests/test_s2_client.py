"""S2Client against the local S2-compatible server over real HTTP: configuration, errors, retries, concurrency.

Faults (error statuses, latency, dropped connections, commit-then-drop) are
injected by the server, per operation and stream.
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from resumable_stream import (
    BadRequest,
    ConfigurationError,
    FencingTokenMismatch,
    NotFound,
    RateLimited,
    ReadBatch,
    Record,
    RetryPolicy,
    S2Client,
    SeqNumMismatch,
    StreamPosition,
    TextBatch,
    Unavailable,
)
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY, answering, serving

TOKEN = "secret-token-value-1234"
S2_VARS = ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT")
GOOD = {"S2_ACCESS_TOKEN": TOKEN, "S2_BASIN": "my-basin-1"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in S2_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def client_for(server: S2Server, **kwargs: object) -> S2Client:
    settings: dict[str, object] = {
        "access_token": TOKEN,
        "basin": BASIN,
        "account_endpoint": server.url,
        "basin_endpoint": server.url,
        "retry": FAST_RETRY,
    }
    settings.update(kwargs)
    return S2Client(**settings)  # type: ignore[arg-type]


@pytest.fixture
def client(s2_server: S2Server) -> Iterator[S2Client]:
    s2_server.faults.clear()
    with client_for(s2_server) as c:
        yield c
    s2_server.faults.clear()


def bodies(client: S2Client, stream: str) -> list[bytes]:
    return [r.body for r in client.read(stream, seq_num=0).records]


# -- configuration ---------------------------------------------------------


def test_configuration_from_the_environment(clean_env: pytest.MonkeyPatch, s2_server: S2Server) -> None:
    for name, value in s2_server.env(BASIN).items():
        clean_env.setenv(name, value)
    with S2Client(retry=FAST_RETRY) as c:
        assert c.basin == BASIN
        assert c.direct_basin
        assert c.basin_endpoint == s2_server.url + "/v1"
        c.append("env-configured", [Record(b"hello")])
        assert bodies(c, "env-configured")[-1] == b"hello"


def test_cloud_defaults_and_basin_templates(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("S2_ACCESS_TOKEN", TOKEN)
    clean_env.setenv("S2_BASIN", "my-basin-1")
    c = S2Client()
    assert c.account_endpoint == "https://a.s2.dev/v1"
    assert c.basin_endpoint == "https://my-basin-1.b.s2.dev/v1"
    assert not c.direct_basin
    c.close()
    c = S2Client(basin_endpoint="http://{basin}.localhost:8080", account_endpoint="localhost:8080/api/v1/")
    assert c.basin_endpoint == "http://my-basin-1.localhost:8080/v1"
    assert c.account_endpoint == "https://localhost:8080/api/v1"
    c.close()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"S2_BASIN": "my-basin-1"}, "S2_ACCESS_TOKEN"),
        ({"S2_ACCESS_TOKEN": TOKEN}, "S2_BASIN"),
        ({"S2_ACCESS_TOKEN": TOKEN, "S2_BASIN": "Bad_Basin"}, "S2_BASIN"),
        ({"S2_ACCESS_TOKEN": TOKEN, "S2_BASIN": "short"}, "S2_BASIN"),
        ({"S2_ACCESS_TOKEN": TOKEN, "S2_BASIN": "-my-basin"}, "S2_BASIN"),
        ({**GOOD, "S2_ACCOUNT_ENDPOINT": "ftp://x"}, "S2_ACCOUNT_ENDPOINT"),
        ({**GOOD, "S2_BASIN_ENDPOINT": "http://"}, "S2_BASIN_ENDPOINT"),
        ({**GOOD, "S2_BASIN_ENDPOINT": "http://h:99999"}, "S2_BASIN_ENDPOINT"),
        ({**GOOD, "S2_BASIN_ENDPOINT": "http://h/?q=1"}, "S2_BASIN_ENDPOINT"),
    ],
)
def test_bad_configuration_names_the_variable(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        S2Client()
    assert info.value.variable == variable
    assert variable in str(info.value)
    assert TOKEN not in str(info.value)


def test_the_token_never_shows(s2_server: S2Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s2_server.faults.add("append", status=503, times=1)
    s2_server.faults.add("read", status=404, code="stream_not_found", times=1)
    with client_for(s2_server) as c:
        assert TOKEN not in repr(c)
        c.append("token-check", [Record(b"x")], match_seq_num=0)  # retried once, logged
        with pytest.raises(NotFound) as info:
            c.read("token-check", seq_num=0)
        assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)
    assert "retrying" in caplog.text
    assert TOKEN not in caplog.text


# -- errors ----------------------------------------------------------------


def test_errors_map_to_the_exception_tree(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("read", status=422, code="invalid", message="nope", times=1)
    with pytest.raises(BadRequest) as info:
        client.read("errors", seq_num=0)
    assert (info.value.status, info.value.code) == (422, "invalid")
    assert "nope" in str(info.value)
    s2_server.faults.add("check_tail", status=403, code="permission_denied", times=1)
    with pytest.raises(Exception) as denied:
        client.check_tail("errors")
    assert type(denied.value).__name__ == "PermissionDenied"


def test_4xx_is_never_retried(client: S2Client, s2_server: S2Server) -> None:
    # Two 404s are queued; if the first call retried, the second call would succeed.
    s2_server.faults.add("check_tail", stream="no-retry", status=404, code="stream_not_found", times=2)
    with pytest.raises(NotFound):
        client.check_tail("no-retry")
    with pytest.raises(NotFound):
        client.check_tail("no-retry")
    assert client.check_tail("no-retry").seq_num == 0


@pytest.mark.parametrize(
    ("status", "code"),
    [(408, "request_timeout"), (429, "rate_limited"), (500, "storage"), (502, "hot_server"), (503, "unavailable"),
     (504, "upstream_timeout"), (409, "transaction_conflict")],
)
def test_retryable_statuses_are_retried(client: S2Client, s2_server: S2Server, status: int, code: str) -> None:
    stream = f"retry-me-{status}"
    s2_server.faults.add("read", stream=stream, status=status, code=code, times=2)
    s2_server.faults.add("append", stream=stream, status=status, code=code, times=2)
    client.append(stream, [Record(b"x")], match_seq_num=0)
    assert bodies(client, stream) == [b"x"]


def test_retries_give_up_with_the_last_error(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("check_tail", stream="down", status=503, code="unavailable")
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        client.check_tail("down")
    assert info.value.status == 503
    assert time.monotonic() - started < 10
    s2_server.faults.add("check_tail", stream="limited", status=429, code="rate_limited")
    with pytest.raises(RateLimited):
        client.check_tail("limited")


def test_retry_after_ms_is_honoured(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("check_tail", stream="slow-down", status=429, code="rate_limited", retry_after_ms=700, times=1)
    started = time.monotonic()
    client.check_tail("slow-down")
    assert time.monotonic() - started >= 0.7


def test_retry_policy_is_configurable(s2_server: S2Server) -> None:
    s2_server.faults.add("check_tail", stream="once", status=503, times=1)
    with client_for(s2_server, retry=RetryPolicy(max_attempts=1)) as c, pytest.raises(Unavailable):
        c.check_tail("once")
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    url = f"http://127.0.0.1:{port}"
    with S2Client(access_token=TOKEN, basin=BASIN, account_endpoint=url, basin_endpoint=url, retry=FAST_RETRY) as c:
        with pytest.raises(Unavailable, match="ConnectionError"):
            c.check_tail("x")
        with pytest.raises(Unavailable):
            c.append("x", [Record(b"x")])  # refused before sending: safe to retry, still down


def test_read_timeouts_are_retried(s2_server: S2Server) -> None:
    with client_for(s2_server, request_timeout=0.3) as c:
        c.append("timeouts", [Record(b"x")])
        s2_server.faults.add("read", stream="timeouts", latency=1.0, times=1)
        assert bodies(c, "timeouts") == [b"x"]


# -- appends are never duplicated ------------------------------------------


def test_a_lost_answer_does_not_duplicate_a_conditional_append(client: S2Client, s2_server: S2Server) -> None:
    client.append("dedup", [Record(b"first")])
    s2_server.faults.add("append", stream="dedup", drop_after_commit=True, times=1)
    ack = client.append("dedup", [Record(b"second"), Record(b"third")], match_seq_num=1)
    assert (ack.start.seq_num, ack.end.seq_num) == (1, 3)
    assert bodies(client, "dedup") == [b"first", b"second", b"third"]


def test_a_dropped_request_is_sent_again(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("append", stream="dropped", drop=True, times=1)
    ack = client.append("dropped", [Record(b"once")], match_seq_num=0, fencing_token="")
    assert ack.start.seq_num == 0
    assert bodies(client, "dropped") == [b"once"]


def test_a_slow_append_that_lands_after_the_timeout_is_not_duplicated(s2_server: S2Server) -> None:
    # The first attempt times out but is committed later, racing the retry.
    s2_server.faults.add("append", stream="late", latency=0.8, times=1)
    with client_for(s2_server, request_timeout=0.3) as c:
        ack = c.append("late", [Record(b"only once")], match_seq_num=0)
        assert ack.start.seq_num == 0
        time.sleep(1.0)
        assert bodies(c, "late") == [b"only once"]


def test_an_unconditional_append_is_not_retried_when_its_outcome_is_unknown(
    client: S2Client, s2_server: S2Server
) -> None:
    s2_server.faults.add("append", stream="ambiguous", drop_after_commit=True, times=1)
    with pytest.raises(Unavailable):
        client.append("ambiguous", [Record(b"maybe")])
    assert bodies(client, "ambiguous") == [b"maybe"]  # landed once, not twice


def test_someone_else_at_the_position_is_a_mismatch_not_a_success(client: S2Client, s2_server: S2Server) -> None:
    client.append("contested", [Record(b"a")])
    s2_server.faults.add("append", stream="contested", drop=True, times=1)
    patient = client_for(s2_server, retry=RetryPolicy(max_attempts=3, initial_backoff=0.6, max_backoff=0.6))
    # Our first attempt is lost; during the backoff, another writer takes position 1.
    other = threading.Timer(0.2, lambda: client.append("contested", [Record(b"theirs")]))
    other.start()
    with patient, pytest.raises(SeqNumMismatch) as info:
        patient.append("contested", [Record(b"ours")], match_seq_num=1)
    other.join()
    assert info.value.next_seq_num == 2
    assert bodies(client, "contested") == [b"a", b"theirs"]


def test_unsafe_failures_are_retried_when_nothing_was_written(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("append", stream="safe", status=429, code="rate_limited", times=1)
    client.append("safe", [Record(b"x")])  # 429 guarantees no side effects: retried even without match_seq_num
    assert bodies(client, "safe") == [b"x"]


def test_fencing_errors_are_not_retried(client: S2Client) -> None:
    client.append("fenced", [Record.fence("mine")])
    with pytest.raises(FencingTokenMismatch) as info:
        client.append("fenced", [Record(b"x")], fencing_token="yours")
    assert info.value.current_token == "mine"


# -- threads ----------------------------------------------------------------


def test_one_client_shared_by_many_threads(client: S2Client) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                client.append(f"shared-{n % 4}", [Record(f"{n}-{i}".encode())])
            client.read(f"shared-{n % 4}", seq_num=0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sum(client.check_tail(f"shared-{k}").seq_num for k in range(4)) == 16 * 20


def test_appends_with_a_timeout_never_wait_behind_other_requests(s2_server: S2Server) -> None:
    # One connection of each kind: a long-poll holds the only one for other requests, and an append with a
    # timeout (as the writer's are) still goes at once.
    with client_for(s2_server, max_connections=1) as c:
        c.append("lanes-polled", [Record(b"x")])
        poll = threading.Thread(target=lambda: c.read("lanes-polled", seq_num=1, wait=5))
        poll.start()
        try:
            time.sleep(0.3)  # the long-poll has its connection
            assert c.append("lanes-written", [Record(b"y")], timeout=5).end.seq_num == 1
            assert poll.is_alive()  # the append did not wait for the long-poll's connection
        finally:
            poll.join(timeout=10)


def test_a_wait_for_a_connection_is_not_retried(s2_server: S2Server, caplog: pytest.LogCaptureFixture) -> None:
    # The one connection for other requests is held by a long-poll for longer than a request may wait for it
    # (as long as a call may take under the retry policy: its budget and one attempt's timeouts): the check
    # fails once, plainly, without a retry that would only queue it again behind the same crowd.
    retry = RetryPolicy(max_attempts=5, max_elapsed=0.5, initial_backoff=0.05, max_backoff=0.05)
    with client_for(s2_server, max_connections=1, retry=retry, connect_timeout=0.2, request_timeout=0.3) as c:
        c.append("queued-polled", [Record(b"x")])
        poll = threading.Thread(target=lambda: c.read("queued-polled", seq_num=1, wait=3))
        poll.start()
        try:
            time.sleep(0.3)
            with caplog.at_level(logging.WARNING, logger="resumable_stream"), \
                    pytest.raises(Unavailable, match=r"no connection came free within 1\.0 s"):
                c.check_tail("queued-other")
            assert not [r for r in caplog.records if "retrying" in r.getMessage()]
        finally:
            poll.join(timeout=10)


def test_an_unbounded_retry_budget_waits_for_a_connection(s2_server: S2Server) -> None:
    retry = RetryPolicy(max_attempts=5, max_elapsed=math.inf, initial_backoff=0.05, max_backoff=0.05)
    with client_for(s2_server, max_connections=1, retry=retry) as c:
        c.append("unbounded-polled", [Record(b"x")])
        poll = threading.Thread(target=lambda: c.read("unbounded-polled", seq_num=1, wait=1))
        poll.start()
        try:
            time.sleep(0.3)
            assert c.check_tail("unbounded-other").seq_num == 0  # once the long-poll has its answer
        finally:
            poll.join(timeout=10)


def test_close_cuts_a_backoff_short(s2_server: S2Server) -> None:
    s2_server.faults.add("check_tail", stream="closing", status=503)
    c = client_for(s2_server, retry=RetryPolicy(max_attempts=50, max_elapsed=60, initial_backoff=2, max_backoff=2))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.check_tail("closing")
        except Unavailable as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    started = time.monotonic()
    worker.start()
    time.sleep(0.3)
    c.close()
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert time.monotonic() - started < 5
    assert errors


def test_ensure_basin_and_stream(s2_server: S2Server) -> None:
    with client_for(s2_server, basin="fresh-basin-1") as c:
        with pytest.raises(NotFound):
            c.check_tail("s")
        c.ensure_basin()
        c.ensure_basin()
        c.ensure_stream("s")
        c.ensure_stream("s", {"timestamping": {"mode": "arrival"}})
        assert c.check_tail("s").seq_num == 0


def test_ensure_without_a_config_leaves_an_existing_one_alone(client: S2Client, s2_server: S2Server) -> None:
    client.ensure_stream("configured", {"timestamping": {"mode": "arrival"}})
    client.ensure_stream("configured")
    assert s2_server.basin_log(BASIN).stream_info("configured").config == {"timestamping": {"mode": "arrival"}}
    with client_for(s2_server, basin="kept-basin-1") as other:
        other.ensure_basin({"create_stream_on_append": True, "create_stream_on_read": True})
        other.ensure_basin()
        assert other.check_tail("auto-created").seq_num == 0  # the basin still creates streams on read


def test_a_late_commit_of_a_fenced_append_is_ours_not_a_conflict(s2_server: S2Server) -> None:
    # Attempt 1 times out after 1 s but commits at 1.5 s. The tail shows nothing yet, so the batch is
    # sent again; delayed 0.7 s, it arrives after that commit and fails the fencing condition because
    # of our own fence. That is a success, not "someone else's token".
    s2_server.faults.add("append", stream="late-fence", latency=1.5, times=1)
    delay_resend = threading.Timer(0.3, lambda: s2_server.faults.add("append", stream="late-fence", latency=0.7,
                                                                      times=1))
    retry = RetryPolicy(max_attempts=4, max_elapsed=10, initial_backoff=0.05, max_backoff=0.05)
    with client_for(s2_server, request_timeout=1.0, retry=retry) as c:
        delay_resend.start()
        ack = c.append("late-fence", [Record.fence("session-mine")], fencing_token="", match_seq_num=0)
        delay_resend.join()
        assert (ack.start.seq_num, ack.end.seq_num) == (0, 1)
        assert [r.body for r in c.read("late-fence", seq_num=0).records] == [b"session-mine"]


def test_a_competing_fence_during_an_ambiguous_claim_is_reported_as_such(client: S2Client, s2_server: S2Server) -> None:
    s2_server.faults.add("append", stream="two-claims", drop=True, times=1)
    patient = client_for(s2_server, retry=RetryPolicy(max_attempts=3, initial_backoff=0.6, max_backoff=0.6))
    other = threading.Timer(0.2, lambda: client.append("two-claims", [Record.fence("theirs")], fencing_token=""))
    other.start()
    with patient, pytest.raises(FencingTokenMismatch) as info:
        patient.append("two-claims", [Record.fence("ours")], fencing_token="", match_seq_num=0)
    other.join()
    assert info.value.current_token == "theirs"


def test_an_unexpected_answer_is_unavailable_and_retried(s2_server: S2Server) -> None:
    proxy = answering(b"<html>502 from a proxy, with a 200</html>", "text/html")
    with serving(proxy) as url:
        proxied = S2Client(access_token=TOKEN, basin=BASIN, account_endpoint=url, basin_endpoint=url, retry=FAST_RETRY)
        with proxied, pytest.raises(Unavailable, match="unexpected response"):
            proxied.check_tail("x")
        assert proxy.calls == FAST_RETRY.max_attempts


def test_a_text_session_hands_plain_text_batches_over_as_text(client: S2Client) -> None:
    # A batch of plain text records comes as a TextBatch (no bytes made, none decoded back); a batch
    # with any other record in it as a ReadBatch.
    client.append("plain", [Record(f"token {i} ✓".encode()) for i in range(500)])
    session = client.read_session("plain", seq_num=0, count=500, text=True)
    batches = [b for b in session if not isinstance(b, StreamPosition)]
    assert batches and all(isinstance(b, TextBatch) for b in batches)
    assert [t for b in batches for t in b.texts] == [f"token {i} ✓" for i in range(500)]
    assert [r for b in batches for r in b.records] == list(client.read("plain", seq_num=0).records)
    client.append("mixed", [Record(b"one"), Record(b"", ((b"rs", b"heartbeat"),)), Record(b"two")])
    [mixed] = [b for b in client.read_session("mixed", seq_num=0, count=3, text=True) if isinstance(b, ReadBatch)]
    assert [(r.body, r.headers) for r in mixed.records] == [(b"one", ()), (b"", ((b"rs", b"heartbeat"),)),
                                                           (b"two", ())]


@pytest.mark.parametrize("body", ['"\\ud800"', "5", '""'])
def test_a_text_batch_that_is_not_text_is_refused_or_read_as_bytes(body: str) -> None:
    # A lone surrogate or a body that is not a string cannot be text: the session fails as for any
    # malformed event. An empty body is a record of its own kind, read through the general path.
    events = b'event: batch\ndata: {"records":[{"seq_num":0,"timestamp":1,"body":%s}]}\n\ndata: [DONE]\n\n'
    with serving(answering(events % body.encode())) as url, S2Client(
        access_token=TOKEN, basin=BASIN, account_endpoint=url, basin_endpoint=url, retry=FAST_RETRY
    ) as c:
        session = c.read_session("x", seq_num=0, text=True)
        if body == '""':
            [batch] = list(session)
            assert isinstance(batch, ReadBatch) and batch.records[0].body == b""
        else:
            with pytest.raises(Unavailable, match="unexpected event"):
                next(session)


def test_a_long_poll_is_retried_even_past_the_retry_budget(s2_server: S2Server) -> None:
    # The first long-poll is cut after 1.5 s, beyond max_elapsed=1: reads are safe to retry, and a
    # long-poll is allowed its wait on top of the budget.
    retry = RetryPolicy(max_attempts=3, max_elapsed=1.0, initial_backoff=0.05, max_backoff=0.05)
    with client_for(s2_server, retry=retry) as c:
        c.append("cut-poll", [Record(b"x")])
        s2_server.faults.add("read", stream="cut-poll", latency=1.5, drop=True, times=1)
        assert c.read("cut-poll", seq_num=1, wait=2).records == ()


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def test_no_raised_exception_leads_back_to_the_token(s2_server: S2Server) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    failures: list[BaseException] = []
    with S2Client(access_token=TOKEN, basin=BASIN, account_endpoint=dead, basin_endpoint=dead,
                  retry=FAST_RETRY) as c:
        with pytest.raises(Unavailable) as refused:
            c.check_tail("x")
        failures.append(refused.value)
    s2_server.faults.add("read", stream="leak", latency=1.0)
    with client_for(s2_server, request_timeout=0.2) as c:
        with pytest.raises(Unavailable) as timed_out:
            c.read("leak", seq_num=0)
        failures.append(timed_out.value)
    for failure in failures:
        for linked in _chain(failure):
            assert not isinstance(linked, requests.RequestException), f"{linked!r} holds the request"
            assert TOKEN not in repr(linked) and TOKEN not in str(vars(linked))


@pytest.mark.parametrize(
    "token", [TOKEN + "\n", TOKEN + "\r\nX-Evil: 1", "tökén-" + TOKEN, TOKEN + " x", "\x00" + TOKEN]
)
def test_a_malformed_token_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        S2Client(access_token=token, basin=BASIN, account_endpoint="http://127.0.0.1:9",
                 basin_endpoint="http://127.0.0.1:9")
    assert info.value.variable == "S2_ACCESS_TOKEN"
    for text in (str(info.value), repr(info.value), repr(info.value.args)):
        assert TOKEN not in text and "tök" not in text


def _frame_locals(exc: BaseException) -> Iterator[str]:
    """repr() of every local of every frame of ``exc``'s traceback, as a locals-capturing tool records them."""
    for linked in _chain(exc):
        tb = linked.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                try:
                    yield repr(value)
                except Exception:
                    continue
            tb = tb.tb_next


def test_the_token_is_in_no_frame_local_of_a_failure(s2_server: S2Server) -> None:
    s2_server.faults.add("append", status=503)
    try:
        with client_for(s2_server) as c, pytest.raises(Unavailable) as info:
            c.append("locals", [Record(b"x")], match_seq_num=0)  # retried by tenacity, then given up
        assert all(TOKEN not in text for text in _frame_locals(info.value))
    finally:
        s2_server.faults.clear()


def test_a_client_whose_constructor_raised_has_a_repr() -> None:
    broken = S2Client.__new__(S2Client)
    assert repr(broken).startswith("<S2Client")
