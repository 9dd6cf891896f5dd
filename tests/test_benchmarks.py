"""Smoke runs of the benchmarks, so that they keep working (their figures are read in docs/benchmarks.md, not here)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import pytest

from benchmarks import scale


@pytest.mark.parametrize("kind", ["memory", "http", "http2"])
def test_the_scale_benchmark_runs_and_every_reader_is_exact(kind: str) -> None:
    result = scale.ours(kind, 20, tokens=40, rate=20.0)
    [wave] = result["waves"]
    assert (wave["live_complete"], wave["resumers_complete"], wave["resumers_missing"]) == (20, 20, 0)
    assert wave["end_states"] == {"completed": 40} and wave["hung_threads"] == 0
    # A source thread per stream; writers and watchers shared (and over HTTP/2 a connection's I/O thread).
    assert wave["library_threads_peak"] <= 20 + 6 + (2 if kind == "http2" else 0)
    if kind == "http2":
        assert 0 < wave["tcp_connections"] <= 8  # the read sessions share a connection or two


def test_the_scale_benchmark_runs_under_gevent() -> None:
    [wave] = scale.ours("memory", 20, tokens=40, rate=20.0, gevent=True)["waves"]
    assert (wave["live_complete"], wave["resumers_complete"]) == (20, 20)
    assert wave["end_states"] == {"completed": 40}


def test_the_gc_pauses_are_measured() -> None:
    pauses = scale._GcPauses()
    try:
        gc.collect()
        first = pauses.total
        assert 0 < pauses.longest <= first
        pauses.reset_longest()
        gc.collect()
        assert pauses.total > first and 0 < pauses.longest <= pauses.total - first + 1e-9
    finally:
        pauses.close()


def test_a_stall_dump_counts_threads_that_stand_in_one_place_together(tmp_path: Path) -> None:
    release = threading.Event()

    def parked() -> None:
        release.wait(30)

    threads = [threading.Thread(target=parked) for _ in range(5)]
    for thread in threads:
        thread.start()
    try:
        scale._dump_stacks(tmp_path / "dump.txt")
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    text = (tmp_path / "dump.txt").read_text()
    first = text.split("--- ")[1]
    assert first.startswith("5 thread(s):") and "in parked" in first and "release.wait(30)" in first
