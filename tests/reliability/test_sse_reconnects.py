"""SSE clients that drop at random points over real sockets and reconnect with ``Last-Event-ID``.

The README's Flask routes (``resumable_stream.flask``) run under gunicorn with two ``gthread`` workers on
the suite's S2 server. Each stream has three clients: its creator (the POST) and two followers. Every
client drops its connection at random byte offsets, mid-event included (a TCP reset), sometimes before
its request is even complete, and reconnects with its last complete event's id, in ``Last-Event-ID`` or
in ``?from=``, on whichever worker the kernel picks, until the final event; a reconnect with that final
id must get 204. Across its connections, every client must have received every chunk exactly once, in
order, with the log's cursor as its id, and every byte must be valid UTF-8.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import pytest

from resumable_stream import NotFound, S2Client

from ..support import parse_sse
from .exact import Event, mismatch, read_log
from .payloads import KINDS
from .processes import Proc, ServerProcess
from .readers import wait_until
from .scale import MARKS, pick

pytestmark = MARKS

STREAMS = pick(12, 50)
CHUNKS = pick(40, 80)
FOLLOWERS = 2
DROP_SHARE = 0.7  # connections dropped before their body ends
LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass
class Client:
    """One SSE client of one stream, over as many connections as it takes."""

    name: str
    events: list[Event] = field(default_factory=list)
    final: tuple[int, str] | None = None
    connections: int = 0
    drops: int = 0
    aborted_requests: int = 0
    workers: set[str] = field(default_factory=set)
    error: BaseException | None = None
    saw_204_after_the_end: bool = False


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _abort_a_request(host: str, port: int, path: str, rng: random.Random) -> None:
    """Send part of a request, then reset the connection."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nLast-Event-ID: 1\r\n\r\n".encode()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(request[: rng.randint(1, len(request) - 1)])
    _reset(sock)


def _connect(host: str, port: int, method: str, path: str, headers: dict[str, str],
             drop_at: int | None) -> tuple[int, bytes, str]:
    """One connection: the status, the body bytes received (all, or up to ``drop_at``), the worker's pid."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request(method, path, headers={"Accept": "text/event-stream", **headers})
        sock = conn.sock
        response = conn.getresponse()
        body = bytearray()
        while drop_at is None or len(body) < drop_at:
            piece = response.read1(4096 if drop_at is None else min(4096, drop_at - len(body)))
            if not piece:
                break
            body += piece
        if drop_at is not None and len(body) >= drop_at and sock is not None:
            response.close()
            _reset(sock)  # the client goes away mid-body: a TCP reset, as a closed tab does
        return response.status, bytes(body), response.headers.get("X-Worker", "")
    finally:
        conn.close()


def _complete_events(body: bytes) -> list[tuple[str | None, str, str]]:
    """The events of ``body`` that arrived whole (a dropped connection may end mid-event); every byte UTF-8."""
    whole = body[: body.rfind(b"\n\n") + 2] if b"\n\n" in body else b""
    text = whole.decode("utf-8")  # strict: any invalid byte fails the test
    events, comments = parse_sse(text)
    assert set(comments) <= {"keep-alive"}, comments
    for line in LINE_BREAK.split(text):
        assert line == "" or line.startswith(("data: ", "id: ", "event: ", "retry: ", ":")), f"stray line {line!r}"
    return [(e.id, e.event, e.data) for e in events]


def run_client(client: Client, base: str, sid: str, rng: random.Random, create: str | None) -> None:
    """Connect, drop, reconnect with the last id, until the final event; then check the 204."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = f"/streams/{quote(sid, safe='')}"
    last: str | None = None
    try:
        while client.final is None:
            assert client.connections < 400, f"{client.name}: no end after {client.connections} connections"
            if rng.random() < 0.1:
                _abort_a_request(host, port, path, rng)
                client.aborted_requests += 1
            drop_at = rng.randint(0, 800) if rng.random() < DROP_SHARE else None
            method, target, headers = "GET", path, {}
            if create is not None and client.connections == 0:
                method, target = "POST", f"{path}?{create}"
            elif last is not None and rng.random() < 0.5:
                headers["Last-Event-ID"] = last
            elif last is not None:
                target = f"{path}?from={last}"
            else:
                headers["Last-Event-ID"] = "0"  # a follower that has seen nothing yet: from the first chunk
            status, body, worker = _connect(host, port, method, target, headers, drop_at)
            client.connections += 1
            client.workers.add(worker)
            assert status == 200, f"{client.name}: {method} {target} answered {status}"
            assert body.startswith(b"retry: 1000\n\n"[: len(body)]), body[:40]
            if drop_at is not None and len(body) >= drop_at:
                client.drops += 1
            for event_id, name, data in _complete_events(body):
                assert event_id is not None, f"{client.name}: an event without an id"
                if name == "message":
                    client.events.append((int(event_id), data))
                else:
                    client.final = (int(event_id), name)
                last = event_id
        status, _, _ = _connect(host, port, "GET", path, {"Last-Event-ID": str(client.final[0])}, None)
        client.saw_204_after_the_end = status == 204
    except BaseException as exc:
        client.error = exc


