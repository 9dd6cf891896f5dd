"""Speed of the local S2-compatible server, printed as tables.

    python -m benchmarks.server              # everything (about a minute)
    python -m benchmarks.server appends      # one section: appends, sessions, backlog, memory
    python -m benchmarks.server --src DIR    # the server of another checkout (for before/after figures)

The server runs in its own process; the clients here are lean raw-socket
HTTP/1.1 clients, so the figures are the server's, not a client library's.
Sections: small appends per second from 8 keep-alive connections (in memory
and with ``--data-dir``); CPU per delivered batch with 1,000 SSE sessions
open, each fed about 2 batches a second; time to serve a 100,000-record
backlog as 1000-record unary pages and as one SSE session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BASIN = "bench-basin"
_TICKS = os.sysconf("SC_CLK_TCK")
_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


@contextmanager
def server(src: Path, data_dir: str | None = None) -> Iterator[tuple[int, int]]:
    """A server of checkout ``src`` in its own process: its pid and port."""
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--basin", BASIN, "--heartbeat", "10"]
    if data_dir is not None:
        command += ["--data-dir", data_dir]
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=src)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            if data_dir is None:
                raise RuntimeError(f"the server did not start: {line!r}")
            yield -1, -1  # a server without --data-dir
            return
        yield proc.pid, int(line.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class Connection:
    """A keep-alive HTTP/1.1 connection that sends prepared requests and reads Content-Length responses."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(262144)
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        match = _LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            rest += self.sock.recv(262144)
        self.buffer = rest[length:]
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"unexpected answer: {head[:200]!r} {rest[:200]!r}")
        return rest[:length]

    def close(self) -> None:
        self.sock.close()


