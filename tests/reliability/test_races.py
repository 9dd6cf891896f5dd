"""Races: stop against completion, stop against creation, and twenty processes creating one id.

A stop request races the source's last chunk, or the stream's creation itself, from another context (as
another process would, through the control stream), many times at random offsets: each stream must end
exactly once (one terminal record), as completed or stopped, with the stop's answer, the log and every
reader agreeing, and the source run at most once and always closed. Then twenty real processes create
the same stream at the same instant, also with the claim's answer delayed, and with it lost after the
claim landed: ``make_stream`` must be called exactly once, and every process must read the same chunks.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable_stream import ResumableStreamContext, StreamState

from .exact import assert_exact, read_log
from .payloads import chunks
from .processes import ServerProcess, json_lines, worker
from .readers import Reader
from .scale import MARKS, pick

pytestmark = MARKS

TRIALS = pick(30, 200)
RACERS = 20


class Source:
    """A source of ``count`` chunks ``delay`` apart (``count=None``: endless); counts its calls and closes."""

    def __init__(self, count: int | None, delay: float) -> None:
        self.count, self.delay = count, delay
        self.calls = 0
        self.closed = threading.Event()

    def __call__(self) -> Iterator[str]:
        self.calls += 1
        try:
            i = 0
            while self.count is None or i < self.count:
                time.sleep(self.delay)
                yield f"<{i}> "
                i += 1
        finally:
            self.closed.set()


@pytest.fixture
def contexts(server: ServerProcess) -> Iterator[tuple[ResumableStreamContext, ResumableStreamContext]]:
    """Two contexts on two clients: the producer's and the stopper's (as if in two processes)."""
    one, two = server.client(), server.client()
    with ResumableStreamContext(one, abandon_after=5, stop_timeout=5) as a, \
            ResumableStreamContext(two, abandon_after=5, stop_timeout=5) as b:
        yield a, b
    one.close()
    two.close()


def test_stop_racing_completion(contexts: tuple[ResumableStreamContext, ResumableStreamContext],
                                server: ServerProcess, record: Callable[..., None]) -> None:
    """A stop from another context at a random moment around the source's last chunk: one end, agreed by all."""
    producer_ctx, stopper = contexts
    rng = random.Random(30)
    outcomes: Counter[str] = Counter()
    checked = 0
    direct = server.client()
    for trial in range(TRIALS):
        sid = f"stop-vs-end/{trial}"
        source = Source(10, 0.01)
        live = producer_ctx.create_new_resumable_stream(sid, source)
        assert live is not None
        creator = Reader("creator", lambda live=live: live)
        time.sleep(rng.uniform(0.0, 0.2))  # the source ends after about 0.1 s
        status = stopper.stop_stream(sid)
        assert creator.join(15), f"{sid}: the creator never ended"
        assert source.closed.wait(10), f"{sid}: the source was not closed"
        logged = read_log(direct, sid)
        assert logged.state in ("completed", "stopped"), f"{sid}: ended {logged.state}"
        assert status.state.value == logged.state == creator.state, (status, logged.state, creator.state)
        assert status.tail == logged.tail
        assert logged.chunks == [f"<{i}> " for i in range(len(logged.chunks))]
        if logged.state == "completed":
            assert len(logged.chunks) == 10
        assert_exact(f"{sid} creator", creator.events, logged.events)
        resumed = stopper.resume_existing_stream(sid, after=0)
        assert resumed is not None
        later = Reader("resumer", lambda resumed=resumed: resumed)
        assert later.join(15)
        assert_exact(f"{sid} resumer", later.events, logged.events)
        assert source.calls == 1
        outcomes[logged.state] += 1
        checked += 2 * len(logged.events)
    direct.close()
    record(trials=TRIALS, outcomes=dict(outcomes), terminal_records_per_stream=1, chunk_deliveries_checked=checked)


