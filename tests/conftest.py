"""Shared fixtures: the logs every semantic and engine test runs against.

``log`` is either the in-process :class:`MemoryLog` or an :class:`S2Client`
talking over real HTTP to the local S2-compatible server (its read sessions
over HTTP/1.1, or over HTTP/2). Tests use fresh stream names (``stream_name``)
rather than fresh servers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import pytest

from resumable_stream import MemoryLog, S2Client
from resumable_stream.log import Log
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY

# The HTTP/2 variant's basin: tests that use fixed stream ids run once per variant on the same server.
HTTP2_BASIN = f"{BASIN}-http2"


@pytest.fixture(scope="session")
def s2_server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN, HTTP2_BASIN), heartbeat_interval=1.0) as server:
        yield server


def _client(server: S2Server, *, http2: bool = False) -> S2Client:
    basin = HTTP2_BASIN if http2 else BASIN
    env = server.env(basin)
    return S2Client(
        access_token=env["S2_ACCESS_TOKEN"],
        basin=basin,
        account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
        basin_endpoint=env["S2_BASIN_ENDPOINT"],
        retry=FAST_RETRY,
        request_timeout=5.0,
        http2=http2,
    )


@contextlib.contextmanager
def _fresh_client(server: S2Server, *, http2: bool = False) -> Iterator[S2Client]:
    """A client of the shared server, with no fault left over from another test, before or after."""
    server.faults.clear()
    client = _client(server, http2=http2)
    try:
        yield client
    finally:
        client.close()
        server.faults.clear()


@pytest.fixture
def s2_client(s2_server: S2Server) -> Iterator[S2Client]:
    with _fresh_client(s2_server) as client:
        yield client


@pytest.fixture(params=["memory", "s2", "s2-http2"])
def log(request: pytest.FixtureRequest) -> Iterator[Log]:
    """Each test using this runs three times: on the in-process log, and on S2 over HTTP, with read
    sessions over HTTP/1.1 and over HTTP/2."""
    if request.param == "memory":
        memory = MemoryLog()
        yield memory
        memory.close()
    elif request.param == "s2":
        yield request.getfixturevalue("s2_client")
    else:
        with _fresh_client(request.getfixturevalue("s2_server"), http2=True) as client:
            yield client


@pytest.fixture(params=["memory", "s2"])
def strict_log(request: pytest.FixtureRequest) -> Iterator[Log]:
    """A log whose basin creates no streams on append or read (as the README recommends)."""
    if request.param == "memory":
        yield MemoryLog(create_stream_on_append=False, create_stream_on_read=False)
        return
    env = request.getfixturevalue("s2_server").env()
    client = S2Client(
        access_token="t",
        basin="strict-basin",
        account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
        basin_endpoint=env["S2_BASIN_ENDPOINT"],
        retry=FAST_RETRY,
    )
    client.ensure_basin({"create_stream_on_append": False, "create_stream_on_read": False})
    yield client
    client.close()


@pytest.fixture
def stream_name() -> str:
    return f"stream-{uuid.uuid4().hex[:12]}"
