"""Independent clients against the local S2-compatible server: S2's official TypeScript SDK, on both transports.

``tests/js/sdk_check.mjs`` drives ``@s2-dev/streamstore`` (pinned to 0.27.0)
through basins, streams, appends, reads, long-polls, read and append sessions,
fencing errors, odd names, bytes records and injected faults, once on its default transport
(in Node: S2S over HTTP/2 for sessions, fetch for the rest) and once with
``forceTransport: "fetch"`` (unary JSON and SSE). ``tests/js/resumer.mjs``
follows the record protocol of ``@s2-dev/resumable-stream`` to read what this
library's :class:`S2Client` wrote. Node.js and npm are required: ``make test``
installs them, and these tests fail (they never skip) without them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resumable_stream import Record, S2Client
from resumable_stream.testing import S2Server

JS_DIR = Path(__file__).resolve().parent / "js"
BASIN = "ts-sdk-basin"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; `make test` installs Node.js and npm", pytrace=False)
    return path


@functools.cache
def node() -> str:
    """The node executable, with the SDK installed from the lock file (``npm ci``) when it is missing.

    Called from each test, so a missing tool fails the tests (rather than erroring their set-up).
    """
    executable = _tool("node")
    npm = _tool("npm")
    if not (JS_DIR / "node_modules" / "@s2-dev" / "streamstore" / "package.json").is_file():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{done.stdout}\n{done.stderr}", pytrace=False)
    return executable


@pytest.fixture(scope="module")
def server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN,), heartbeat_interval=0.5) as s:
        yield s


def run_node(server: S2Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **server.env()}
    return subprocess.run([node(), *args], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=timeout)


TRANSPORTS = ["default", "fetch"]


def served_over_http2(caplog: pytest.LogCaptureFixture, content_type: str) -> bool:
    return any(
        r.name.endswith("http2") and f"({content_type})" in r.getMessage() and '" 200 ' in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_official_typescript_sdk_works_against_the_server(
    server: S2Server, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    basin = f"sdk-check-{transport}"
    caplog.set_level(logging.DEBUG, logger="resumable_stream.testing")
    done = run_node(server, "sdk_check.mjs", basin, transport)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    # Sessions went over S2S on HTTP/2 exactly when the SDK chose its default transport.
    assert served_over_http2(caplog, "s2s/proto") == (transport == "default")

    assert (result["ensureBasin"], result["ensureBasinAgain"]) == ("created", "noop")
    assert result["basinConfig"] == {
        "createStreamOnAppend": True,
        "createStreamOnRead": True,
        "defaultStreamConfig": None,
        "streamCipher": None,
    }
    assert result["createBasinTwice"]["status"] == 409
    assert result["createBasinTwice"]["code"] == "resource_already_exists"
    assert result["basinNames"] == [basin]
    assert (result["createdStream"], result["ensureStream"], result["ensureStreamAgain"]) == (
        "created",
        "created",
        "noop",
    )
    assert result["streamConfig"]["storageClass"] == "express"
    assert result["streamConfig"]["retentionPolicy"] == {"ageSecs": 604800}
    assert result["streamNames"] == ["created", "sdk"]

    assert result["appendAck"] == {"start": 0, "end": 2, "tail": 2}
    assert result["sessionAcks"] == [2, 3]
    assert result["tail"] == 4
    assert result["read"] == [
        {"seqNum": 0, "body": "one", "headers": [["kind", "text"]]},
        {"seqNum": 1, "body": "two", "headers": []},
        {"seqNum": 2, "body": "three", "headers": []},
        {"seqNum": 3, "body": "four", "headers": []},
    ]
    beyond = result["readBeyondTail"]
    assert (beyond["isRangeNotSatisfiable"], beyond["status"], beyond["tail"]) == (True, 416, 4)
    assert [(r["seqNum"], r["body"]) for r in result["session"]] == list(
        enumerate(["one", "two", "three", "four", "five", "six"])
    )

    for wrong_token in (result["wrongToken"], result["sessionWrongToken"]):
        assert wrong_token["name"] == "FencingTokenMismatchError" and wrong_token["isFencingTokenMismatch"]
        assert (wrong_token["status"], wrong_token["expectedFencingToken"]) == (412, "writer-1")
    wrong_seq = result["wrongSeqNum"]
    assert wrong_seq["name"] == "SeqNumMismatchError" and wrong_seq["isSeqNumMismatch"]
    assert (wrong_seq["status"], wrong_seq["expectedSeqNum"]) == (412, 7)
    assert result["fencedAppend"] == 7
    assert result["longPoll"] == [{"seqNum": 8, "body": "woken"}]
    assert result["oddName"] == ["odd"]
    assert result["binaryRead"] == [{"body": [0, 255, 1], "headers": [[[107], [2, 0]]]}]  # protobuf on fetch
    assert result["binarySession"] == [[0, 255, 1]]

    assert (result["appendSessionFault"]["status"], result["appendSessionFault"]["code"]) == (503, "unavailable")
    assert result["afterFault"] == 0  # the faulted append was answered, not handled
    assert (result["readSessionFault"]["status"], result["readSessionFault"]["code"]) == (500, "other")

    assert result["reconfiguredBasin"]["createStreamOnRead"] is False
    assert (result["missingStream"]["status"], result["missingStream"]["code"]) == (404, "stream_not_found")
    log = server.basin_log(basin)
    assert log.check_tail("sdk").seq_num == 9
    assert [r.body for r in log.read("chat/42 ü%?#", seq_num=0).records] == [b"odd"]


def lines(output: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in output.splitlines()]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("terminal", ["end-a1b2c", "error-x9y8z"])
def test_the_resumer_reads_what_s2client_wrote(server: S2Server, terminal: str, transport: str) -> None:
    node()  # before writing anything
    stream = f"chat/{terminal}/{transport}"
    env = server.env()
    with S2Client(
        access_token=env["S2_ACCESS_TOKEN"],
        basin=env["S2_BASIN"],
        account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
        basin_endpoint=env["S2_BASIN_ENDPOINT"],
    ) as s2:
        s2.append(stream, [Record.fence("session-1"), Record(b"Hello, "), Record(b"")], fencing_token="")

        def finish() -> None:  # lands while the resumer is following the stream
            time.sleep(0.5)
            s2.append(stream, [Record("wörld".encode()), Record.trim(1)], fencing_token="session-1")
            s2.append(stream, [Record.fence(terminal), Record(b"after the end")], fencing_token="session-1")

        writer = threading.Thread(target=finish)
        writer.start()
        try:
            done = run_node(server, "resumer.mjs", stream, "15000", transport)
        finally:
            writer.join(10)
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"body": "Hello, "}, {"body": "wörld"}, {"end": terminal}]


def test_the_resumer_gives_up_without_a_terminal_fence(server: S2Server) -> None:
    node()
    started = time.monotonic()
    done = run_node(server, "resumer.mjs", "chat/abandoned", "1000")
    assert done.returncode == 3 and "no terminal fence" in done.stderr
    assert time.monotonic() - started < 10
