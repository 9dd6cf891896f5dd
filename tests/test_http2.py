"""Read sessions over HTTP/2 (``S2Client(http2=True)``) against the local server: many sessions on few
connections, a lost connection, and an endpoint that does not speak HTTP/2.

The rest of S2Client's read semantics runs over HTTP/2 too: the ``log`` fixture's ``s2-http2`` variant.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError

from resumable_stream import ReadBatch, Record, S2Client, TextBatch, Unavailable, _http2
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY, answering, serving

pytest.importorskip("h2")


@pytest.fixture
def server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN,), heartbeat_interval=1.0) as s:
        yield s


def client_for(url: str, **options: object) -> S2Client:
    return S2Client(access_token="t", basin=BASIN, account_endpoint=url, basin_endpoint=url, retry=FAST_RETRY,
                    http2=True, **options)  # type: ignore[arg-type]


def follow(client: S2Client, stream: str, count: int, got: list[bytes], ready: threading.Event) -> None:
    """Read ``count`` records of ``stream`` from its start, with one session."""
    session = client.read_session(stream, seq_num=0, wait=10)
    try:
        for item in session:
            ready.set()  # a heartbeat came: the session is open
            if isinstance(item, (ReadBatch, TextBatch)):
                got.extend(r.body for r in item.records)
                if len(got) >= count:
                    return
    finally:
        session.close()


def test_many_sessions_share_a_few_connections(server: S2Server) -> None:
    # 150 sessions following 150 streams at once: over HTTP/1.1 that is 150 connections; over HTTP/2 the
    # server allows 100 streams per connection, so two, beside the one the appends use.
    n = 150
    with client_for(server.url) as client:
        got: list[list[bytes]] = [[] for _ in range(n)]
        ready = [threading.Event() for _ in range(n)]
        threads = [threading.Thread(target=follow, args=(client, f"many-{i}", 3, got[i], ready[i]), daemon=True)
                   for i in range(n)]
        for i in range(n):
            client.append(f"many-{i}", [Record(b"first")])
        for thread in threads:
            thread.start()
        assert all(event.wait(10) for event in ready)
        following = server.open_connections
        for i in range(n):
            client.append(f"many-{i}", [Record(b"second"), Record(f"third {i}".encode())])
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
        assert got == [[b"first", b"second", f"third {i}".encode()] for i in range(n)]
        assert following <= 4


def test_a_lost_connection_is_replaced_and_every_session_goes_on_exactly(
    server: S2Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Three sessions share a connection; the server drops it (a fault on a fourth session's read): the
    # three reopen after their last record, on a new connection, and miss nothing and repeat nothing.
    caplog.set_level(logging.WARNING, "resumable_stream.s2")
    with client_for(server.url) as client:
        streams = ["lost-a", "lost-b", "lost-c"]
        got: list[list[bytes]] = [[], [], []]
        ready = [threading.Event() for _ in streams]
        for stream in streams:
            client.append(stream, [Record(b"0"), Record(b"1")])
        threads = [threading.Thread(target=follow, args=(client, s, 5, got[i], ready[i]), daemon=True)
                   for i, s in enumerate(streams)]
        for thread in threads:
            thread.start()
        assert all(event.wait(10) for event in ready)
        server.faults.add("read", stream="lost-trigger", drop=True, times=1)
        client.append("lost-trigger", [Record(b"x")])
        trigger = client.read_session("lost-trigger", seq_num=0, count=1)
        assert [r.body for item in trigger if isinstance(item, (ReadBatch, TextBatch)) for r in item.records] == [b"x"]
        for stream in streams:
            client.append(stream, [Record(b"2"), Record(b"3"), Record(b"4")])
        for thread in threads:
            thread.join(15)
        assert got == [[b"0", b"1", b"2", b"3", b"4"]] * 3
    reopened = {r.getMessage().split("'")[1] for r in caplog.records if "reopening" in r.getMessage()}
    assert set(streams) <= reopened


def test_close_ends_a_waiting_session_at_once_and_the_client_leaves_no_thread(server: S2Server) -> None:
    before = {t.ident for t in threading.enumerate()}
    with client_for(server.url) as client:
        client.append("closing", [Record(b"only")])
        session = client.read_session("closing", seq_num=1, wait=30)
        ended = threading.Event()

        def read() -> None:
            for _ in session:
                pass
            ended.set()

        threading.Thread(target=read, daemon=True).start()
        time.sleep(0.3)
        started = time.monotonic()
        session.close()
        assert ended.wait(5) and time.monotonic() - started < 2
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and [t for t in threading.enumerate() if t.ident not in before]:
        time.sleep(0.05)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_an_endpoint_without_http2_gets_http1_sessions(caplog: pytest.LogCaptureFixture) -> None:
    # A server that answers the HTTP/2 preface with HTTP/1.1 (as a plain HTTP/1.1 server does): the
    # sessions fall back to HTTP/1.1, with a warning, and still work.
    events = b'event: batch\ndata: {"records":[{"seq_num":0,"timestamp":1,"body":"hi"}]}\n\ndata: [DONE]\n\n'
    with serving(answering(events)) as url, caplog.at_level(logging.WARNING), client_for(url) as client:
        session = client.read_session("x", seq_num=0, text=True)
        assert [t for item in session if isinstance(item, TextBatch) for t in item.texts] == ["hi"]
        assert "fall back to HTTP/1.1" in caplog.text


def test_the_token_is_in_no_log_record_even_huffman_coded(server: S2Server, caplog: pytest.LogCaptureFixture) -> None:
    # hpack logs the header blocks it encodes at DEBUG: the token goes in Huffman-coded, still a secret.
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    token = "rs-secret-h2-0123456789abcdef"
    coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(f"Bearer {token}".encode())
    caplog.set_level(logging.DEBUG)
    client = S2Client(access_token=token, basin=BASIN, account_endpoint=server.url, basin_endpoint=server.url,
                      retry=FAST_RETRY, http2=True)
    with client:
        client.append("logged", [Record(b"x")])
        assert list(client.read_session("logged", seq_num=0, count=1))
    texts = [r.getMessage() for r in caplog.records]
    assert any(r.name.startswith("hpack") for r in caplog.records)  # hpack did log, at DEBUG
    assert not [t for t in texts if token in t or repr(coded)[2:-1] in t or coded.hex() in t]


def test_closed_sessions_give_back_what_they_never_read(server: S2Server, monkeypatch: pytest.MonkeyPatch) -> None:
    # Sessions closed with data received and not read: the connection's flow-control window must get
    # those bytes back, or after a few such sessions no stream on the connection receives anything.
    # (A window of 200 KB here, a gigabyte by default: the leak would take long, not forever, to show.)
    from resumable_stream import _http2

    monkeypatch.setattr(_http2, "_CONNECTION_WINDOW", 200_000)
    monkeypatch.setattr(_http2, "_STREAM_WINDOW", 65_535)
    piece = b"x" * 50_000
    with client_for(server.url) as client:
        for i in range(8):
            stream = f"unread-{i}"
            client.append(stream, [Record(b"first")])
            session = client.read_session(stream, seq_num=0, wait=10)
            assert any(isinstance(item, (ReadBatch, TextBatch)) for item in session)  # the first record
            client.append(stream, [Record(piece), Record(piece), Record(piece)])  # 150 KB arrive, unread
            time.sleep(0.2)
            session.close()
        client.append("unread-last", [Record(piece)] * 6)
        session = client.read_session("unread-last", seq_num=0, count=6)
        bodies = [r.body for item in session if isinstance(item, (ReadBatch, TextBatch)) for r in item.records]
        assert bodies == [piece] * 6


def test_a_server_that_does_not_answer_is_retried_not_taken_for_http1(caplog: pytest.LogCaptureFixture) -> None:
    # Silence after the preface may be a slow server: the session fails as unavailable (after its
    # retries), and the client does not give HTTP/2 up for good.
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        for _ in range(10):
            accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with caplog.at_level(logging.WARNING), client_for(url, connect_timeout=0.3) as client:
            with pytest.raises(Unavailable, match="no answer to the HTTP/2 preface"):
                next(iter(client.read_session("x", seq_num=0)))
            assert "fall back" not in caplog.text
            assert len(accepted) == FAST_RETRY.max_attempts
    finally:
        listener.close()
        for sock in accepted:
            sock.close()


class _BareH2Server:
    """An HTTP/2 server written for one test: it answers a connection's first request with
    ``answer(connection, socket, stream_id)``; ``accepted`` counts its connections."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import h2.config
        import h2.connection
        import h2.events

        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.sockets.append(sock)
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def _serve(self, sock: socket.socket, conn: Any) -> None:
        import h2.events

        with contextlib.suppress(OSError):
            while data := sock.recv(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        self.answer(conn, sock, event.stream_id)
                sock.sendall(conn.data_to_send())

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


def test_a_goaway_ends_the_connection_and_its_sessions_retryably() -> None:
    # h2 takes no frame after a GOAWAY, so the connection ends there: its session fails as a lost
    # connection would (retryably, never with a raw h2 error, close() included), the next opens anew.
    def answer(conn: Any, sock: socket.socket, stream_id: int) -> None:
        conn.send_headers(stream_id, [(":status", "200")])
        conn.send_data(stream_id, b"part 1\n")
        conn.close_connection(last_stream_id=stream_id)  # the stream may finish: h2's client cannot

    server = _BareH2Server(answer)
    sessions = _http2.Http2Sessions(server.url, connect_timeout=2, silence=5, ssl_context=None)
    try:
        response = sessions.open("/x", {}, 2)
        with pytest.raises(ProtocolError, match="GOAWAY"):
            while response.read1(100):
                pass
        response.close()
        sessions.open("/y", {}, 2).close()
        assert server.accepted == 2
    finally:
        sessions.close()
        server.close()


def test_a_connection_that_falls_silent_is_given_up_however_busy_its_sessions_are() -> None:
    # A half-open connection: settings, then nothing. Sessions time out and retry; the retries must not
    # keep the dead connection alive by waking its thread: after the silence bound a new one is opened.
    server = _BareH2Server(lambda conn, sock, stream_id: None)  # never answers a request
    sessions = _http2.Http2Sessions(server.url, connect_timeout=2, silence=1.0, ssl_context=None)
    try:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            with pytest.raises(ProtocolError):
                sessions.open("/x", {}, 0.3)
        assert server.accepted >= 2
    finally:
        sessions.close()
        server.close()


def test_data_that_reaches_a_closed_session_is_handed_back(server: S2Server) -> None:
    # The I/O thread hands a session its data outside the connection's lock: data that reaches a
    # session after its reader closed it is returned to the connection for its window, not kept.
    sessions = _http2.Http2Sessions(server.url, connect_timeout=2, silence=5, ssl_context=None)
    try:
        response = sessions.open("/v1/streams/handed-back/records?seq_num=0&wait=5", {"s2-basin": BASIN,
                                 "accept": "text/event-stream"}, 5)
        response.close()
        assert response.on_data(b"x" * 10, 10) == 10
    finally:
        sessions.close()
