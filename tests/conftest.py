"""Shared fixtures: the two logs every semantic and engine test runs against.

``log`` is either the in-process :class:`MemoryLog` or an :class:`S2Client`
talking over real HTTP to the local S2-compatible server. Tests use fresh
stream names (``stream_name``) rather than fresh servers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from resumable_stream import MemoryLog, S2Client
from resumable_stream.log import Log
from resumable_stream.testing import S2Server

from .support import BASIN, FAST_RETRY


@pytest.fixture(scope="session")
def s2_server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN,), heartbeat_interval=1.0) as server:
        yield server


@pytest.fixture
def s2_client(s2_server: S2Server) -> Iterator[S2Client]:
    env = s2_server.env(BASIN)
    s2_server.faults.clear()
    client = S2Client(
        access_token=env["S2_ACCESS_TOKEN"],
        basin=BASIN,
        account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
        basin_endpoint=env["S2_BASIN_ENDPOINT"],
        retry=FAST_RETRY,
        request_timeout=5.0,
    )
    yield client
    client.close()
    s2_server.faults.clear()


@pytest.fixture(params=["memory", "s2"])
def log(request: pytest.FixtureRequest) -> Iterator[Log]:
    """Each test using this runs twice: on the in-process log, and on S2 over HTTP."""
    if request.param == "memory":
        memory = MemoryLog()
        yield memory
        memory.close()
    else:
        yield request.getfixturevalue("s2_client")


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