def append_request(stream: str, body: str = "token", count: int = 1) -> bytes:
    payload = json.dumps({"records": [{"body": body}] * count}).encode()
    return (
        f"POST /v1/streams/{stream}/records HTTP/1.1\r\nHost: b\r\ns2-basin: {BASIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for line in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)))


# -- sections -----------------------------------------------------------------


def _repeat(connection: Connection, request: bytes, times: int) -> None:
    for _ in range(times):
        connection.request(request)


def appends(src: Path) -> None:
    rows = []
    for store in ("memory", "durable (--data-dir)"):
        with tempfile.TemporaryDirectory() as tmp, server(src, tmp if store != "memory" else None) as (pid, port):
            if pid < 0:
                rows.append([store, "-", "not supported", "-"])
                continue
            per_client = 2500
            connections = [Connection(port) for _ in range(8)]
            requests = [append_request(f"appends-{n}") for n in range(8)]
            for connection, request in zip(connections, requests, strict=True):
                connection.request(request)  # creates the stream; the first call of each connection
            cpu_before = cpu_seconds(pid)
            started = time.perf_counter()

            threads = [
                threading.Thread(target=_repeat, args=(connection, request, per_client))
                for connection, request in zip(connections, requests, strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(pid) - cpu_before
            for connection in connections:
                connection.close()
            total = per_client * len(connections)
            rows.append([store, f"{total:,}", f"{total / elapsed:,.0f}", f"{cpu / total * 1e6:.0f}"])
    table(
        "Small appends (1 record each), 8 keep-alive connections",
        ["store", "appends", "appends/s", "server CPU µs/append"],
        rows,
    )


def sessions(src: Path, count: int = 1000, rate: float = 2.0, seconds: float = 5.0) -> None:
    """1,000 SSE sessions, each stream fed `rate` appends a second; the server's CPU per delivered batch."""
    with server(src) as (pid, port):
        selector = selectors.DefaultSelector()
        received = {n: 0 for n in range(count)}
        tails: dict[int, bytes] = {}
        marker = b"event: batch"
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                f"GET /v1/streams/live-{n}/records HTTP/1.1\r\nHost: b\r\ns2-basin: {BASIN}\r\n"
                "Accept: text/event-stream\r\n\r\n".encode()
            )
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, n)
        stop = threading.Event()

        def read() -> None:
            while not stop.is_set():
                for key, _ in selector.select(0.1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    n = key.data
                    joined = tails.get(n, b"") + data
                    received[n] += joined.count(marker)
                    tails[n] = joined[-len(marker) + 1 :]

        reader = threading.Thread(target=read)
        reader.start()
        time.sleep(2)  # every session open and caught up

        def feed(streams: range, appended: list[int]) -> None:
            connection = Connection(port)
            requests = [append_request(f"live-{n}") for n in streams]
            interval = 1 / (rate * len(streams))
            next_at = time.perf_counter()
            while not stop.is_set():
                for request in requests:
                    connection.request(request)
                    appended[0] += 1
                    next_at += interval
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    if stop.is_set():
                        break
            connection.close()

        feeders = 4
        counters = [[0] for _ in range(feeders)]
        chunk = count // feeders
        threads = [
            threading.Thread(target=feed, args=(range(i * chunk, (i + 1) * chunk), counters[i])) for i in range(feeders)
        ]
        for thread in threads:
            thread.start()
        time.sleep(1)
        before = sum(received.values()), sum(c[0] for c in counters), cpu_seconds(pid), time.perf_counter()
        time.sleep(seconds)
        after = sum(received.values()), sum(c[0] for c in counters), cpu_seconds(pid), time.perf_counter()
        stop.set()
        for thread in [*threads, reader]:
            thread.join()
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        delivered, fed, cpu, elapsed = (b - a for a, b in zip(before, after, strict=True))
    behind = sum(c[0] for c in counters) - sum(received.values())
    table(
        f"{count:,} SSE sessions, each stream fed about {rate:g} appends/s ({seconds:g} s measured)",
        ["appends/s", "batches delivered/s", "server CPU", "server CPU µs per append + delivery", "undelivered at end"],
        [
            [
                f"{fed / elapsed:,.0f}",
                f"{delivered / elapsed:,.0f}",
                f"{cpu / elapsed:.0%}",
                f"{cpu / max(delivered, 1) * 1e6:.0f}",
                f"{behind}",
            ]
        ],
    )


def backlog(src: Path, records: int = 100_000) -> None:
    with server(src) as (_, port):
        connection = Connection(port)
        for _ in range(records // 1000):
            connection.request(append_request("backlog", "a chunk of an answer", 1000))
        rows = []
        started = time.perf_counter()
        got = 0
        while got < records:
            page = connection.request(
                f"GET /v1/streams/backlog/records?seq_num={got}&count=1000 HTTP/1.1\r\nHost: b\r\n"
                f"s2-basin: {BASIN}\r\n\r\n".encode()
            )
            got += page.count(b'"seq_num"')
        rows.append(["unary pages of 1000 (JSON)", f"{(time.perf_counter() - started) * 1000:.0f}"])
        started = time.perf_counter()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"GET /v1/streams/backlog/records?seq_num=0&count={records} HTTP/1.1\r\nHost: b\r\ns2-basin: {BASIN}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        last = b""
        while not last.endswith(b"\r\n0\r\n\r\n"):  # the end of the chunked body
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            last = last[-16:] + chunk
        sock.close()
        rows.append(["one SSE session", f"{(time.perf_counter() - started) * 1000:.0f}"])
        connection.close()
    table(f"A {records:,}-record backlog, read to the end", ["how", "ms"], rows)


_MEMORY_APPEND = """
import time
from resumable_stream import MemoryLog, Record
log, records, best = MemoryLog(), [Record(b"a small token")], []
for _ in range(5):
    started = time.perf_counter()
    for _ in range(20000):
        log.append("s", records)
    best.append((time.perf_counter() - started) / 20000)
print(min(best) * 1e6)
"""


def memory(src: Path) -> None:
    """The embedded default's hot path, for comparison: MemoryLog.append of one small record, in-process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", _MEMORY_APPEND], env=env, capture_output=True, text=True, check=True)
    table("MemoryLog.append, one small record (in-process, best of 5)", ["µs/append"], [[f"{float(done.stdout):.1f}"]])


SECTIONS = {"appends": appends, "sessions": sessions, "backlog": backlog, "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--src", type=Path, default=Path(__file__).resolve().parent.parent, help="checkout to serve")
    args = parser.parse_args()
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections: {', '.join(unknown)}")
    print(f"Python {sys.version.split()[0]}, server of {args.src}")
    for name in args.sections or SECTIONS:
        SECTIONS[name](args.src)


if __name__ == "__main__":
    main()
