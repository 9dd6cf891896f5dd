"""Wire compatibility with ``@s2-dev/resumable-stream``, both ways, over the local S2 server.

Its resumer (tests/js/resumer.mjs follows its record protocol with the
official TypeScript SDK) must read what this library writes: the same chunks
and a clean end. And this library must resume streams laid out the way that
package writes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from resumable_stream import Record, ResumableStreamContext, S2Client, StreamState
from resumable_stream.testing import S2Server

from .support import BASIN
from .test_ts_sdk import JS_DIR, node


@pytest.fixture
def ctx(s2_client: S2Client) -> Iterator[ResumableStreamContext]:
    with ResumableStreamContext(s2_client, abandon_after=1.5) as context:
        yield context


def ts_resumer(server: S2Server, stream_id: str) -> tuple[list[str], str]:
    """What @s2-dev/resumable-stream's resumer reads: the chunk bodies and the terminal fence."""
    done = subprocess.run(
        [node(), "resumer.mjs", stream_id, "20000"],
        cwd=JS_DIR,
        env={**os.environ, **server.env(BASIN)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return [line["body"] for line in lines[:-1]], lines[-1]["end"]


@pytest.mark.parametrize("stream_id", ["compat-plain", "compat/with spaces?#%/ünï"])
def test_its_resumer_reads_our_completed_stream(
    s2_server: S2Server, ctx: ResumableStreamContext, stream_id: str
) -> None:
    chunks = ["Hello", ", ", "wörld ✓", "\nnew line", "x" * 5000]
    live = ctx.create_new_resumable_stream(stream_id, lambda: iter(chunks))
    assert live is not None
    assert list(live) == chunks
    bodies, end = ts_resumer(s2_server, stream_id)
    assert bodies == chunks
    assert end.startswith("end-") and not end.startswith("end-stopped-")


def test_its_resumer_skips_our_metadata_and_sees_the_end_of_failed_stopped_and_idle_streams(
    s2_server: S2Server, ctx: ResumableStreamContext
) -> None:
    def failing() -> Iterator[str]:
        yield "before "
        raise RuntimeError("upstream error")

    live = ctx.create_new_resumable_stream("compat-failed", failing)
    assert live is not None
    with pytest.raises(RuntimeError):
        list(live)
    assert ts_resumer(s2_server, "compat-failed")[0] == ["before "]
    assert ts_resumer(s2_server, "compat-failed")[1].startswith("error-")

    def idle() -> Iterator[str]:
        yield "a"
        time.sleep(1.5)  # heartbeats are written meanwhile
        yield "b"

    live = ctx.create_new_resumable_stream("compat-idle", idle)
    assert live is not None
    assert list(live) == ["a", "b"]
    bodies, end = ts_resumer(s2_server, "compat-idle")
    assert bodies == ["a", "b"] and end.startswith("end-")

    def endless() -> Iterator[str]:
        while True:
            yield "tick "
            time.sleep(0.05)

    live = ctx.create_new_resumable_stream("compat-stopped", endless)
    assert live is not None
    next(live)
    ctx.stop_stream("compat-stopped")
    seen = ["tick ", *live]
    bodies, end = ts_resumer(s2_server, "compat-stopped")
    assert bodies == seen
    assert end.startswith("end-stopped-")


def test_we_resume_a_stream_written_the_way_that_package_writes_it(
    s2_client: S2Client, ctx: ResumableStreamContext
) -> None:
    # Its creator: a fence "session-<5 base36>" conditional on an empty token, data batches fenced with it
    # and matchSeqNum from 1, then an "end-<5 base36>" fence.
    stream = "written-by-typescript"
    s2_client.append(stream, [Record.fence("session-k3j9a")], fencing_token="")
    s2_client.append(stream, [Record(b"Hi"), Record(b" there")], fencing_token="session-k3j9a", match_seq_num=1)
    s2_client.append(stream, [Record(b"!")], fencing_token="session-k3j9a", match_seq_num=3)
    s2_client.append(stream, [Record.fence("end-x81kq")], fencing_token="session-k3j9a")
    assert ctx.stream_status(stream).state is StreamState.COMPLETED
    assert ctx.has_existing_stream(stream) == "DONE"
    assert ctx.create_new_resumable_stream(stream, lambda: iter(["x"])) is None
    reader = ctx.resume_existing_stream(stream, after=0)
    assert reader is not None
    assert list(reader.events()) == [("1", "Hi"), ("2", " there"), ("3", "!")]
    rest = ctx.resume_existing_stream(stream, after=2)
    assert rest is not None
    assert list(rest) == ["!"]
