"""Many concurrent streams in one process, beside the peer: the peer's ``concurrency-N`` workload.

    python -m benchmarks.scale                      # N = 100, 500, 1000; MemoryLog, local S2 over HTTP, peer
    python -m benchmarks.scale --streams 20 --logs memory --no-peer
    python -m benchmarks.scale --gevent             # the same, monkey-patched by gevent
    python -m benchmarks.scale --streams 1000 --logs http --switch-interval 0.05   # threads switch less often
    python -m benchmarks.scale --streams 300 --waves 6 --logs memory --retention 30   # memory across waves

N streams x 200 tokens at 20 tokens/s, starts spread over 1 s. Each stream
has its live consumer (the creator's iterator, read on the thread that created
it, as a gthread worker's request thread does) and one resumer on a second
``ResumableStreamContext`` (with its own log client, as another instance
would have) that joins 1 s after its stream starts, on a thread of its own.

Each measurement runs in a fresh process (so CPU, RSS, threads and context
switches are its own); the local S2 server runs in another one, and its CPU is
reported apart. HTTP requests and TCP connections are counted in urllib3, under
the client.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import peer
from .workload import Receiver, paced_source, summary

BASIN = "bench-basin"
TOKENS = 200
RATE = 20.0
JOIN_AFTER = 1.0
RAMP = 1.0


# -- one measurement, in its own process ---------------------------------------


class _GcPauses:
    """The garbage collector's pauses in this process: every thread stands still during one (under a GIL
    herd the collecting thread is descheduled too, and a pause can last a second)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0  # since the last reset_longest()
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.total += pause
        self.longest = max(self.longest, pause)

    def reset_longest(self) -> None:
        self.longest = 0.0

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