def test_stop_racing_creation(contexts: tuple[ResumableStreamContext, ResumableStreamContext],
                              server: ServerProcess, record: Callable[..., None]) -> None:
    """A stop and the creation of the same stream at the same instant, from two contexts.

    Either the stop comes first (the creation returns ``None`` and the source never runs) or the
    creation does (the stream runs and is stopped); never both, never a stream left running.
    """
    producer_ctx, stopper = contexts
    rng = random.Random(31)
    outcomes: Counter[str] = Counter()
    direct = server.client()
    for trial in range(TRIALS):
        sid = f"stop-vs-create/{trial}"
        source = Source(None, 0.01)  # endless: only the stop ends it
        start = threading.Barrier(2, timeout=10)
        created: list[Any] = []

        def create(sid: str = sid, source: Source = source, start: threading.Barrier = start,
                   created: list[Any] = created) -> None:
            start.wait()
            time.sleep(rng.uniform(0, 0.01))
            created.append(producer_ctx.create_new_resumable_stream(sid, source))

        creating = threading.Thread(target=create)
        creating.start()
        start.wait()
        time.sleep(rng.uniform(0, 0.01))
        status = stopper.stop_stream(sid)
        creating.join(15)
        assert not creating.is_alive() and len(created) == 1
        assert status.state is StreamState.STOPPED, f"{sid}: {status}"
        live = created[0]
        if live is None:
            assert source.calls == 0, f"{sid}: the source ran for a stream that was stopped before it was created"
            outcomes["stopped before it was created"] += 1
        else:
            creator = Reader("creator", lambda live=live: live)
            assert creator.join(15)
            assert creator.state == "stopped", f"{sid}: the creator ended {creator.state}"
            if source.calls == 0:  # stopped while claiming: the work never started
                outcomes["created, stopped before its source started"] += 1
            else:
                assert source.calls == 1 and source.closed.wait(10), f"{sid}: source called {source.calls} times"
                outcomes["created, then stopped"] += 1
        logged = read_log(direct, sid)
        assert logged.state == "stopped" and status.tail == logged.tail
        if live is not None:
            assert_exact(f"{sid} creator", creator.events, logged.events)
        assert producer_ctx.create_new_resumable_stream(sid, Source(1, 0)) is None  # ended for good
    direct.close()
    record(trials=TRIALS, outcomes=dict(outcomes))


@pytest.mark.parametrize("claim", ["answered", "delayed", "lost after landing", "lost before landing"])
def test_twenty_processes_create_one_stream(claim: str, server: ServerProcess, tmp_path: Path,
                                            record: Callable[..., None]) -> None:
    """Twenty processes call ``create_new_resumable_stream`` on one id at the same instant.

    ``delayed``: every claim's answer comes 0.5 s late. ``lost after landing``: the first claim to arrive
    lands, then its connection is dropped before the answer (its client must find out it won).
    ``lost before landing``: the first three claims are dropped unread.
    """
    sid = f"twenty/{claim}"
    if claim == "delayed":
        server.faults.add("append", sid, latency=0.5, times=RACERS)
    elif claim == "lost after landing":
        server.faults.add("append", sid, drop_after_commit=True, times=1)
    elif claim == "lost before landing":
        server.faults.add("append", sid, drop=True, times=3)
    gate, marker = tmp_path / "go", tmp_path / "calls"
    marker.touch()
    procs = [worker("race", sid, "--gate", str(gate), "--marker", str(marker), "--kind", "unicode", "--chunks", "30",
                    "--seed", "5", "--delay", "0.01", env=server.env()) for _ in range(RACERS)]
    try:
        for proc in procs:
            proc.wait_for('{"ready"', timeout=60)
        gate.touch()
        outputs = [json_lines(proc.rest(60))[-1] for proc in procs]
        for proc in procs:
            assert proc.wait(30) == 0, proc.stderr()[-2000:]
    finally:
        for proc in procs:
            proc.close()
    direct = server.client()
    logged = read_log(direct, sid)
    direct.close()
    calls = marker.read_text().split()
    assert len(calls) == 1, f"make_stream was called {len(calls)} times, by {calls}"
    assert logged.state == "completed" and logged.chunks == chunks("unicode", 30, 5)
    expected = [[seq, chunk] for seq, chunk in logged.events]
    for output in outputs:
        assert output["events"] == expected and output["state"] == "completed" and output["error"] is None
    record(claim=claim, processes=RACERS, make_stream_calls=len(calls), identical_outputs=len(outputs),
           faults_left_unused=len(server.faults.active()), chunk_deliveries_checked=RACERS * len(expected))
