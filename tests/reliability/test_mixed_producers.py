"""Mixed producers: ours and ``@s2-dev/resumable-stream``'s record protocol on one basin.

``@s2-dev/resumable-stream`` cannot be installed from the registry this project reaches (npm answers
E404), so ``tests/js/foreign_stream.mjs`` emulates its generic resumer 3.0.2: the same calls, in the same
order, on the same official SDK (``@s2-dev/streamstore``): a claim fence ``session-<5 base36>`` conditional
on the empty token, data batches through an append session fenced with it and ``matchSeqNum`` from 1,
an ``end-``/``error-`` fence, and nothing at all while its source is idle. Its producer must never be fenced
by our readers however long it is silent; each library must read the other's streams exactly; and when
both create one id at the same instant, exactly one runs its source and both read the same chunks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable_stream import ResumableStreamContext, StreamAbandoned, StreamState

from ..test_ts_sdk import JS_DIR, node
from .exact import assert_exact, read_log
from .payloads import Paced, chunks
from .processes import Proc, ServerProcess, json_lines
from .readers import Reader, join_all, wait_until
from .scale import MARKS, pick

pytestmark = MARKS

ABANDON_AFTER = 2.0


def foreign(server: ServerProcess, mode: str, stream: str, steps: list[Any] | None = None,
            gate: Path | None = None) -> Proc:
    """The emulated ``@s2-dev/resumable-stream`` (create or resume), as a Node process."""
    args = [node(), "foreign_stream.mjs", mode, stream] + ([json.dumps(steps)] if steps is not None else [])
    env = {**server.env(), "S2_LINGER_DURATION_MS": "20", **({"GATE": str(gate)} if gate else {})}
    return Proc(args, env, cwd=JS_DIR)


def foreign_output(proc: Proc, timeout: float = 60) -> list[dict[str, Any]]:
    lines = json_lines(proc.rest(timeout))
    assert proc.wait(10) == 0, proc.stderr()[-2000:]
    return lines


@pytest.fixture
def ctx(server: ServerProcess) -> Iterator[ResumableStreamContext]:
    client = server.client()
    with ResumableStreamContext(client, abandon_after=ABANDON_AFTER) as context:
        yield context
    client.close()


def test_an_idle_foreign_producer_is_never_fenced(server: ServerProcess, ctx: ResumableStreamContext,
                                                 record: Callable[..., None]) -> None:
    """Its producer writes two chunks, then thinks for longer than our silence bound, then writes two more.

    Our readers end by their bound, reporting the stream abandoned, but write nothing to it; a creator of
    ours on the same id joins it instead of starting a source; the foreign producer then finishes its
    stream, and we read all of it.
    """
    idle = (ABANDON_AFTER + 3) * 1000
    sid = "mixed/idle"
    producer = foreign(server, "create", sid, ["a ", "b ", idle, "c ", "d "])
    try:
        assert wait_until(lambda: server.client().check_tail(sid).seq_num >= 3, 20), "its first chunks never landed"
        ours_called = threading.Event()
        joined = ctx.create_new_resumable_stream(sid, lambda: (ours_called.set(), iter(["never"]))[1])
        assert joined is not None
        readers = [Reader("joined creator", lambda: joined),
                   Reader("from start", lambda: ctx.resume_existing_stream(sid)),
                   Reader("after 0", lambda: ctx.resume_existing_stream(sid, after=0)),
                   Reader("after 1", lambda: ctx.resume_existing_stream(sid, after=1))]
        started = time.monotonic()
        assert not join_all(readers, timeout=ABANDON_AFTER + 5), "a reader of an idle foreign producer hung"
        waited = max(r.ended_at or 0 for r in readers) - started
        reported = ctx.stream_status(sid).state
        output = foreign_output(producer)
    finally:
        producer.close()
    assert not ours_called.is_set(), "our source ran for a stream the other library had claimed"
    assert reported is StreamState.ABANDONED  # reported from the silence, never recorded
    assert {"persisted": True} in output, f"the foreign producer was shut out: {output}"
    assert [line["chunk"] for line in output if "chunk" in line] == ["a ", "b ", "c ", "d "]
    direct = server.client()
    logged = read_log(direct, sid, foreign=True)
    direct.close()
    assert logged.chunks == ["a ", "b ", "c ", "d "] and logged.state == "completed"
    assert logged.tail == 6 and logged.others == 0, "something besides its records is on its stream"
    for reader, after in zip(readers, (None, None, 0, 1), strict=True):
        assert isinstance(reader.error, StreamAbandoned), f"{reader.name}: {reader.error!r}"
        assert_exact(reader.name, reader.events, [e for e in logged.after(after) if e[0] <= 2])
    again = ctx.resume_existing_stream(sid, after=0)
    assert again is not None and list(again.events()) == [(str(s), c) for s, c in logged.events]
    assert ctx.stream_status(sid).state is StreamState.COMPLETED
    record(foreign_idle_seconds=idle / 1000, abandon_after=ABANDON_AFTER, our_readers=len(readers),
           readers_ended_after_seconds=round(waited, 1), records_we_wrote_to_its_stream=0,
           its_chunks_after_the_idle_spell=2, chunk_deliveries_checked=sum(len(r.events) for r in readers) + 4)


def test_each_library_reads_the_others_streams(server: ServerProcess, ctx: ResumableStreamContext,
                                              record: Callable[..., None]) -> None:
    """Streams of both libraries at once on one basin; each library reads every stream of the other."""
    count = pick(4, 12)
    theirs = {f"mixed/theirs-{i}": [c for chunk in chunks("unicode", 20, i) for c in (chunk, 5)] for i in range(count)}
    producers = [foreign(server, "create", sid, steps) for sid, steps in theirs.items()]
    ours: dict[str, list[str]] = {}
    for i in range(count):
        sid = f"mixed/ours-{i}"
        ours[sid] = chunks("unicode", 20, 100 + i)
        if i % 3 == 1:
            def failing(items: list[str] = ours[sid]) -> Iterator[str]:
                yield from items
                raise RuntimeError("the model failed")
            source: Any = failing
        else:
            source = lambda items=ours[sid]: iter(items)  # noqa: E731
        live = ctx.create_new_resumable_stream(sid, source)
        assert live is not None
        Reader(sid, lambda live=live: live).join(30)
    try:
        for proc in producers:
            assert {"persisted": True} in foreign_output(proc)
    finally:
        for proc in producers:
            proc.close()
    direct = server.client()
    checked = 0
    for sid, steps in theirs.items():
        logged = read_log(direct, sid, foreign=True)
        assert logged.chunks == [s for s in steps if isinstance(s, str)] and logged.state == "completed"
        reader = ctx.resume_existing_stream(sid, after=0)
        assert reader is not None
        assert_exact(f"our reader of {sid}", [(int(c), x) for c, x in reader.events()], logged.events)
        checked += len(logged.events)
    resumers = {sid: foreign(server, "resume", sid) for sid in ours}
    try:
        for sid, proc in resumers.items():
            logged = read_log(direct, sid)
            output = foreign_output(proc)
            assert [line["chunk"] for line in output if "chunk" in line] == logged.chunks == ours[sid]
            end = output[-1]["end"]
            assert end.startswith("error-" if logged.state == "failed" else "end-"), (sid, logged.state, end)
            checked += len(logged.chunks)
    finally:
        for proc in resumers.values():
            proc.close()
        direct.close()
    record(their_streams=count, our_streams=count, our_failed_streams=sum(1 for i in range(count) if i % 3 == 1),
           chunk_deliveries_checked=checked)


def test_both_libraries_create_one_id_at_once(server: ServerProcess, ctx: ResumableStreamContext, tmp_path: Path,
                                             record: Callable[..., None]) -> None:
    """One of ours and one of theirs create the same id at the same instant: one runs, both read the same."""
    trials = pick(4, 12)
    rng = random.Random(40)
    wins = {"ours": 0, "theirs": 0}
    finished_first = 0
    for trial in range(trials):
        sid = f"mixed/race-{trial}"
        gate = tmp_path / f"go-{trial}"
        steps = chunks("ascii", 15, 200 + trial)
        mine = chunks("ascii", 15, 300 + trial)
        proc = foreign(server, "create", sid, [c for chunk in steps for c in (chunk, 10)], gate=gate)
        source = Paced(mine, delay=0.01, seed=trial)
        try:
            proc.wait_for('{"ready"', timeout=30)
            gate.touch()
            time.sleep(rng.uniform(0, 0.15))  # its first calls take longer than ours: give it a head start
            stream = ctx.create_new_resumable_stream(sid, source)
            assert stream is not None
            ours = Reader("ours", lambda stream=stream: stream)
            assert ours.join(30)
            output = foreign_output(proc)
        finally:
            proc.close()
        direct = server.client()
        logged = read_log(direct, sid, foreign=True)
        direct.close()
        theirs_won = any("created" in line for line in output)
        assert theirs_won != (source.calls == 1), f"{sid}: both sources ran, or neither"
        assert logged.chunks == (steps if theirs_won else mine) and logged.state == "completed"
        assert_exact(f"{sid} ours", ours.events, logged.events)
        if {"done": True} in output:  # it came after our stream had ended: its API returns null
            finished_first += 1
        else:
            assert [line["chunk"] for line in output if "chunk" in line] == logged.chunks
        wins["theirs" if theirs_won else "ours"] += 1
    record(trials=trials, won_by_ours=wins["ours"], won_by_theirs=wins["theirs"], sources_run_per_stream=1,
           theirs_came_after_ours_had_ended=finished_first)

