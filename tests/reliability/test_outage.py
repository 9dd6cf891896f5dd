"""Outage beyond the retry budget: the log goes away for longer than anything retries, then comes back.

Three outages, each longer than the retry budget, than the producers' append deadline and than their
silence bound: the server killed (connections refused) and restarted on its data directory; every
request answered 503; only appends answered 503 (reads go on, so readers judge the silence). Sources
never finish by themselves, so a stream can only end failed or abandoned: never completed. Every reader
must end within a stated bound of the outage's start; what the log holds must be exactly the start of
what the source produced; the creator must have been shown nothing beyond the log but chunks produced
within ``LIVE_LEAD`` of each other (the documented window), and a creator that stops reading when the
outage begins and reads on once it is over must be handed nothing more that the log does not hold; and
once the log is back, new streams work.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resumable_stream import ResumableStreamContext, RetryPolicy, S2Client, S2Error, StreamAbandoned, StreamFailed
from resumable_stream.producer import LIVE_LEAD

from .exact import Event, assert_exact, creator_extras, read_log
from .payloads import Paced, chunks
from .processes import ServerProcess, free_port
from .readers import Milestone, Reader, join_all
from .scale import MARKS, pick

pytestmark = MARKS

STREAMS = pick(10, 30)
#: The producers' silence bound: heartbeats after a third of it, appends given up after half of it.
ABANDON_AFTER = pick(4.0, 12.0)
#: How long the log is away: past the append deadline and the silence bound.
OUTAGE = ABANDON_AFTER + 4
RETRY = RetryPolicy(max_attempts=4, max_elapsed=1.0, initial_backoff=0.05, max_backoff=0.3)
#: Every reader ends within this many seconds of the outage's start: the silence bound (a reader of a
#: producer that stopped writing waits that long), plus the retry budget and a margin for a loaded machine.
READER_BOUND = ABANDON_AFTER + 5
#: Leeway on LIVE_LEAD for the time between the check and the creator's taking the chunks.
LEAD_SLACK = 0.5


class Outage:
    """One kind of outage of a server process on a data directory: ``begin()``, then ``end()``."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind, self.data_dir = kind, data_dir
        self.port = free_port()
        self.server = ServerProcess(port=self.port, data_dir=data_dir)

    def begin(self) -> None:
        if self.kind == "refused":
            self.server.kill()  # SIGKILL: connections are refused until it is back
        elif self.kind == "503":
            self.server.faults.add(status=503)
        else:
            self.server.faults.add("append", status=503)

    def end(self) -> None:
        if self.kind == "refused":
            self.server.close()
            self.server = ServerProcess(port=self.port, data_dir=self.data_dir)
        else:
            self.server.faults.clear()

    def close(self) -> None:
        self.server.close()


@pytest.mark.parametrize("kind", pick(["refused", "appends"], ["refused", "503", "appends"]))
def test_an_outage_beyond_the_retry_budget_fails_or_abandons_every_stream(
    kind: str, tmp_path: Path, record: Callable[..., None]
) -> None:
    """Streams running when the log goes away for longer than every budget; new streams once it is back.

    No stream completes; each ends failed or abandoned on the log; every reader ends within the bound;
    the log holds exactly the start of each source; the creator was shown beyond the log only what was
    produced within ``LIVE_LEAD``.
    """
    outage = Outage(kind, tmp_path / "data")
    client = S2Client(access_token="local", basin="reliability-basin", account_endpoint=outage.server.url,
                      basin_endpoint=outage.server.url, retry=RETRY, request_timeout=2.0, connect_timeout=1.0)
    ctx = ResumableStreamContext(client, abandon_after=ABANDON_AFTER)
    rng = random.Random(kind)
    sources = {f"outage-{kind}/{i}": Paced(chunks("unicode" if i % 2 else "ascii", 10_000, i), delay=0.02, seed=i)
               for i in range(STREAMS)}
    milestones = {sid: Milestone(rng.randint(2, 20)) for sid in sources}
    readers: dict[str, tuple[Reader, Reader, Reader]] = {}
    reading = threading.Event()  # cleared during the outage: the slow creators stop reading meanwhile
    reading.set()
    slow = set(list(sources)[1::2])
    try:
        for sid, source in sources.items():
            live = ctx.create_new_resumable_stream(sid, source)
            assert live is not None

            def on_event(event: Event, sid: str = sid) -> None:
                milestones[sid](event)
                if sid in slow:
                    reading.wait(OUTAGE + 30)

            def from_cursor(sid: str = sid) -> Any:
                return ctx.resume_existing_stream(sid, after=milestones[sid].wait(30))

            readers[sid] = (Reader(f"{sid} creator", lambda live=live: live, on_event=on_event),
                            Reader(f"{sid} from start", lambda sid=sid: ctx.resume_existing_stream(sid)),
                            Reader(f"{sid} from cursor", from_cursor))
        time.sleep(1.5)  # every stream writing, every reader reading
        reading.clear()
        began = time.monotonic()
        outage.begin()
        everyone = [r for sid, rs in readers.items() for r in rs if r is not rs[0] or sid not in slow]
        hung = join_all(everyone, timeout=READER_BOUND)
        time.sleep(max(0.0, began + OUTAGE - time.monotonic()))
        outage.end()
        restored = time.monotonic()
        reading.set()  # the slow creators read on, long after their streams failed
        assert not hung, f"{len(hung)} readers still running {READER_BOUND} s after the outage began: " \
                         f"{[(r.name, len(r.events)) for r in hung[:5]]}"
        assert not join_all([readers[sid][0] for sid in slow], timeout=15), "a slow creator never ended"
        latest_end = max(r.ended_at or 0 for r in everyone) - began
        figures = _check_streams(ctx, outage.server, sources, readers, milestones, slow, restored)
        fresh = _new_streams_work(ctx, kind)
    finally:
        ctx.close(timeout=5)
        client.close()
        outage.close()
    record(outage=kind, outage_seconds=OUTAGE, abandon_after=ABANDON_AFTER, retry_budget_seconds=RETRY.max_elapsed,
           streams=STREAMS, readers=3 * STREAMS, reader_bound_seconds=READER_BOUND,
           last_reader_ended_after_seconds=round(latest_end, 1), **figures,
           new_streams_after_the_outage=fresh, back_after_seconds=round(restored - began, 1),
           completed_streams=0)


