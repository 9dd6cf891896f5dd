"""Fault mix: many concurrent streams while the log misbehaves in every way it may.

The engine talks to the local S2 server over real HTTP through a proxy that resets connections at
random points (mid-request, mid-answer, mid-SSE-session), while the server's own fault injection answers
appends, reads, read sessions and tail checks with 5xx, 408, 429 with ``retry-after-ms``, drops the
connection before or after committing an append, or delays the answer. The faults stay within the
retry budget, so every stream must complete, and every reader (the creator, a resumer without a cursor,
a resumer with the creator's cursor) must get exactly the log's chunks, which must be exactly the
source's: once each, in order, nothing missing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from resumable_stream import ResumableStreamContext, RetryPolicy, S2Error

from .chaos import ChaosProxy
from .exact import mismatch, read_log
from .observe import Tally
from .payloads import KINDS, Paced, chunks
from .processes import RemoteFaults, ServerProcess
from .readers import Milestone, Reader, join_all
from .scale import MARKS, pick

pytestmark = MARKS

CONTROL = "resumable-stream.control"  # stop requests: faults on it too

STREAMS = pick(100, 250)
CHUNKS = pick(30, 80)
# Seconds between two faults added to the server.
FAULT_EVERY = 0.05
ABANDON_AFTER = 12.0  # heartbeats every 4 s, appends given up after 6 s: the faults below stay well within
RETRY = RetryPolicy(max_attempts=25, max_elapsed=5.0, initial_backoff=0.02, max_backoff=0.4)

# (operation, fault) pairs the rain picks from; every fault affects one request.
MENU: list[tuple[str, dict[str, Any]]] = [
    ("append", {"status": 503}),
    ("append", {"status": 500}),
    ("append", {"status": 408}),
    ("append", {"status": 429, "retry_after_ms": 50}),
    ("append", {"drop": True}),
    ("append", {"drop_after_commit": True}),
    ("append", {"latency": 0.3}),
    ("read", {"status": 503}),
    ("read", {"status": 429, "retry_after_ms": 30}),
    ("read", {"drop": True}),
    ("read", {"latency": 0.3}),
    ("check_tail", {"status": 503}),
    ("check_tail", {"drop": True}),
    ("check_tail", {"latency": 0.2}),
]


class FaultRain:
    """Adds faults of :data:`MENU` every ``every`` seconds, each for one request of one of ``streams()``.

    A stream has at most one fault waiting per operation, and gets the next one only ``cool_down``
    seconds after the last was used, so that no chain of retries meets more faults than its budget
    allows: the streams must complete, and the point is what readers get meanwhile. At most
    :attr:`PENDING` faults wait per operation (tail checks are rare: theirs would pile up).
    """

    PENDING = 40

    def __init__(self, faults: RemoteFaults, streams: Callable[[], list[str]], every: float, cool_down: float,
                 seed: int) -> None:
        self.faults, self.streams, self.every, self.cool_down = faults, streams, every, cool_down
        self.added: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault rain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waiting: set[tuple[str, str]] = set()
        cooling: dict[tuple[str, str], float] = {}
        while not self._stop.wait(self.every):
            now = time.monotonic()
            still = {(f["stream"], f["op"]) for f in self.faults.active()}
            for used in waiting - still:
                cooling[used] = now + self.cool_down
            waiting = still
            pending = Counter(op for _, op in waiting)
            streams = self.streams()
            for _ in range(20 if streams else 0):
                op, fault = self._rng.choice(MENU)
                key = (self._rng.choice(streams), op)
                if key in waiting or cooling.get(key, 0) > now or pending[op] >= self.PENDING:
                    continue
                pending[op] += 1
                self.faults.add(op, key[0], times=1, **fault)
                waiting.add(key)
                self.added[op] += 1

    def stop(self) -> Counter[str]:
        """Stop adding faults; how many took effect, by operation."""
        self._stop.set()
        self._thread.join(10)
        left = Counter(str(fault["op"]) for fault in self.faults.active())
        self.faults.clear()
        return Counter({op: self.added[op] - left[op] for op in self.added})


def test_every_reader_gets_every_chunk_once_under_a_fault_mix(server: ServerProcess, tally: Tally,
                                                              record: Callable[..., None]) -> None:
    """Concurrent streams of text, Unicode, bytes and hostile text under a rain of faults.

    Every stream must complete; the log, the creator, a resumer from the start and a resumer from the
    creator's cursor must hold exactly the source's chunks.
    """
    rng = random.Random(8)
    ids = [f"mix/{i}-{KINDS[i % len(KINDS)]}" for i in range(STREAMS)]
    sources = {
        sid: Paced(chunks(KINDS[i % len(KINDS)], CHUNKS, i), delay=0.06, seed=i,
                   idle={CHUNKS // 2: 6.0} if i % 4 == 3 else None)  # idle past a heartbeat
        for i, sid in enumerate(ids)
    }
    milestones = {sid: Milestone(rng.randint(1, CHUNKS // 2)) for sid in ids}
    proxy = ChaosProxy(server.url, cut_down=0.3, cut_up=0.05, seed=8, max_bytes=16 * 1024)
    # Connections enough for every stream's claim at once: the retry budget is for faults, not for queueing.
    client = server.client(endpoint=proxy.url, retry=RETRY, request_timeout=3.0, max_connections=64)
    ctx = ResumableStreamContext(client, abandon_after=ABANDON_AFTER)
    readers: dict[str, list[Reader]] = {}

    def running() -> list[str]:  # the streams still being written, and the control stream
        return [CONTROL, *(sid for sid, group in list(readers.items()) if group[0].alive)]

    rain = FaultRain(server.faults, running, FAULT_EVERY, cool_down=1.5, seed=8)
    started = time.monotonic()
    try:
        for sid in ids:
            created = threading.Event()

            def create(sid: str = sid, created: threading.Event = created) -> Any:
                time.sleep(rng.uniform(0, 2))  # streams begin over two seconds, as requests arrive
                try:
                    return ctx.create_new_resumable_stream(sid, sources[sid])
                finally:
                    created.set()

            def from_start(sid: str = sid, created: threading.Event = created) -> Any:
                assert created.wait(60)
                return ctx.resume_existing_stream(sid)

            def from_cursor(sid: str = sid) -> Any:
                return ctx.resume_existing_stream(sid, after=milestones[sid].wait(60))

            readers[sid] = [Reader(f"{sid} creator", create, on_event=milestones[sid]),
                            Reader(f"{sid} from start", from_start),
                            Reader(f"{sid} from cursor", from_cursor)]
        hung = join_all([r for rs in readers.values() for r in rs], timeout=pick(120, 300))
        elapsed = time.monotonic() - started
    finally:
        injected = rain.stop()
        proxy.calm()
        ctx.close()
        client.close()
        proxy.close()
    assert not hung, f"{len(hung)} readers never ended: {[r.name for r in hung[:5]]}"

    direct = server.client()
    problems: list[str] = []
    states: Counter[str] = Counter()
    delivered = heartbeats = written = 0
    for sid, (creator, start, at_cursor) in readers.items():
        logged = read_log(direct, sid)
        states[logged.state or "unended"] += 1
        written += len(logged.events)
        heartbeats += logged.heartbeats
        if logged.chunks != sources[sid].items:
            problems.append(f"{sid}: the log holds {len(logged.chunks)} chunks, not the source's {CHUNKS}")
        for reader, after in ((creator, None), (start, None), (at_cursor, milestones[sid].cursor)):
            if reader.error is not None or reader.none:
                problems.append(f"{reader.name}: ended with {reader.state} ({reader.error!r:.200})")
            problem = mismatch(reader.name, reader.events, logged.after(after))
            if problem:
                problems.append(problem)
            delivered += len(reader.events)
    direct.close()
    record(streams=STREAMS, kinds=", ".join(KINDS), chunks_per_stream=CHUNKS, chunks_on_the_log=written,
           readers=3 * STREAMS, chunk_deliveries_checked=delivered, outcomes=dict(states),
           faults_injected=sum(injected.values()), faults_by_operation=dict(injected),
           connection_resets_by_proxy=proxy.cuts, connections_through_proxy=proxy.connections,
           client_retries=tally.counts["retries"], sessions_reopened=tally.counts["sessions reopened"],
           lost_answers_found_landed=tally.counts["lost answers found landed"], heartbeats_on_the_log=heartbeats,
           seconds=round(elapsed, 1), wrong_readers=len(problems))
    assert not problems, "\n".join(problems[:20])
    assert states == {"completed": STREAMS}


def test_a_read_session_cut_while_its_error_answer_is_read_is_retried(server: ServerProcess) -> None:
    """A read session answered with a retryable error (503) whose body is cut off reopens, as any lost session does.

    Every exception of the library derives from ``ResumableStreamError``; the session's retries cover
    connection errors. Here the server answers the session's GET with a 503 and the connection is reset
    while its body is being read: ``Transport.stream`` reads that body outside its error handling.
    """
    server.faults.add("read", "cut-error-answer", status=503, times=1)
    with ChaosProxy(server.url, cut_after=b'{"code"') as proxy:
        client = server.client(endpoint=proxy.url)
        try:
            client.ensure_stream("cut-error-answer")
            session = client.read_session("cut-error-answer", seq_num=0, wait=1)
            try:
                for _ in session:
                    pass  # after the 503 is retried, an empty stream ends the session after its wait
            except S2Error:
                pass  # given up after retries would be fine too
        finally:
            client.close()
    assert proxy.cuts == 1
