"""Smoke runs of the benchmarks, so that they keep working (their figures are read in docs/benchmarks.md, not here)."""

from __future__ import annotations

import pytest

from benchmarks import scale


@pytest.mark.parametrize("kind", ["memory", "http"])
def test_the_scale_benchmark_runs_and_every_reader_is_exact(kind: str) -> None:
    result = scale.ours(kind, 20, tokens=40, rate=20.0)
    [wave] = result["waves"]
    assert (wave["live_complete"], wave["resumers_complete"], wave["resumers_missing"]) == (20, 20, 0)
    assert wave["end_states"] == {"completed": 40} and wave["hung_threads"] == 0
    assert wave["library_threads_peak"] <= 20 + 6  # a source thread per stream; writers and watchers shared


def test_the_scale_benchmark_runs_under_gevent() -> None:
    [wave] = scale.ours("memory", 20, tokens=40, rate=20.0, gevent=True)["waves"]
    assert (wave["live_complete"], wave["resumers_complete"]) == (20, 20)
    assert wave["end_states"] == {"completed": 40}
