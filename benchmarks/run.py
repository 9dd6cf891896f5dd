"""Speed and memory of resumable streams, printed as tables.

    python -m benchmarks.run            # everything (about a minute)
    python -m benchmarks.run latency    # one section: latency, batching, throughput, memory, concurrency

Every section runs on the in-process log and on the local S2-compatible
server over HTTP (the same code path as S2 cloud, minus the network). The
numbers are for comparing changes on one machine, not promises: docs/benchmarks.md
records a run and the goals they are read against.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from resumable_stream import MemoryLog, ResumableStreamContext, S2Client
from resumable_stream.log import Log

BASIN = "bench-basin"


@contextmanager
def s2_server() -> Iterator[str]:
    """A local S2-compatible server in its own process (so it does not share this one's GIL); its URL."""
    server = subprocess.Popen(
        [sys.executable, "-m", "resumable_stream.testing.server", "--port", "0", "--basin", BASIN],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the S2 server did not start: {line!r}")
        yield line.split()[1]
    finally:
        server.terminate()
        server.wait(timeout=10)


@contextmanager
def logs() -> Iterator[list[tuple[str, Callable[[], Log]]]]:
    """The two logs: a fresh MemoryLog each time, and clients of one local S2 server."""
    with s2_server() as url:

        def s2() -> Log:
            return S2Client(access_token="bench", basin=BASIN, account_endpoint=url, basin_endpoint=url)

        yield [("memory", MemoryLog), ("local S2 (HTTP)", s2)]


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)))


def paced(n: int, rate: float, stamps: dict[int, float] | None = None) -> Callable[[], Iterator[str]]:
    """A source yielding ``n`` tokens at ``rate`` per second (0: as fast as possible), stamping each."""

    def source() -> Iterator[str]:
        start = time.perf_counter()
        for i in range(n):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if stamps is not None:
                stamps[i] = time.perf_counter()
            yield f"t{i} "

    return source


