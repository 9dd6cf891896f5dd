"""SIGKILL: producers killed at random points of their stream's life, and readers killed mid-read.

A producer is a real process (``workers.py produce``) that creates a stream, writes paced chunks with an
idle spell in the middle (heartbeats), and reads it as its creator, printing every chunk it produced and
was handed. Each is SIGKILLed at a random moment: before its claim, mid-stream, while idle, while ending,
or after it finished. Whatever the moment, the log must hold exactly the start of the source, the live
resumer (in the test's process) exactly the log, the stream must end abandoned (or completed, if the
kill came late) within the silence bound, and the creator must have been shown nothing beyond the log but
what was produced within ``LIVE_LEAD``. Readers are killed too: the stream and its other readers go on,
and the server lets go of the dead readers' sessions.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from resumable_stream import ResumableStreamContext, StreamAbandoned, StreamState
from resumable_stream.producer import LIVE_LEAD

from .exact import assert_exact, creator_extras, read_log
from .payloads import Paced, chunks
from .processes import Proc, ServerProcess, json_lines, worker
from .readers import Reader, join_all, wait_until
from .scale import MARKS, pick

pytestmark = MARKS

PRODUCERS = pick(10, 24)
ABANDON_AFTER = 3.0
CHUNKS, DELAY, IDLE_AT, IDLE = 80, 0.025, 40, 2.0
# A worker takes about a second to start (ten at once on two cores), then CHUNKS * DELAY of chunks and the idle.
LIFETIME = 1.0 + CHUNKS * DELAY + IDLE
#: A live resumer ends within this many seconds of its producer's death.
END_BOUND = ABANDON_AFTER + 5.0


def _phase(lines: list[dict[str, Any]]) -> str:
    """Where the producer was when it was killed, from what it printed."""
    if not any("created" in line for line in lines):
        return "before its claim landed"
    if any("state" in line for line in lines):
        return "after it ended"
    produced = [line["produced"] for line in lines if "produced" in line]
    if not produced:
        return "before its first chunk"
    if produced[-1] == IDLE_AT - 1:
        return "while idle (heartbeats)"
    if produced[-1] == CHUNKS - 1:
        return "while ending"
    return "mid-stream"


def test_producers_killed_at_random_points(server: ServerProcess, record: Callable[..., None]) -> None:
    """Producer processes SIGKILLed at random moments of their stream's life, each read live meanwhile."""
    rng = random.Random(20)
    client = server.client()
    ctx = ResumableStreamContext(client, abandon_after=ABANDON_AFTER)
    ids = [f"killed/{i}" for i in range(PRODUCERS)]
    procs: dict[str, Proc] = {}
    live: dict[str, Reader] = {}
    killed_at: dict[str, float] = {}
    kill_at: dict[str, float] = {}
    try:
        for i, sid in enumerate(ids):
            kill_at[sid] = time.monotonic() + rng.uniform(0.0, LIFETIME * 1.1)
            procs[sid] = worker("produce", sid, "--chunks", str(CHUNKS), "--delay", str(DELAY), "--seed", str(i),
                                "--idle-at", str(IDLE_AT), "--idle", str(IDLE), "--abandon-after", str(ABANDON_AFTER),
                                "--linger", "30", env=server.env())

            def open_live(sid: str = sid) -> Any:
                wait_until(lambda: ctx.stream_status(sid).state is not StreamState.MISSING
                           or procs[sid].process.poll() is not None, 30, 0.02)
                return ctx.resume_existing_stream(sid)

            live[sid] = Reader(f"{sid} live resumer", open_live)
        for sid in sorted(ids, key=kill_at.__getitem__):
            time.sleep(max(0.0, kill_at[sid] - time.monotonic()))
            procs[sid].kill()
            killed_at[sid] = time.monotonic()
        hung = join_all(list(live.values()), timeout=END_BOUND + 10)
        assert not hung, f"live resumers never ended: {[r.name for r in hung]}"
        phases: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        longest_wait = shown_beyond = delivered = longest_lead = 0.0
        for i, sid in enumerate(ids):
            procs[sid].wait(10)
            lines = json_lines(procs[sid].rest(10))
            phases[_phase(lines)] += 1
            reader = live[sid]
            status = ctx.stream_status(sid)
            if status.state is StreamState.MISSING:
                assert reader.none and not any("created" in line for line in lines)
                outcomes["missing (killed before its claim)"] += 1
                continue
            # Any reader now: the log's outcome is recorded, or gets recorded (the producer is silent).
            after = ctx.resume_existing_stream(sid, after=0)
            if after is not None:
                rest = Reader(f"{sid} later", lambda after=after: after)
                assert rest.join(END_BOUND + 5)
            logged = read_log(client, sid)
            outcomes[str(logged.state)] += 1
            source = chunks("ascii", CHUNKS, i)
            assert logged.chunks == source[: len(logged.chunks)], f"{sid}: the log is not the source's start"
            assert logged.state in ("abandoned", "completed"), f"{sid}: {logged.state}"
            if logged.state == "completed":
                assert logged.chunks == source
            if not reader.none:
                assert_exact(reader.name, reader.events, logged.after(None))
                if logged.state == "abandoned":
                    assert isinstance(reader.error, StreamAbandoned), reader.error
                    waited = (reader.ended_at or 0) - killed_at[sid]
                    assert waited <= END_BOUND, f"{reader.name} ended {waited:.1f} s after the kill"
                    longest_wait = max(longest_wait, waited)
                delivered += len(reader.events)
            # The creator (in the killed process): the log's chunks, then only LIVE_LEAD of production more.
            produced_at = {line["produced"]: line["at"] for line in lines if "produced" in line}
            handed = [(line["chunk"], source[line["i"]]) for line in lines if "chunk" in line]
            extras = creator_extras(f"{sid} creator", handed, logged)
            if extras:
                times = [produced_at[int(chunk[1 : chunk.index(">")])] for _, chunk in extras]
                assert max(times) - min(times) <= LIVE_LEAD + 0.5
                shown_beyond += len(extras)
                longest_lead = max(longest_lead, max(times) - min(times))
            delivered += len(handed)
    finally:
        for proc in procs.values():
            proc.close()
        ctx.close(timeout=5)
        client.close()
    record(producers_killed=PRODUCERS, kill_points=dict(phases), outcomes=dict(outcomes),
           abandon_after=ABANDON_AFTER, end_bound_seconds=END_BOUND,
           longest_wait_after_a_kill_seconds=round(longest_wait, 1), chunk_deliveries_checked=int(delivered),
           creator_chunks_beyond_the_log=int(shown_beyond), longest_lead_seconds=round(longest_lead, 2),
           live_lead_seconds=LIVE_LEAD)
    assert sum(phases.values()) == PRODUCERS


