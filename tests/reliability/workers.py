"""Worker processes of the suite: ``python -m tests.reliability.workers COMMAND [OPTIONS]``.

Each builds a ResumableStreamContext on S2 from the ``S2_*`` environment (the suite's server) and
reports on stdout, one JSON object per line, flushed at once (the process may be SIGKILLed any time):

``produce STREAM``   create the stream (paced chunks, an idle spell) and read it as its creator
``read STREAM``      resume it (``--after``) and read it to its end
``race STREAM``      wait for ``--gate`` to exist, then create the stream (the source appends to ``--marker``)
``readers``          resume many streams at once: one JSON request per stdin line, one result line each
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from resumable_stream import ResumableStream, ResumableStreamContext

from .payloads import Paced, chunks

_out = threading.Lock()


def say(**fields: Any) -> None:
    line = json.dumps(fields, ensure_ascii=False)
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def encode(chunk: str | bytes) -> Any:
    return {"hex": chunk.hex()} if isinstance(chunk, bytes) else chunk


def follow(stream: ResumableStream[Any], on_event: Callable[[int, Any], None]) -> dict[str, Any]:
    """Read ``stream`` to its end, passing each event to ``on_event``; how it ended (its state, or the error)."""
    error = None
    try:
        for cursor, chunk in stream.events():
            on_event(int(cursor), chunk)
    except Exception as exc:
        error = type(exc).__name__
    return {"state": stream.status.state.value if stream.status else None, "error": error}


def read_all(stream: ResumableStream[Any]) -> dict[str, Any]:
    """Every event of ``stream`` and how it ended."""
    events: list[Any] = []
    ended = follow(stream, lambda cursor, chunk: events.append([cursor, encode(chunk)]))
    return {"events": events, **ended}


def produce(args: argparse.Namespace, ctx: ResumableStreamContext) -> None:
    source = Paced(chunks(args.kind, args.chunks, args.seed), args.delay, args.seed, idle={args.idle_at: args.idle})

    def announced() -> Iterator[str | bytes]:
        for item in source():
            say(produced=source.index_of(item), at=time.monotonic())
            yield item

    say(started=os.getpid())
    live = ctx.create_new_resumable_stream(args.stream, announced)
    if live is None:
        say(finished_already=True)
        return
    say(created=True)
    say(**follow(live, lambda cursor, chunk: say(chunk=cursor, i=source.index_of(chunk))))
    time.sleep(args.linger)


def read(args: argparse.Namespace, ctx: ResumableStreamContext) -> None:
    stream = ctx.resume_existing_stream(args.stream, after=args.after)
    if stream is None:
        say(none=True)
        return
    say(opened=True)
    say(**follow(stream, lambda cursor, chunk: say(event=[cursor, encode(chunk)])))


def race(args: argparse.Namespace, ctx: ResumableStreamContext) -> None:
    expected = chunks(args.kind, args.chunks, args.seed)

    def source() -> Iterator[str | bytes]:
        with args.marker.open("a") as marker:
            marker.write(f"{os.getpid()}\n")
        for item in expected:
            time.sleep(args.delay)
            yield item

    say(ready=os.getpid())
    deadline = time.monotonic() + 60
    while not args.gate.exists():  # every racer starts within a few milliseconds of the others
        if time.monotonic() > deadline:
            say(error="no gate")
            return
        time.sleep(0.002)
    stream = ctx.create_new_resumable_stream(args.stream, source)
    if stream is None:
        say(none=True)
        return
    say(**read_all(stream))


def readers(ctx: ResumableStreamContext) -> None:
    """Serve resume requests from stdin: ``{"stream": id, "after": cursor or null, "tag": ...}``; ``{"quit": 1}``."""
    threads: list[threading.Thread] = []

    def serve(request: dict[str, Any]) -> None:
        result: dict[str, Any] = {"tag": request.get("tag")}
        try:
            stream = ctx.resume_existing_stream(request["stream"], after=request.get("after"))
            result.update(read_all(stream) if stream is not None else {"none": True})
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        say(**result)

    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        if request.get("stats"):
            say(stats=True, threads=threading.active_count(), rss_kib=_rss_kib())
            continue
        thread = threading.Thread(target=serve, args=(request,), daemon=True)
        thread.start()
        threads.append(thread)
        threads = [t for t in threads if t.is_alive()]
    for thread in threads:
        thread.join(120)
    say(bye=True)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["produce", "read", "race", "readers"])
    parser.add_argument("stream", nargs="?")
    parser.add_argument("--kind", default="ascii")
    parser.add_argument("--chunks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--idle-at", type=int, default=-1)
    parser.add_argument("--idle", type=float, default=0.0)
    parser.add_argument("--linger", type=float, default=0.0, help="seconds to stay alive after reading")
    parser.add_argument("--after", type=int, default=None)
    parser.add_argument("--abandon-after", type=float, default=30.0)
    parser.add_argument("--gate", type=Path)
    parser.add_argument("--marker", type=Path)
    args = parser.parse_args()
    ctx = ResumableStreamContext(abandon_after=args.abandon_after)
    try:
        if args.command == "produce":
            produce(args, ctx)
        elif args.command == "read":
            read(args, ctx)
        elif args.command == "race":
            race(args, ctx)
        else:
            readers(ctx)
    finally:
        ctx.close(timeout=10)


if __name__ == "__main__":
    main()
