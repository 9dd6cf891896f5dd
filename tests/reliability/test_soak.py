"""Soak: waves of hundreds of concurrent streams, each with three readers, on one machine under load.

Each wave creates its streams at once in this process (the producers and their creators' live readers),
and a second process resumes each of them twice, once from the start and once from the cursor the
creator had reached, as a reloaded page would: so nothing is judged by a producer in its own process,
and the machine's two cores are shared by the test, the resuming process and the server. Overload may
cost latency, never correctness: every reader of every wave must get exactly the log's chunks, and the
log exactly the source's. Resident memory must stay flat after the first wave, and once the context and
its client are closed, this process's threads, file descriptors and sockets must be back to where they
were before.
"""

from __future__ import annotations

import contextlib
import gc
import json
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from resumable_stream import ResumableStreamContext

from .exact import Event, mismatch, read_log
from .observe import Resources
from .payloads import Paced, chunks
from .processes import ServerProcess, worker
from .readers import Milestone, Reader, join_all, wait_until
from .scale import MARKS, pick

pytestmark = MARKS

STREAMS = pick(100, 300)
WAVES = pick(3, 4)
CHUNKS = pick(30, 50)
DELAY = pick(0.05, 0.1)
WAVE_TIMEOUT = pick(120, 400)
#: Growth of resident memory allowed after the first wave (allocator noise, caches that fill once).
RSS_SLACK_MIB = 16.0


class Resumers:
    """The resuming process (``workers.py readers``): one request per stream and cursor, one result each."""

    def __init__(self, server: ServerProcess) -> None:
        self.proc = worker("readers", env=server.env(), stdin=True)
        self.results: dict[tuple[str, str], dict[str, Any]] = {}
        self.stats: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition()
        self._thread = threading.Thread(target=self._collect, name="resumers' results", daemon=True)
        self._thread.start()

    def request(self, stream: str, after: int | None, tag: str) -> None:
        with self._lock:
            self.proc.send(json.dumps({"stream": stream, "after": after, "tag": [stream, tag]}))

    def _collect(self) -> None:
        while True:
            try:
                line = self.proc.next_line(3600)
            except AssertionError:
                return
            if line is None:
                return
            result = json.loads(line)
            with self._arrived:
                if result.get("stats"):
                    self.stats.append(result)
                elif "tag" in result:
                    self.results[tuple(result["tag"])] = result  # type: ignore[index]
                self._arrived.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.results) >= count, timeout)

    def report(self, timeout: float = 30) -> dict[str, Any]:
        before = len(self.stats)
        with self._lock:
            self.proc.send(json.dumps({"stats": True}))
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.stats) > before, timeout)
            return self.stats[-1]

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self.proc.send(json.dumps({"quit": True}))
        self.proc.close(timeout=60)


def _events(result: dict[str, Any]) -> list[Event]:
    return [(seq, bytes.fromhex(c["hex"]) if isinstance(c, dict) else c) for seq, c in result.get("events", [])]