def test_readers_killed_mid_read(server: ServerProcess, record: Callable[..., None]) -> None:
    """Reader processes SIGKILLed at random points; the stream, its creator and a late reader are unharmed.

    The server must let go of the dead readers' read sessions: its open file descriptors come back to
    what they were before the readers came.
    """
    rng = random.Random(21)
    count = pick(5, 12)
    before = server.open_fds()
    client = server.client()
    ctx = ResumableStreamContext(client, abandon_after=ABANDON_AFTER)
    expected = chunks("unicode", 120, 7)
    source = Paced(expected, delay=0.02, seed=7)
    readers: dict[Proc, int] = {}
    try:
        live = ctx.create_new_resumable_stream("killed-readers", source)
        assert live is not None
        creator = Reader("creator", lambda: live)
        for _ in range(count):
            after = rng.choice([0, 5, 50])
            readers[worker("read", "killed-readers", "--after", str(after), env=server.env())] = after
        started = time.monotonic()
        for proc in sorted(readers, key=lambda _: rng.random()):
            time.sleep(max(0.0, started + rng.uniform(0.6, 2.2) - time.monotonic()))
            proc.kill()
        assert creator.join(30)
        late = ctx.resume_existing_stream("killed-readers", after=0)
        assert late is not None
        late_events = Reader("late", lambda: late)
        assert late_events.join(30)
        logged = read_log(client, "killed-readers")
        assert logged.state == "completed" and logged.chunks == expected
        assert_exact("creator", creator.events, logged.events)
        assert_exact("late reader", late_events.events, logged.events)
        partial = 0
        for proc, after in readers.items():
            proc.wait(10)
            lines = json_lines(proc.rest(10))
            events = [(line["event"][0], line["event"][1]) for line in lines if "event" in line]
            assert_exact(f"killed reader {proc.pid}", events, logged.after(after)[: len(events)])
            partial += len(events)
    finally:
        for proc in readers:
            proc.close()
        ctx.close(timeout=5)
        client.close()
    released = wait_until(lambda: server.open_fds() <= before, 15, 0.2)
    record(readers_killed=count, chunks=len(expected), chunks_read_before_the_kills=partial,
           server_fds_before=before, server_fds_after=server.open_fds(),
           chunk_deliveries_checked=partial + 2 * len(expected))
    assert released, f"the server holds {server.open_fds()} file descriptors, {before} before the readers came"


def test_a_resumer_of_a_long_dead_producer_ends_at_once(server: ServerProcess) -> None:
    """A producer killed long ago: ``stream_status`` says abandoned, and a new resumer ends at once.

    The resumer is told how long the producer has been silent (``read_status``'s ``silent_for``), but when
    it finds the records it has not read yet, it takes them for new ones and waits a whole bound again:
    with the default ``abandon_after`` of 30 s, a page reloaded on a dead answer waits 30 s.
    """
    client = server.client()
    ctx = ResumableStreamContext(client, abandon_after=ABANDON_AFTER)
    proc = worker("produce", "long-dead", "--chunks", "1000", "--delay", "0.01", "--abandon-after",
                  str(ABANDON_AFTER), "--linger", "30", env=server.env())
    try:
        proc.wait_for('{"chunk": 5', timeout=30)
        proc.kill()
        assert wait_until(lambda: ctx.stream_status("long-dead").state is StreamState.ABANDONED,
                          ABANDON_AFTER + 5, 0.1)
        reader = ctx.resume_existing_stream("long-dead", after=0)
        assert reader is not None
        started = time.monotonic()
        with pytest.raises(StreamAbandoned):
            for _ in reader:
                pass
        assert time.monotonic() - started < ABANDON_AFTER / 2
    finally:
        proc.close()
        ctx.close(timeout=5)
        client.close()
