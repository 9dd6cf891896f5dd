"""One stream, beside the peer: the peer's ``lag``, ``throughput`` and ``replay`` workloads.

    python -m benchmarks.single                 # every scenario, MemoryLog and local S2 over HTTP, and the peer
    python -m benchmarks.single replay --no-peer

* lag: 1,000 tokens at 100 tokens/s; a resumer on a second context joins after 1 s.
  Resumer lag for the tokens yielded after it joined, and the live consumer's.
* throughput: 100,000 tokens as fast as they are pulled: the live consumer alone,
  then with one resumer (on a second context, attached before the first token).
* replay: a resumer joins once the source has yielded all of its 10,000 (100,000)
  tokens but not yet ended; the time until it holds the whole backlog. Ours also
  replays the finished stream from its start (``after=0``), which the peer cannot.

Each scenario runs in a fresh process; over HTTP, against a fresh local S2 server
in a process of its own. The throughput and replay readers stamp each chunk and
check the tokens once the stream has ended (``Receiver.collect``): those figures
measure the library's delivery, not Python's token decoding.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from . import peer
from .scale import BASIN, s2_server
from .workload import Receiver, paced_source, summary, token

SCENARIOS = ("lag", "throughput", "replay")


def _contexts(kind: str, url: str | None) -> tuple[Any, Any]:
    from resumable_stream import MemoryLog, ResumableStreamContext, S2Client

    if kind == "memory":
        shared = MemoryLog()
        return ResumableStreamContext(shared), ResumableStreamContext(shared)
    assert url is not None
    return tuple(  # type: ignore[return-value]
        ResumableStreamContext(S2Client(access_token="bench", basin=BASIN, account_endpoint=url, basin_endpoint=url))
        for _ in range(2)
    )


def _held_source(n: int, sent: list[float], gate: threading.Event | None,
                 hold: threading.Event | None) -> Callable[[], Iterator[str]]:
    """``n`` tokens as fast as pulled, after ``gate`` opens; then the source stays open until ``hold`` is set."""

    def source() -> Iterator[str]:
        if gate is not None:
            gate.wait(60)
        for i in range(n):
            sent[i] = time.perf_counter()
            yield token(i)
        if hold is not None:
            hold.wait(60)

    return source


def _consume(receiver: Receiver, stream: Any, *, collect: bool = False) -> threading.Thread:
    """Read ``stream`` on a thread of its own: checking each chunk as it comes, or (``collect``) afterwards."""
    thread = threading.Thread(target=receiver.collect if collect else receiver.consume, args=(stream,), daemon=True)
    thread.start()
    return thread


def lag(producer: Any, resumer: Any) -> dict[str, Any]:
    n, rate = 1000, 100.0
    sent = [0.0] * n
    live, late = Receiver(n, sent), Receiver(n, sent)
    stream_id = f"lag-{uuid.uuid4().hex[:8]}"
    live_thread = _consume(live, producer.create_new_resumable_stream(stream_id, paced_source(n, rate, sent)))
    time.sleep(1.0)
    joined = time.perf_counter()
    _consume(late, resumer.resume_existing_stream(stream_id)).join(60)
    live_thread.join(60)
    first = sum(1 for t in sent if 0 < t <= joined)
    return {"resumer_after_join": summary(late.lags_ms(first)), "live": summary(live.lags_ms()),
            "complete": live.complete and late.complete}


def throughput(producer: Any, resumer: Any) -> dict[str, Any]:
    n = 100_000
    out: dict[str, Any] = {}
    for with_resumer in (False, True):
        sent = [0.0] * n
        gate = threading.Event()
        stream_id = f"tp-{uuid.uuid4().hex[:8]}"
        live, late = Receiver(n, sent), Receiver(n, sent)
        threads = [_consume(live, producer.create_new_resumable_stream(stream_id, _held_source(n, sent, gate, None)),
                            collect=True)]
        if with_resumer:
            threads.append(_consume(late, resumer.resume_existing_stream(stream_id), collect=True))
        started = time.perf_counter()
        gate.set()
        for thread in threads:
            thread.join(120)
        live_end = max(t for t in live.received_at if t == t)
        result = {"live_tok_s": n / (live_end - started), "live_complete": live.complete}
        if with_resumer:
            late_end = max(t for t in late.received_at if t == t)
            result.update(resumer_tok_s=n / (late_end - started), resumer_complete=late.complete)
        out["live_and_resumer" if with_resumer else "live_only"] = result
    return out


def replay(producer: Any, resumer: Any, trials: int = 5) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n in (10_000, 100_000):
        backlog, finished = [], []
        complete = True
        for _ in range(trials):
            sent = [0.0] * n
            hold = threading.Event()
            stream_id = f"replay-{uuid.uuid4().hex[:8]}"
            live = Receiver(n, sent)
            live_thread = _consume(live, producer.create_new_resumable_stream(stream_id, _held_source(n, sent, None,
                                                                                                      hold)),
                                   collect=True)
            deadline = time.monotonic() + 60
            while live.received < n and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.02)
            late = Receiver(n, sent)
            started = time.perf_counter()
            stream = resumer.resume_existing_stream(stream_id)
            thread = _consume(late, stream, collect=True)
            while late.received < n and time.monotonic() < deadline:
                time.sleep(0.0005)
            backlog.append((time.perf_counter() - started) * 1000)
            hold.set()
            thread.join(60)
            live_thread.join(60)
            again = Receiver(n, sent)
            started = time.perf_counter()
            again.collect(resumer.resume_existing_stream(stream_id, after=0))
            assert again.closed_at is not None
            finished.append((again.closed_at - started) * 1000)
            complete = complete and live.complete and late.complete and again.complete
        out[str(n)] = {"backlog_ms": summary(backlog), "finished_after_0_ms": summary(finished), "complete": complete}
    return out


def measure(scenario: str, kind: str, url: str | None) -> dict[str, Any]:
    producer, resumer = _contexts(kind, url)
    try:
        result: dict[str, Any] = {"lag": lag, "throughput": throughput, "replay": replay}[scenario](producer, resumer)
        return result
    finally:
        producer.close()
        resumer.close()


def ours(scenario: str, kind: str) -> dict[str, Any]:
    def run(url: str | None) -> dict[str, Any]:
        command = [sys.executable, "-m", "benchmarks.single", scenario, "--worker", kind]
        command += ["--url", url] if url else []
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise RuntimeError(f"the benchmark worker failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
        return result

    if kind == "memory":
        return run(None)
    with s2_server() as (url, _):
        return run(url)


def _row(label: str, peer_value: float | None, values: list[float | None], digits: int = 2) -> list[str]:
    def cell(v: float | None, ratio: bool) -> str:
        if v is None:
            return "-"
        text = f"{v:,.{digits}f}"
        if ratio and peer_value:
            text += f" ({v / peer_value:.2f}x)"
        return text

    return [label, cell(peer_value, False), *[cell(v, True) for v in values]]


def table(scenario: str, peer_result: dict[str, Any] | None, results: dict[str, dict[str, Any]]) -> None:
    p = peer_result or {}
    kinds = list(results)
    rows: list[list[str]] = []
    if scenario == "lag":
        for key, label in (("p50", "resumer lag after join p50 ms"), ("p99", "resumer lag after join p99 ms")):
            rows.append(_row(label, p.get("resumer_lag_ms_after_join", {}).get(key),
                             [results[k]["resumer_after_join"].get(key) for k in kinds]))
        rows.append(_row("live lag p99 ms", p.get("live_lag_ms", {}).get("p99"),
                         [results[k]["live"].get("p99") for k in kinds], 3))
    elif scenario == "throughput":
        passes = {("live_and_resumer" if x["with_resumer"] else "live_only"): x for x in p.get("passes", [])}
        for key, label in (("live_only", "live only: live tok/s"), ("live_and_resumer", "live + resumer: live tok/s")):
            rows.append(_row(label, passes.get(key, {}).get("live", {}).get("tok_per_s"),
                             [results[k][key]["live_tok_s"] for k in kinds], 0))
        rows.append(_row("live + resumer: resumer tok/s",
                         (passes.get("live_and_resumer", {}).get("resumer") or {}).get("tok_per_s"),
                         [results[k]["live_and_resumer"]["resumer_tok_s"] for k in kinds], 0))
    else:
        sizes = {str(x["backlog_tokens"]): x for x in p.get("by_size", [])}
        for n in ("10000", "100000"):
            rows.append(_row(f"{int(n):,}-token backlog to a late joiner p50 ms",
                             sizes.get(n, {}).get("time_to_full_backlog_ms", {}).get("p50"),
                             [results[k][n]["backlog_ms"]["p50"] for k in kinds]))
            rows.append(_row(f"{int(n):,}-token finished stream from after=0 p50 ms", None,
                             [results[k][n]["finished_after_0_ms"]["p50"] for k in kinds]))
    header = [scenario, "Vercel (Redis)", *[{"memory": "ours, MemoryLog", "http": "ours, local S2 over HTTP"}[k]
                                            for k in kinds]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    parser.add_argument("--logs", default="memory,http", help="memory, http or both (default: %(default)s)")
    parser.add_argument("--no-peer", action="store_true", help="do not run the peer")
    parser.add_argument("--json-out", help="also write every result to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.scenarios = args.scenarios or list(SCENARIOS)
    if args.worker:
        print(json.dumps(measure(args.scenarios[0], args.worker, args.url)))
        return
    everything: dict[str, Any] = {}
    for scenario in args.scenarios:
        peer_result = None
        if not args.no_peer and peer.available() is None:
            peer_result = peer.run(scenario)
        results = {kind: ours(scenario, kind) for kind in args.logs.split(",") if kind}
        table(scenario, peer_result, results)
        everything[scenario] = {"peer": peer_result, **results}
    if args.json_out:
        from pathlib import Path

        Path(args.json_out).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