def in_threads(streams: list[Any]) -> list[list[tuple[str, float]]]:
    """Read each stream on its own thread; every chunk with the time it arrived."""
    results: list[list[tuple[str, float]]] = [[] for _ in streams]

    def read(stream: Any, out: list[tuple[str, float]]) -> None:
        for chunk in stream:
            out.append((chunk, time.perf_counter()))

    threads = [threading.Thread(target=read, args=pair) for pair in zip(streams, results, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def latency() -> None:
    """How long a chunk takes to reach the creator and a resumer, at LLM-like rates."""
    rows = []
    with logs() as kinds:
        for name, make_log in kinds:
            log = make_log()
            with ResumableStreamContext(log) as ctx:
                for rate in (30, 100):
                    stamps: dict[int, float] = {}
                    stream_id = uuid.uuid4().hex
                    live = ctx.create_new_resumable_stream(stream_id, paced(200, rate, stamps))
                    reader = ctx.resume_existing_stream(stream_id)
                    assert live is not None and reader is not None
                    arrivals = in_threads([live, reader])
                    for label, times in zip(("creator", "resumer"), arrivals, strict=True):
                        values = sorted(at - stamps[int(chunk[1:-1])] for chunk, at in times)
                        rows.append([name, rate, label, ms(statistics.median(values)),
                                     ms(values[int(len(values) * 0.95)]), ms(values[-1])])
            log.close()
    table("Chunk latency: source yield -> reader (ms), 200 tokens", ["log", "tokens/s", "reader", "p50", "p95", "max"],
          rows)


def batching() -> None:
    """Appends per stream: adaptive batching under a steady flow."""
    rows = []
    with logs() as kinds:
        for name, make_log in kinds:
            base = make_log()
            for linger in (0.0, 0.05):
                for rate in (30, 300, 0):
                    counted = _CountingLog(base)
                    with ResumableStreamContext(counted, linger=linger) as ctx:
                        live = ctx.create_new_resumable_stream(uuid.uuid4().hex, paced(300, rate))
                        assert live is not None
                        for _ in live:
                            pass
                    rows.append([name, f"{linger * 1000:.0f}", rate or "max", 300, counted.appends,
                                 f"{302 / counted.appends:.1f}"])
            base.close()
    table("Batching: appends for 300 tokens (claim and end included)",
          ["log", "linger ms", "tokens/s", "tokens", "appends", "records/append"], rows)


class _CountingLog:
    """A Log that counts appends on its way to another."""

    def __init__(self, inner: Log) -> None:
        self.inner = inner
        self.appends = 0

    def append(self, stream: str, records: Any, **kwargs: Any) -> Any:
        if not stream.startswith("resumable-stream."):
            self.appends += 1
        return self.inner.append(stream, records, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def throughput() -> None:
    """Chunks per second through the engine when the source never waits."""
    rows = []
    with logs() as kinds:
        for name, make_log in kinds:
            log = make_log()
            with ResumableStreamContext(log, batch_size=1000) as ctx:
                n = 20_000
                stream_id = uuid.uuid4().hex
                start = time.perf_counter()
                live = ctx.create_new_resumable_stream(stream_id, paced(n, 0))
                assert live is not None
                for _ in live:
                    pass
                live_time = time.perf_counter() - start
                start = time.perf_counter()
                reader = ctx.resume_existing_stream(stream_id, after=0)
                assert reader is not None
                count = sum(1 for _ in reader)
                replay_time = time.perf_counter() - start
                assert count == n
                rows.append([name, n, f"{n / live_time:,.0f}", f"{n / replay_time:,.0f}"])
            log.close()
    table("Throughput (chunks/s)", ["log", "chunks", "create (written)", "replay"], rows)


def memory() -> None:
    """Memory held by the engine for a creator that stops reading while its source runs on.

    The log is a separate process, so what is traced here is the engine's own
    memory: the live queue, bounded by ``live_buffer_bytes``, against one
    that is effectively unbounded.
    """
    rows = []
    with s2_server() as url:
        for limit in (64 * 1024, 4 * 1024 * 1024, 2**40):
            log = S2Client(access_token="bench", basin=BASIN, account_endpoint=url, basin_endpoint=url)
            with ResumableStreamContext(log, live_buffer_bytes=limit) as ctx:
                gc.collect()
                tracemalloc.start()
                stream_id = uuid.uuid4().hex
                # Distinct strings: a constant "x" * 1000 would be one shared object.
                chunks = (f"{i:06}" + "x" * 994 for i in range(20_000))
                live = ctx.create_new_resumable_stream(stream_id, chunks)
                assert live is not None
                next(live)  # then stall until the source has finished
                while ctx.stream_status(stream_id).state.value == "active":
                    time.sleep(0.05)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                remaining = sum(1 for _ in live)
            log.close()
            label = "unbounded" if limit == 2**40 else f"{limit // 1024} KiB"
            rows.append([label, "20,000 x 1 KB", f"{peak / 2**20:.1f}", remaining])
    table("Memory with a stalled creator (MiB traced in the app process; the log is another process)",
          ["live buffer", "source", "peak", "chunks read after the stall"], rows)


def concurrency() -> None:
    """Many streams at once in one process."""
    rows = []
    with logs() as kinds:
        for name, make_log in kinds:
            log = make_log()
            for streams in (10, 100):
                with ResumableStreamContext(log) as ctx:
                    start = time.perf_counter()
                    lives = [ctx.create_new_resumable_stream(uuid.uuid4().hex, paced(100, 50)) for _ in range(streams)]
                    threads_during = threading.active_count()
                    counts = [len(chunks) for chunks in in_threads(lives)]
                    elapsed = time.perf_counter() - start
                    assert counts == [100] * streams
                    rows.append([name, streams, f"{elapsed:.2f}", threads_during])
            log.close()
    table("Concurrent streams (100 tokens each at 50 tokens/s: 2 s of source)",
          ["log", "streams", "wall s", "threads while running"], rows)


SECTIONS = {"latency": latency, "batching": batching, "throughput": throughput, "memory": memory,
            "concurrency": concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="SECTION", help=", ".join(SECTIONS))
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    print(f"Python {sys.version.split()[0]}")
    for section in args.sections or SECTIONS:
        SECTIONS[section]()


if __name__ == "__main__":
    main()