def _check_streams(ctx: ResumableStreamContext, server: ServerProcess,
                   sources: dict[str, Paced], readers: dict[str, tuple[Reader, Reader, Reader]],
                   milestones: dict[str, Milestone], slow: set[str], restored: float) -> dict[str, Any]:
    direct = server.client()
    states: dict[str, int] = {}
    shown_beyond = longest_lead = 0.0
    delivered = written = slow_read_late = 0
    # A reader after the outage records the outcome of each stream whose producer could not.
    late = {sid: Reader(f"{sid} after the outage", lambda sid=sid: ctx.resume_existing_stream(sid, after=0))
            for sid in readers}
    hung = join_all(list(late.values()), timeout=2 * ABANDON_AFTER + 10)
    assert not hung, f"{len(hung)} readers after the outage never ended"
    try:
        for sid, (creator, start, at_cursor) in readers.items():
            source = sources[sid]
            assert source.closed.wait(10), f"{sid}: the source was never closed"
            logged = read_log(direct, sid)
            assert logged.state in ("failed", "abandoned"), f"{sid}: ended {logged.state} on the log"
            assert ctx.stream_status(sid).state.value == logged.state
            states[logged.state] = states.get(logged.state, 0) + 1
            assert logged.chunks == source.items[: len(logged.chunks)], f"{sid}: the log is not the source's start"
            rest = late[sid]
            assert_exact(rest.name, rest.events, logged.events)
            assert isinstance(rest.error, (StreamFailed, StreamAbandoned)), rest.error
            # The creator: the log's chunks, then at most LIVE_LEAD of production the log never took.
            assert isinstance(creator.error, S2Error), f"{creator.name} ended with {creator.error!r}"
            extras = creator_extras(creator.name, creator.events, logged)
            if sid in slow:  # what it read once the outage was over must all be on the log
                read_late = [e for e, at in zip(creator.events, creator.event_times, strict=True) if at >= restored]
                unwritten = [e for e in read_late if e in extras]
                assert not unwritten, f"{creator.name}: handed {len(unwritten)} unwritten chunks after the failure"
                slow_read_late += len(read_late)
            if extras:
                produced = [source.produced[source.index_of(chunk)] for _, chunk in extras]
                lead = max(produced) - min(produced)
                assert lead <= LIVE_LEAD + LEAD_SLACK, f"{creator.name}: {lead:.1f} s of production beyond the log"
                longest_lead = max(longest_lead, lead)
                shown_beyond += len(extras)
            # Resumers: exactly the log's chunks after their cursor, as far as they got.
            for reader, cursor in ((start, None), (at_cursor, milestones[sid].cursor)):
                expected = logged.after(cursor)
                assert_exact(reader.name, reader.events, expected[: len(reader.events)])
                assert reader.error is not None, f"{reader.name} ended without an error"
                delivered += len(reader.events)
            delivered += len(creator.events)
            written += len(logged.events)
    finally:
        direct.close()
    return {"outcomes": states, "chunks_on_the_log": written, "chunk_deliveries_checked": delivered,
            "creator_chunks_beyond_the_log": int(shown_beyond), "longest_lead_seconds": round(longest_lead, 2),
            "live_lead_seconds": LIVE_LEAD, "slow_creators": len(slow),
            "chunks_slow_creators_read_after_the_outage": slow_read_late}


def _new_streams_work(ctx: ResumableStreamContext, kind: str) -> int:
    """Fresh streams after the outage complete, exactly, for the creator and a resumer."""
    count = 5
    for i in range(count):
        sid = f"outage-{kind}/after-{i}"
        expected = chunks("unicode", 20, 100 + i)
        live = ctx.create_new_resumable_stream(sid, lambda expected=expected: iter(expected))
        assert live is not None
        assert list(live) == expected
        again = ctx.resume_existing_stream(sid, after=0)
        assert again is not None and list(again) == expected
        assert ctx.stream_status(sid).state.value == "completed"
    return count

