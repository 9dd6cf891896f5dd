"""The engine across real processes sharing the local S2 server: races, crashes, stops, shutdown, fork."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resumable_stream import ResumableStreamContext, S2Client, StreamAbandoned, StreamState
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY, run_to_end

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """A ``tests.procs`` process whose stdout lines can be awaited."""

    def __init__(self, server: S2Server, *args: str) -> None:
        env = {**os.environ, **server.env(BASIN), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.procs", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 30) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise AssertionError(f"no {prefix!r} from worker; got {self.lines}, stderr: {self.stderr()}")

    def finish(self, timeout: float = 60) -> list[str]:
        out, err = self.process.communicate(timeout=timeout)
        self.lines.extend(out.splitlines())
        assert self.process.returncode == 0, err
        return self.lines

    def stderr(self) -> str:
        if self.process.poll() is None:
            return "(still running)"
        assert self.process.stderr is not None
        return self.process.stderr.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)


@pytest.fixture
def workers(s2_server: S2Server) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def ctx(s2_client: S2Client) -> Iterator[ResumableStreamContext]:
    with ResumableStreamContext(s2_client, abandon_after=2, stop_timeout=5) as context:
        yield context


def chunks(lines: list[str]) -> list[str]:
    return [line.split()[2] for line in lines if line.startswith("CHUNK")]


def test_concurrent_creators_in_separate_processes_run_the_source_once(
    s2_server: S2Server, workers: list[Worker], stream_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "calls"
    for _ in range(4):
        workers.append(Worker(s2_server, "create", stream_name, "--chunks", "8", "--delay", "0.05",
                              "--marker", str(marker)))
    outputs = [worker.finish() for worker in workers]
    assert marker.read_text().splitlines() == ["started", "closed"]
    expected = [f"c{i}" for i in range(8)]
    for lines in outputs:
        assert chunks(lines) == expected
        assert "STATUS completed" in lines


def test_a_killed_producer_is_abandoned_within_the_bound(
    s2_server: S2Server, workers: list[Worker], ctx: ResumableStreamContext, stream_name: str
) -> None:
    worker = Worker(s2_server, "produce", stream_name, "--chunks", "1000", "--delay", "0.05")
    workers.append(worker)
    worker.wait_for("CHUNK")
    worker.wait_for("CHUNK")
    reader = ctx.resume_existing_stream(stream_name)
    assert reader is not None
    assert next(reader) == "c0 "
    os.kill(worker.process.pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(StreamAbandoned):
        for _ in reader:
            pass
    assert time.monotonic() - started < 20
    assert ctx.stream_status(stream_name).state is StreamState.ABANDONED


def test_stop_from_another_process_cancels_the_source(
    s2_server: S2Server, workers: list[Worker], ctx: ResumableStreamContext, stream_name: str, tmp_path: Path
) -> None:
    marker = tmp_path / "source"
    worker = Worker(s2_server, "produce", stream_name, "--chunks", "1000", "--delay", "0.05",
                    "--marker", str(marker))
    workers.append(worker)
    worker.wait_for("CHUNK")
    status = ctx.stop_stream(stream_name)
    assert status.state is StreamState.STOPPED
    worker.wait_for("STATUS stopped")
    deadline = time.monotonic() + 10
    while "closed" not in marker.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text().splitlines() == ["started", "closed"]
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert [c.strip() for c in reader] == chunks(worker.lines)


def test_a_disconnected_creator_process_still_completes_the_stream(
    s2_server: S2Server, workers: list[Worker], ctx: ResumableStreamContext, stream_name: str
) -> None:
    worker = Worker(s2_server, "create", stream_name, "--chunks", "20", "--delay", "0.02", "--read", "2")
    workers.append(worker)
    lines = worker.finish()
    assert "LEFT" in lines and len(chunks(lines)) == 2
    assert ctx.stream_status(stream_name).state is StreamState.COMPLETED
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    assert [c.strip() for c in reader] == [f"c{i}" for i in range(20)]


def test_graceful_shutdown_writes_out_everything_produced(
    s2_server: S2Server, workers: list[Worker], ctx: ResumableStreamContext, stream_name: str
) -> None:
    worker = Worker(s2_server, "produce", stream_name, "--chunks", "100000", "--delay", "0.01")
    workers.append(worker)
    for _ in range(5):
        worker.wait_for("CHUNK")
    worker.process.terminate()  # SIGTERM: atexit closes the context, which writes out and marks the stream
    lines = worker.finish()
    seen = chunks(lines)
    assert ctx.stream_status(stream_name).state is StreamState.ABANDONED
    reader = ctx.resume_existing_stream(stream_name, after="0")
    assert reader is not None
    persisted, error = run_to_end(reader)
    assert isinstance(error, StreamAbandoned)
    assert [c.strip() for c in persisted][: len(seen)] == seen  # nothing the live reader saw is missing


def _child_after_fork(ctx: ResumableStreamContext, stream_name: str, queue: multiprocessing.Queue[str]) -> None:
    try:
        assert ctx._producers == {}, "the parent's producers crossed the fork"
        live = ctx.create_new_resumable_stream(stream_name + "-child", lambda: iter(["from ", "child"]))
        assert live is not None
        queue.put("".join(live))
    except BaseException as exc:
        queue.put(f"error: {exc!r}")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+ warns about fork with threads
def test_a_forked_child_starts_clean(s2_server: S2Server, stream_name: str) -> None:
    client = S2Client(**_client_settings(s2_server))  # type: ignore[arg-type]
    with ResumableStreamContext(client) as ctx:
        parent_stream = ctx.create_new_resumable_stream(stream_name, lambda: (f"p{i} " for i in range(50)))
        assert parent_stream is not None
        assert next(parent_stream) == "p0 "
        fork = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[str] = fork.Queue()
        child = fork.Process(target=_child_after_fork, args=(ctx, stream_name, queue))
        child.start()
        assert queue.get(timeout=30) == "from child"
        child.join(timeout=30)
        assert child.exitcode == 0
        assert "".join(parent_stream) == "".join(f"p{i} " for i in range(1, 50))
    client.close()


def _client_settings(server: S2Server) -> dict[str, object]:
    env = server.env(BASIN)
    return {
        "access_token": env["S2_ACCESS_TOKEN"],
        "basin": BASIN,
        "account_endpoint": env["S2_ACCOUNT_ENDPOINT"],
        "basin_endpoint": env["S2_BASIN_ENDPOINT"],
        "retry": FAST_RETRY,
    }
