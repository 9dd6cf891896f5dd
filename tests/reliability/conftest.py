"""Fixtures of the reliability suite: the local S2 server in its own process, and the results file.

Every test here is marked ``reliability`` (``pytest -m reliability`` runs them alone). Its size comes
from ``RELIABILITY_SIZE`` (``bounded`` by default, ``full`` for ``make reliability``; see ``scale.py``).
A test records its figures with the ``record`` fixture; its outcome and duration are added here, and
the results file (``results.py``) is rewritten after each test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from .observe import Tally
from .processes import ServerProcess
from .results import Results, results_path
from .scale import SIZE, pick

settings.register_profile(
    "reliability",
    max_examples=pick(12, 150),
    deadline=None,
    database=None,  # nothing written into the work tree; failures print their reproduction
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("reliability")

_results: Results | None = None


def results() -> Results:
    global _results
    if _results is None:
        _results = Results(results_path())
    return _results


def _key(item: pytest.Item) -> str:
    return f"{item.module.__name__.rsplit('.', 1)[-1]}::{item.name}" if isinstance(item, pytest.Function) else item.name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    run = results()
    module = item.module if isinstance(item, pytest.Function) else None
    if module is not None:
        run.module(module.__name__.rsplit(".", 1)[-1], module.__doc__)
    entry = run.test(_key(item))
    entry["module"] = module.__name__.rsplit(".", 1)[-1] if module is not None else ""
    entry["doc"] = getattr(getattr(item, "obj", None), "__doc__", None) or ""
    if hasattr(report, "wasxfail"):
        entry["outcome"] = "xfailed" if report.skipped else "xpassed"
        entry["xfail_reason"] = report.wasxfail
    else:
        entry["outcome"] = report.outcome
    entry["seconds"] = round(call.duration, 1)
    if report.failed and report.longreprtext:
        entry["failure"] = report.longreprtext.strip().splitlines()[-1][:500]
    run.write()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record(name=value, ...)``: figures of this test for the results file (numbers, text, small tables)."""
    figures = results().test(_key(request.node))["figures"]

    def record(**values: Any) -> None:
        figures.update(values)

    return record


@pytest.fixture(scope="session")
def rel_server() -> Iterator[ServerProcess]:
    """The suite's local S2 server: a process of its own, so that its load is not the tests' process's."""
    with ServerProcess() as server:
        yield server


@pytest.fixture
def server(rel_server: ServerProcess) -> Iterator[ServerProcess]:
    """The suite's server, with no fault injected before or after the test."""
    assert rel_server.proc.process.poll() is None, f"the server died: {rel_server.proc.stderr()[-2000:]}"
    rel_server.faults.clear()
    yield rel_server
    rel_server.faults.clear()


@pytest.fixture
def tally() -> Iterator[Tally]:
    """What the library logged during the test, counted."""
    handler = Tally()
    logger = logging.getLogger("resumable_stream")
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)


def pytest_report_header() -> str:
    return f"reliability suite: RELIABILITY_SIZE={SIZE}, results in {results_path()}"
