"""Every benchmark, printed as tables: what docs/benchmarks.md records.

    python -m benchmarks.run            # everything (about ten minutes)
    python -m benchmarks.run batching   # one section: scale, single, batching, memory, server

``scale`` and ``single`` are the peer's workloads, run beside Vercel's
``resumable-stream`` on Redis (``benchmarks/scale.py``, ``benchmarks/single.py``);
``server`` is the local S2 server's own (``benchmarks/server.py``); ``batching``
and ``memory`` are here. They run on the in-process log and on the local
S2-compatible server over HTTP (the same code path as S2 cloud, minus the
network). The numbers are for comparing, in one run on one machine, not promises.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from resumable_stream import MemoryLog, ResumableStreamContext, S2Client
from resumable_stream.log import Log

from .scale import BASIN, s2_server


@contextmanager
def logs() -> Iterator[list[tuple[str, Callable[[], Log]]]]:
    """The two logs: a fresh MemoryLog each time, and clients of one local S2 server."""
    with s2_server() as (url, _):

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


def batching() -> None:
    """Appends per stream at default settings: one per chunk while the log keeps up, larger batches beyond."""
    rows = []
    with logs() as kinds:
        for name, make_log in kinds:
            base = make_log()
            for linger in (0.0, 0.05):
                for rate in (20, 100, 1000, 0):
                    counted = _CountingLog(base)
                    with ResumableStreamContext(counted, linger=linger) as ctx:
                        live = ctx.create_new_resumable_stream(uuid.uuid4().hex, paced(300 if rate else 20_000, rate))
                        assert live is not None
                        count = sum(1 for _ in live)
                    rows.append([name, f"{linger * 1000:.0f}", rate or "max", count, counted.appends,
                                 f"{(count + 2) / counted.appends:.1f}"])
            base.close()
    table("Batching: appends for one stream (claim and end included)",
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


def memory() -> None:
    """Memory held by the engine for a creator that stops reading while its source runs on.

    The log is a separate process, so what is traced here is the engine's own
    memory: the live queue, bounded by ``live_buffer_bytes``, against one
    that is effectively unbounded.
    """
    rows = []
    with s2_server() as (url, _):
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


def _module(name: str) -> Callable[[], None]:
    def run() -> None:
        subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=True)

    run.__doc__ = f"``python -m benchmarks.{name}``, in a process of its own."
    return run


SECTIONS = {"scale": _module("scale"), "single": _module("single"), "batching": batching, "memory": memory,
            "server": _module("server")}


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