class _Counters:
    """HTTP requests and new TCP connections made in this process (by urllib3, and by the HTTP/2 read
    sessions, which do not go through it), and the GC's pauses."""

    def __init__(self) -> None:
        import urllib3.connection
        import urllib3.connectionpool

        from resumable_stream import _http2

        self.requests = 0
        self.connections = 0
        self.gc = _GcPauses()
        self._count(urllib3.connectionpool.HTTPConnectionPool, "_make_request", "requests")
        self._count(urllib3.connection.HTTPConnection, "connect", "connections")
        if _http2.HAVE_H2:
            self._count(_http2.Http2Sessions, "open", "requests")
            self._count(_http2.Http2Connection, "connect", "connections")

    def _count(self, owner: Any, method: str, counter: str) -> None:
        """Count the calls of ``owner.method`` in ``self.<counter>``."""
        original = getattr(owner, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            setattr(self, counter, getattr(self, counter) + 1)
            return original(*args, **kwargs)

        setattr(owner, method, counted)  # a classmethod comes out of getattr bound, and stays so


class _Bare:
    """The workload without the library: each source runs on a thread of its own and hands its tokens to
    its readers through a list and a condition. What the workload's threads cost on this machine."""

    class Stream:
        def __init__(self, source: Any) -> None:
            self.tokens: list[str] = []
            self.done = False
            self.cond = threading.Condition(threading.Lock())
            self.status = None
            threading.Thread(target=self._pump, args=(source,), daemon=True).start()

        def _pump(self, source: Any) -> None:
            for token in source():
                with self.cond:
                    self.tokens.append(token)
                    self.cond.notify_all()
            with self.cond:
                self.done = True
                self.cond.notify_all()

        def reader(self) -> Iterator[str]:
            seen = 0
            while True:
                with self.cond:
                    while seen == len(self.tokens) and not self.done:
                        self.cond.wait(1.0)
                    if seen == len(self.tokens):
                        return
                    token = self.tokens[seen]
                seen += 1
                yield token

    def __init__(self) -> None:
        self.streams: dict[str, _Bare.Stream] = {}

    def create_new_resumable_stream(self, stream_id: str, source: Any) -> Iterator[str]:
        stream = self.streams[stream_id] = _Bare.Stream(source)
        return stream.reader()

    def resume_existing_stream(self, stream_id: str) -> Iterator[str]:
        return self.streams[stream_id].reader()

    def close(self) -> None:
        pass


def _make_logs(kind: str, url: str | None, retention: float | None = None) -> tuple[Any, Any]:
    from resumable_stream import MemoryLog, S2Client

    if kind == "memory":
        shared = MemoryLog() if retention is None else MemoryLog(retention=retention)
        return shared, shared
    assert url is not None
    return tuple(  # type: ignore[return-value]
        S2Client(access_token="bench", basin=BASIN, account_endpoint=url, basin_endpoint=url, http2=kind == "http2")
        for _ in range(2)
    )


def measure(kind: str, n: int, url: str | None, waves: int, tokens: int = TOKENS, rate: float = RATE,
            retention: float | None = None) -> dict[str, Any]:
    """Run the workload ``waves`` times in this process; the figures of each wave.

    ``retention`` is MemoryLog's (its default when ``None``).
    """
    from resumable_stream import ResumableStreamContext, context

    if os.environ.get("BENCH_WRITERS"):  # for experiments with the writer's concurrency
        context._WRITERS = int(os.environ["BENCH_WRITERS"])
    counters = _Counters()
    warnings = _WarningCounter()  # retries, reopened sessions, give-ups: what overload makes the library say
    logging.getLogger("resumable_stream").addHandler(warnings)
    if kind == "bare":
        bare = _Bare()
        return {"waves": [_wave(bare, bare, n, counters, tokens, rate) for _ in range(waves)]}
    producer_log, resumer_log = _make_logs(kind, url, retention)
    producer = ResumableStreamContext(producer_log)
    resumer = ResumableStreamContext(resumer_log)
    results = []
    for _ in range(waves):
        results.append(_wave(producer, resumer, n, counters, tokens, rate))
    producer.close()
    resumer.close()
    for log in {id(producer_log): producer_log, id(resumer_log): resumer_log}.values():
        log.close()
    return {"waves": results, "threads_after_close": threading.active_count(),
            "library_warnings": dict(warnings.counts.most_common())}


class _WarningCounter(logging.Handler):
    """Counts the library's warnings and errors by their message template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        key = str(record.msg)
        if key.startswith("S2 %s failed") and isinstance(record.args, tuple) and len(record.args) >= 2:
            # Which operation, and why (the error's text past the path, without names and numbers).
            operation, error = str(record.args[0]).split()[0], str(record.args[1])
            reason = re.sub(r"\d+", "#", error.split(": ", 1)[-1])[:60]
            key = f"S2 {operation} failed ({reason})"
        self.counts[key] += 1


def _wave(producer: Any, resumer: Any, n: int, counters: _Counters, tokens: int, rate: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    lives: list[Receiver] = []
    resumers: list[Receiver] = []
    joins: list[float] = []
    resume_calls: list[float] = []
    missing: list[str] = []

    def others() -> int:  # threads that are not the workload's own (its consumers are named "scale ...")
        return sum(not t.name.startswith("scale ") for t in threading.enumerate())

    baseline_threads = others()
    peak_threads = baseline_threads
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak_threads
        while not sampling.wait(0.1):
            peak_threads = max(peak_threads, others())

    created = [threading.Event() for _ in range(n)]

    def live_thread(j: int, start: float, sent: list[float], receiver: Receiver) -> None:
        time.sleep(max(0.0, start - time.perf_counter()))
        try:
            stream = producer.create_new_resumable_stream(f"scale-{run}-{j}", paced_source(tokens, rate, sent))
        except Exception as exc:  # counted among the end states, as "create raised ..."
            receiver.errors.append(f"{type(exc).__name__}: {exc}")
            receiver.end_state = f"create raised {type(exc).__name__}"
            return
        finally:
            created[j].set()
        if stream is None:
            receiver.errors.append("create returned None")
            return
        receiver.consume(stream)

    def resumer_thread(j: int, start: float, receiver: Receiver) -> None:
        # As in the peer's benchmark: 1 s after the create call began, and not before it returned.
        created[j].wait()
        time.sleep(max(0.0, start + JOIN_AFTER - time.perf_counter()))
        joined = time.perf_counter()
        try:
            stream = resumer.resume_existing_stream(f"scale-{run}-{j}")
        except Exception as exc:
            receiver.errors.append(f"{type(exc).__name__}: {exc}")
            receiver.end_state = f"resume raised {type(exc).__name__}"
            return
        finally:
            resume_calls.append((time.perf_counter() - joined) * 1000)
        joins[j] = joined
        if stream is None:
            missing.append(f"scale-{run}-{j}")
            receiver.errors.append("resume returned None")
            return
        receiver.consume(stream)

    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    requests0, connections0, gc0 = counters.requests, counters.connections, counters.gc.total
    counters.gc.reset_longest()
    sampler = threading.Thread(target=sample, name="scale sampler", daemon=True)
    sampler.start()
    t0 = time.perf_counter() + 0.2
    threads = []
    for j in range(n):
        sent = [0.0] * tokens
        lives.append(Receiver(tokens, sent))
        resumers.append(Receiver(tokens, sent))
        joins.append(0.0)
        start = t0 + j * RAMP / n
        threads.append(threading.Thread(target=live_thread, args=(j, start, sent, lives[j]), name="scale live",
                                        daemon=True))
        threads.append(threading.Thread(target=resumer_thread, args=(j, start, resumers[j]), name="scale resumer",
                                        daemon=True))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + tokens / rate + RAMP + 180
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    wall = time.perf_counter() - t0
    sampling.set()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hung = sum(thread.is_alive() for thread in threads)

    after_join = []
    for receiver, joined in zip(resumers, joins, strict=True):
        first_live = sum(1 for t in receiver.sent_at if 0 < t <= joined)
        after_join.extend(receiver.lags_ms(first_live))
    states: dict[str, int] = {}
    for receiver in lives + resumers:
        key = receiver.end_state or "none"
        states[key] = states.get(key, 0) + 1
    return {
        "streams": n,
        "wall_s": wall,
        "nominal_s": (tokens - 1) / rate + RAMP * (n - 1) / n,
        "live_complete": sum(r.complete for r in lives),
        "resumers_complete": sum(r.complete for r in resumers),
        "resumers_missing": len(missing),
        "hung_threads": hung,
        "end_states": states,
        "errors": [e for r in lives + resumers for e in r.errors if e != "resume returned None"][:5],
        "resumer_lag_ms_after_join": summary(after_join),
        "live_lag_ms": summary([x for r in lives for x in r.lags_ms()]),
        "resume_call_ms": summary(resume_calls),
        "cpu_s": (usage.ru_utime - usage0.ru_utime) + (usage.ru_stime - usage0.ru_stime),
        "system_cpu_s": usage.ru_stime - usage0.ru_stime,
        "voluntary_switches": usage.ru_nvcsw - usage0.ru_nvcsw,
        "involuntary_switches": usage.ru_nivcsw - usage0.ru_nivcsw,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "library_threads_peak": peak_threads - baseline_threads,
        "http_requests": counters.requests - requests0,
        "tcp_connections": counters.connections - connections0,
        "gc_pauses_s": counters.gc.total - gc0,
        "gc_longest_pause_ms": counters.gc.longest * 1000,
    }


# -- the runs, side by side ----------------------------------------------------


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def s2_server() -> Iterator[tuple[str, int]]:
    """A local S2 server in its own process: its URL and pid."""
    server = subprocess.Popen(
        [sys.executable, "-m", "resumable_stream.testing.server", "--port", "0", "--basin", BASIN],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the S2 server did not start: {line!r}")
        yield line.split()[1], server.pid
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def ours(kind: str, n: int, *, waves: int = 1, gevent: bool = False, tokens: int = TOKENS,
         rate: float = RATE, switch_interval: float | None = None, retention: float | None = None) -> dict[str, Any]:
    """One measurement of ours in a fresh process (with a fresh local server for ``http``)."""
    command = [sys.executable, "-m", "benchmarks.scale", "--worker", kind, "--streams", str(n), "--waves", str(waves),
               "--tokens", str(tokens), "--rate", str(rate)]
    if gevent:
        command.append("--gevent")
    if switch_interval is not None:
        command += ["--switch-interval", str(switch_interval)]
    if retention is not None:
        command += ["--retention", str(retention)]

    def run(url: str | None) -> dict[str, Any]:
        done = subprocess.run(command + ([url] if url else []), capture_output=True, text=True, timeout=1200)
        if done.returncode:
            raise RuntimeError(f"the benchmark worker failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        if "stall_dump" in result:
            print(f"({kind}, N = {n}: the run stalled; every thread's stack, grouped, is in {result['stall_dump']})")
        if result.get("library_warnings"):
            said = "; ".join(f"{count} times {template!r}"
                             for template, count in list(result["library_warnings"].items())[:6])
            print(f"({kind}, N = {n}: the library warned: {said})")
        errors = [e for wave in result["waves"] for e in wave["errors"]][:5]
        if errors:
            print(f"({kind}, N = {n}: consumers saw errors, the first ones: {'; '.join(errors)})")
        return result

    if kind not in ("http", "http2"):
        return run(None)
    with s2_server() as (url, pid):
        cpu0 = _process_cpu(pid)
        result = run(url)
        result["server_cpu_s"] = _process_cpu(pid) - cpu0
        return result


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours_value: float | None, peer_value: float | None) -> str:
    if not ours_value or not peer_value:
        return ""
    return f" ({ours_value / peer_value:.1f}x)"


def table(n: int, peer_result: dict[str, Any] | None, results: dict[str, dict[str, Any]]) -> None:
    """Print one side-by-side table for N streams: the peer, then each of our logs (ratios to the peer)."""
    columns = list(results)
    rows: list[list[str]] = []

    def row(label: str, peer_value: float | None, values: list[float | None], digits: int = 1,
            ratio: bool = True) -> None:
        cells = [_fmt(peer_value, digits)]
        for value in values:
            cells.append(_fmt(value, digits) + (_ratio(value, peer_value) if ratio else ""))
        rows.append([label, *cells])

    def ours_values(path: str) -> list[Any]:
        out = []
        for kind in columns:
            value: Any = results[kind]["waves"][-1]
            for key in path.split("."):
                value = value.get(key) if isinstance(value, dict) else None
            out.append(value)
        return out

    p = peer_result or {}
    for name, key in (("resumer lag after join p50 ms", "p50"), ("resumer lag after join p99 ms", "p99")):
        row(name, p.get("resumer_lag_ms_after_join", {}).get(key), ours_values(f"resumer_lag_ms_after_join.{key}"), 2)
    row("live lag p99 ms", p.get("live_lag_ms", {}).get("p99"), ours_values("live_lag_ms.p99"), 2)
    row("resume call p99 ms", p.get("resume_call_ms", {}).get("p99"), ours_values("resume_call_ms.p99"), 1)
    nominal = next((v for v in ours_values("nominal_s") if v), None)
    row(f"wall s (nominal {_fmt(nominal, 2)})", p.get("wall_s"), ours_values("wall_s"), 2)
    row("process CPU s", p.get("node_cpu_s", {}).get("total"), ours_values("cpu_s"), 2)
    row("  of it system s", p.get("node_cpu_s", {}).get("system"), ours_values("system_cpu_s"), 2)
    servers = [results[k].get("server_cpu_s") for k in columns]
    row("log server CPU s", p.get("redis", {}).get("redis_cpu_s"), servers, 2)
    row("peak RSS MB", p.get("peak_rss_mb"), ours_values("peak_rss_mb"), 0)
    if len(results[columns[0]]["waves"]) > 1:  # is memory flat across the waves?
        rows.append(["  after each wave", "-", *[" / ".join(f"{w['peak_rss_mb']:.0f}" for w in results[k]["waves"])
                                                 for k in columns]])
    last = [results[k]["waves"][-1] for k in columns]
    rows.append(["complete live / resumers", f"{p.get('live_complete', '-')} / {p.get('resumers_complete', '-')}",
                 *[f"{w['live_complete']} / {w['resumers_complete']}" for w in last]])
    rows.append(["end states", "-", *[_states(w["end_states"]) for w in last]])
    calls = sum(p.get("redis", {}).get("calls", {}).values()) if p else None
    per_stream = [v / n if v else None for v in ours_values("http_requests")]
    row("requests per stream", calls / n if calls else None, per_stream, 1, ratio=False)
    row("connections opened", p.get("redis", {}).get("connections"), ours_values("tcp_connections"), 0, ratio=False)
    row("library threads (peak)", None, ours_values("library_threads_peak"), 0, ratio=False)
    row("voluntary context switches", None, ours_values("voluntary_switches"), 0, ratio=False)
    row("GC pauses s", None, ours_values("gc_pauses_s"), 2, ratio=False)
    row("  the longest ms", None, ours_values("gc_longest_pause_ms"), 0, ratio=False)
    header = [f"N = {n}", "Vercel (Redis)", *[_LABELS[k] for k in columns]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def _states(states: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(states.items()))


_LABELS = {"bare": "no library (threads only)", "memory": "ours, MemoryLog", "http": "ours, local S2 over HTTP",
           "http2": "ours, HTTP/2 sessions"}


def _dump_stacks(path: Path) -> None:
    """Every thread's stack into ``path``, threads with the same stack counted together, most first.

    The stacks are taken as code locations first, without reading a source line, and only the distinct
    ones are formatted: in a GIL herd this thread gets the GIL rarely, and reading a source line per
    frame of two thousand threads once took it minutes. (faulthandler shows only 100 threads, the
    newest: in a stall, never the ones it was about.)
    """
    stacks = Counter(
        tuple((f.f_code.co_filename, line, f.f_code.co_name) for f, line in traceback.walk_stack(frame))[::-1]
        for frame in sys._current_frames().values()
    )
    with path.open("w") as out:
        out.write(f"{sum(stacks.values())} threads, {len(stacks)} different stacks\n\n")
        for stack, count in stacks.most_common():
            summary = traceback.StackSummary.from_list([(f, line, name, None) for f, line, name in stack])
            out.write(f"--- {count} thread(s):\n{''.join(summary.format())}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="100,500,1000", help="comma-separated N (default: %(default)s)")
    parser.add_argument("--logs", default="bare,memory,http",
                        help="bare (the workload without the library), memory, http, http2 (read sessions "
                             "over HTTP/2) (default: %(default)s)")
    parser.add_argument("--waves", type=int, default=1, help="run the workload this many times per process")
    parser.add_argument("--tokens", type=int, default=TOKENS, help="tokens per stream (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=RATE, help="tokens per second (default: %(default)s)")
    parser.add_argument("--no-peer", action="store_true", help="do not run the peer")
    parser.add_argument("--gevent", action="store_true", help="monkey-patch with gevent first (needs gevent)")
    parser.add_argument("--switch-interval", type=float,
                        help="sys.setswitchinterval() in the measuring process (CPython's default: 0.005 s)")
    parser.add_argument("--retention", type=float,
                        help="MemoryLog's retention in seconds, at least abandon_after's 30 (default: the "
                             "library's, a day)")
    parser.add_argument("--json-out", help="also write every result to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("url", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.switch_interval is not None:
            sys.setswitchinterval(args.switch_interval)
        if args.gevent:
            from gevent import monkey

            monkey.patch_all()
        # A run that takes four times its nominal length has stalled: every thread's stack goes to a file
        # (once, grouped: how many threads stand where), for whoever looks into it; the parent says where.
        stall_dump = Path(tempfile.gettempdir()) / f"resumable-stream-stall-{os.getpid()}.txt"
        watchdog = threading.Timer(4 * args.waves * (1 + args.tokens / args.rate), _dump_stacks, (stall_dump,))
        watchdog.name, watchdog.daemon = "scale watchdog", True
        watchdog.start()
        result = measure(args.worker, int(args.streams), args.url, args.waves, args.tokens, args.rate, args.retention)
        watchdog.cancel()
        watchdog.join()
        if stall_dump.exists():
            result["stall_dump"] = str(stall_dump)
        print(json.dumps(result))
        return
    kinds = [k for k in args.logs.split(",") if k]
    everything: dict[str, Any] = {}
    for n in (int(x) for x in args.streams.split(",")):
        peer_result = None
        if not args.no_peer:
            reason = peer.available()
            if reason is None:
                peer_result = peer.run(f"concurrency-{n}")
            else:
                print(f"(peer skipped: {reason})")
        results = {kind: ours(kind, n, waves=args.waves, gevent=args.gevent, tokens=args.tokens, rate=args.rate,
                              switch_interval=args.switch_interval, retention=args.retention)
                   for kind in kinds}
        table(n, peer_result, results)
        everything[str(n)] = {"peer": peer_result, **results}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
