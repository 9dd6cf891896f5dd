"""A pytest plugin: a local S2-compatible server for your own test suite.

Enable it in your ``conftest.py``::

    pytest_plugins = ["resumable_stream.testing.pytest_plugin"]

(or run ``pytest -p resumable_stream.testing.pytest_plugin``). Fixtures:

``s2_server``
    An :class:`~resumable_stream.testing.S2Server` for the whole session, with
    basin ``test-basin`` (streams created on append and read), in memory.
``s2_env``
    Points ``S2Client()`` and ``ResumableStreamContext()`` built from the
    environment at that server for one test (``S2_*`` variables), and clears
    the server's injected faults after it.
``s2_client``
    An :class:`~resumable_stream.S2Client` of ``test-basin`` for one test,
    closed after it; faults are cleared after it too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .. import S2Client
from .server import S2Server

__all__ = ["s2_client", "s2_env", "s2_server"]


@pytest.fixture(scope="session")
def s2_server() -> Iterator[S2Server]:
    """A local S2-compatible server, shared by the session's tests."""
    with S2Server(basins=("test-basin",), heartbeat_interval=1.0) as server:
        yield server


@pytest.fixture
def s2_env(s2_server: S2Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S2Server]:
    """The server, with ``S2_*`` set to it for this test; faults cleared afterwards."""
    for name, value in s2_server.env().items():
        monkeypatch.setenv(name, value)
    yield s2_server
    s2_server.faults.clear()


@pytest.fixture
def s2_client(s2_server: S2Server) -> Iterator[S2Client]:
    """A client of the server's ``test-basin``; closed, and faults cleared, after the test."""
    with s2_server.client() as client:
        yield client
    s2_server.faults.clear()
