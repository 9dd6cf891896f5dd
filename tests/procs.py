"""Worker processes for test_processes.py: ``python -m tests.procs COMMAND STREAM [OPTIONS]``.

Each worker builds a ResumableStreamContext on S2 from the S2_* environment
(the test's local server) and reports on stdout, one line per event, flushed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from resumable_stream import ResumableStreamContext


def say(*parts: object) -> None:
    print(*parts, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["create", "produce"])
    parser.add_argument("stream")
    parser.add_argument("--chunks", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--marker", type=Path, help="file the source appends to when it starts and ends")
    parser.add_argument("--read", type=int, default=-1, help="chunks to read before leaving (-1: all)")
    args = parser.parse_args()
    # Like gunicorn, turn SIGTERM into a normal exit so atexit hooks run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    def mark(text: str) -> None:
        if args.marker:
            with args.marker.open("a") as f:
                f.write(text + "\n")

    def source() -> Iterator[str]:
        mark("started")
        try:
            for i in range(args.chunks):
                if args.delay:
                    time.sleep(args.delay)
                yield f"c{i} "
        finally:
            mark("closed")

    ctx = ResumableStreamContext(abandon_after=3, stop_timeout=5)
    stream = ctx.create_new_resumable_stream(args.stream, source)
    if stream is None:
        say("FINISHED-ALREADY")
        return
    say("READY")
    read = 0
    try:
        for cursor, chunk in stream.events():
            say("CHUNK", cursor, chunk.strip())
            read += 1
            if read == args.read:
                stream.close()
                say("LEFT")
                break
    except Exception as exc:
        say("ERROR", type(exc).__name__)
    if stream.status is not None:
        say("STATUS", stream.status.state.value)
    if args.command == "produce":
        time.sleep(3600)  # stay alive until the test kills or terminates us
    ctx.close(timeout=30)
    say("EXIT")


if __name__ == "__main__":
    main()