def sse_text(chunk: str | bytes) -> str:
    """What an SSE client receives of a chunk: bytes decoded as UTF-8 (U+FFFD), line breaks as ``\\n``."""
    text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
    return "\n".join(LINE_BREAK.split(text))


@pytest.fixture
def app(server: ServerProcess) -> Iterator[str]:
    """The Flask app under gunicorn (two gthread workers) on the suite's server; its URL."""
    threads = str(pick(48, 128))
    proc = Proc([sys.executable, "-m", "gunicorn", "-k", "gthread", "--workers", "2", "--threads", threads,
                 "--bind", "127.0.0.1:0", "--no-control-socket", "--graceful-timeout", "3",
                 "--error-logfile", "/dev/stdout", "tests.reliability.sse_app:app"], server.env())
    try:
        url, booted, deadline = None, 0, time.monotonic() + 60
        while url is None or booted < 2:  # both workers up: until then, every connection goes to the first
            line = proc.wait_for("[", deadline - time.monotonic())
            found = re.search(r"Listening at: (http://\S+)", line)
            url = found.group(1) if found else url
            booted += "Booting worker" in line
        yield url
    finally:
        proc.close()


def test_clients_drop_at_random_points_and_reconnect(server: ServerProcess, app: str,
                                                    record: Callable[..., None]) -> None:
    """Creators and followers of many streams drop their connections at random and come back with their cursor."""
    rng = random.Random(50)
    plans = {f"sse/{i}-{KINDS[i % len(KINDS)]}": (KINDS[i % len(KINDS)], i) for i in range(STREAMS)}
    clients: dict[str, list[Client]] = {}
    threads: list[threading.Thread] = []
    direct = server.client()
    started = time.monotonic()
    for sid, (kind, seed) in plans.items():
        group = [Client(f"{sid} creator")] + [Client(f"{sid} follower {k}") for k in range(FOLLOWERS)]
        clients[sid] = group
        query = f"kind={kind}&n={CHUNKS}&seed={seed}&delay=0.03"
        creator = threading.Thread(target=run_client, args=(group[0], app, sid, random.Random(rng.random()), query))
        creator.start()
        threads.append(creator)
        assert wait_until(lambda sid=sid: _exists(direct, sid), 30), f"{sid} was never created"
        for follower in group[1:]:
            thread = threading.Thread(target=run_client, args=(follower, app, sid, random.Random(rng.random()), None))
            thread.start()
            threads.append(thread)
    deadline = time.monotonic() + pick(120, 300)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    elapsed = time.monotonic() - started
    alive = sum(thread.is_alive() for thread in threads)
    assert not alive, f"{alive} clients never finished"
    problems: list[str] = []
    for sid, group in clients.items():
        logged = read_log(direct, sid)
        assert logged.state == "completed", f"{sid}: {logged.state}"
        expected = [(seq, sse_text(chunk)) for seq, chunk in logged.events]
        for client in group:
            if client.error is not None:
                problems.append(f"{client.name}: {client.error!r}")
                continue
            problem = mismatch(client.name, client.events, expected)
            if problem:
                problems.append(problem)
            if client.final != (logged.tail - 1, "end"):
                problems.append(f"{client.name}: final event {client.final}, the log ends at {logged.tail - 1}")
            if not client.saw_204_after_the_end:
                problems.append(f"{client.name}: a reconnect after the end did not get 204")
    direct.close()
    everyone = [c for group in clients.values() for c in group]
    record(streams=STREAMS, clients=len(everyone), chunks_per_stream=CHUNKS,
           connections=sum(c.connections for c in everyone), drops_mid_body=sum(c.drops for c in everyone),
           requests_aborted_before_sent=sum(c.aborted_requests for c in everyone),
           clients_served_by_both_workers=sum(len(c.workers) > 1 for c in everyone),
           chunk_deliveries_checked=sum(len(c.events) for c in everyone), seconds=round(elapsed, 1),
           wrong_clients=len(problems))
    assert not problems, "\n".join(problems[:20])


def _exists(client: S2Client, sid: str) -> bool:
    try:
        return client.check_tail(sid).seq_num > 1  # claimed, and a first chunk written
    except NotFound:
        return False