def test_waves_of_streams_with_three_readers_each(server: ServerProcess, record: Callable[..., None]) -> None:
    """Waves of concurrent streams, each read live by its creator and resumed twice by another process."""
    rng = random.Random(60)
    resumers = Resumers(server)
    gc.collect()
    baseline = Resources.now()
    client = server.client()
    ctx = ResumableStreamContext(client)
    waves: list[dict[str, Any]] = []
    problems: list[str] = []
    delivered = 0
    try:
        for wave in range(WAVES):
            started = time.monotonic()
            resumers.results.clear()
            sources = {f"soak/{wave}/{i}": Paced(chunks("unicode" if i % 2 else "ascii", CHUNKS, 1000 * wave + i),
                                                 DELAY, seed=i) for i in range(STREAMS)}
            milestones = {sid: Milestone(rng.randint(1, CHUNKS - 1)) for sid in sources}
            creators: dict[str, Reader] = {}
            for sid, source in sources.items():
                def create(sid: str = sid, source: Paced = source) -> Any:
                    live = ctx.create_new_resumable_stream(sid, source)
                    resumers.request(sid, None, "from the start")
                    return live

                def on_event(event: Event, sid: str = sid, milestone: Milestone = milestones[sid]) -> None:
                    if milestone.cursor is None:
                        milestone(event)
                        if milestone.cursor is not None:
                            resumers.request(sid, milestone.cursor, "from the creator's cursor")

                creators[sid] = Reader(f"{sid} creator", create, on_event=on_event)
            hung = join_all(list(creators.values()), WAVE_TIMEOUT)
            arrived = resumers.wait(2 * STREAMS, max(1.0, started + WAVE_TIMEOUT - time.monotonic()))
            elapsed = time.monotonic() - started
            wrong = len(hung) + (2 * STREAMS - len(resumers.results))
            for sid, creator in creators.items():
                logged = read_log(client, sid)
                checks = [(creator.name, creator.events, logged.after(None), creator.state)]
                for tag, after in (("from the start", None), ("from the creator's cursor", milestones[sid].cursor)):
                    result = resumers.results.get((sid, tag))
                    if result is not None:
                        checks.append((f"{sid} resumed {tag}", _events(result), logged.after(after),
                                       result.get("state") or str(result.get("error"))))
                if logged.chunks != sources[sid].items:
                    problems.append(f"{sid}: the log holds {len(logged.chunks)} chunks of {CHUNKS}")
                for name, got, expected, state in checks:
                    problem = mismatch(name, got, expected) or (None if state == "completed" else f"{name}: {state}")
                    if problem:
                        problems.append(problem)
                        wrong += 1
                    delivered += len(got)
            gc.collect()
            used = Resources.now()
            theirs = resumers.report()
            waves.append({"wave": wave + 1, "seconds": round(elapsed, 1), "wrong_or_hung_readers": wrong,
                          "all_results_arrived": arrived, "rss_mib": used.rss_mib, "threads": used.threads,
                          "fds": used.fds, "sockets": used.sockets,
                          "resuming_process_rss_mib": round(theirs["rss_kib"] / 1024, 1),
                          "resuming_process_threads": theirs["threads"]})
    finally:
        ctx.close()
        client.close()
        resumers.close()
    # Back to the baseline once closed.
    def settled() -> bool:
        now = Resources.now()
        return now.fds <= baseline.fds and now.sockets <= baseline.sockets and now.threads <= baseline.threads

    back = wait_until(settled, 15, 0.2)
    closed = Resources.now()
    first, later = waves[0]["rss_mib"], [w["rss_mib"] for w in waves[1:]]
    record(streams_per_wave=STREAMS, readers_per_stream=3, waves=WAVES, chunks_per_stream=CHUNKS,
           readers=3 * STREAMS * WAVES, chunk_deliveries_checked=delivered, wrong_or_hung_readers=len(problems),
           waves_table=waves, baseline={"threads": baseline.threads, "fds": baseline.fds,
                                        "sockets": baseline.sockets, "rss_mib": baseline.rss_mib},
           after_close={"threads": closed.threads, "fds": closed.fds, "sockets": closed.sockets},
           rss_growth_after_the_first_wave_mib=round(max(later, default=first) - first, 1))
    assert not problems, "\n".join(problems[:20])
    assert all(w["all_results_arrived"] for w in waves)
    assert max(later, default=first) <= first + RSS_SLACK_MIB, f"RSS grew: {[w['rss_mib'] for w in waves]}"
    assert back, f"not back to the baseline after close(): {closed} vs {baseline}"


def test_a_closed_context_leaves_no_thread_behind(server: ServerProcess) -> None:
    """After ``close()`` (and the client's), a context's threads are gone within a few seconds."""
    before = {t.ident for t in threading.enumerate()}
    client = server.client()
    ctx = ResumableStreamContext(client)
    live = ctx.create_new_resumable_stream("soak/closed-context", lambda: iter(["a", "b"]))
    assert live is not None and list(live) == ["a", "b"]
    ctx.close()
    client.close()

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in before]

    assert wait_until(lambda: not left(), 10, 0.1), f"still running after close(): {left()}"

