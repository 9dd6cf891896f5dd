"""The server's `--data-dir` storage: what it acknowledged survives a restart, `kill -9` included, whole."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from resumable_stream import FencingTokenMismatch, Record
from resumable_stream.testing import S2Server

from .support import FAST_RETRY

BASIN = "durable-basin"
TIMEOUT = (3.0, 10.0)


def test_everything_acknowledged_is_served_again_after_a_restart(tmp_path: Path) -> None:
    with S2Server(basins=(BASIN,), data_dir=tmp_path) as server, server.client(retry=FAST_RETRY) as s2:
        with server.client("configured-1") as other:
            basin_config = {"create_stream_on_append": False, "default_stream_config": {"storage_class": "express"}}
            other.ensure_basin(basin_config)
        s2.append("chat/1", [Record.fence("writer-1"), Record(b"hello", ((b"k", b"v"),), timestamp=5)])
        s2.append("chat/1", [Record(b"\xff binary"), Record.trim(1)], fencing_token="writer-1")
        before = s2.read("chat/1", seq_num=0)
        tail = s2.check_tail("chat/1")
        with requests.Session() as http:
            config = {"timestamping": {"mode": "arrival"}}
            url = f"{server.url}/v1/streams/arrival"
            http.put(url, json=config, headers={"s2-basin": BASIN}, timeout=TIMEOUT).raise_for_status()
    with S2Server(basins=(BASIN,), data_dir=tmp_path) as again, again.client(retry=FAST_RETRY) as s2:
        assert s2.check_tail("chat/1") == tail
        after = s2.read("chat/1", seq_num=0)
        assert [(r.seq_num, r.timestamp, r.body, r.headers) for r in after.records] == [
            (r.seq_num, r.timestamp, r.body, r.headers) for r in before.records
        ]
        assert [r.seq_num for r in after.records] == [1, 2, 3]  # trimmed before 1, as before the restart
        with pytest.raises(FencingTokenMismatch) as info:
            s2.append("chat/1", [Record(b"late")], fencing_token="someone-else")
        assert info.value.current_token == "writer-1"
        with requests.Session() as http:
            config = http.get(f"{again.url}/v1/basins/configured-1", timeout=TIMEOUT).json()
            assert config["create_stream_on_append"] is False
            assert config["default_stream_config"] == {"storage_class": "express"}
            stream = http.get(f"{again.url}/v1/streams/arrival", headers={"s2-basin": BASIN}, timeout=TIMEOUT).json()
            assert stream["timestamping"]["mode"] == "arrival"
            http.delete(f"{again.url}/v1/streams/chat%2F1", headers={"s2-basin": BASIN}, timeout=TIMEOUT)
    with S2Server(basins=(BASIN,), data_dir=tmp_path) as third, third.client(retry=FAST_RETRY) as s2:
        assert s2.check_tail("chat/1").seq_num == 0  # deleted, then created anew by the read


BATCH = 5


def _writer(url: str, name: str, acked: list[tuple[int, str]], stop: threading.Event) -> None:
    """Append batches of BATCH records (bodies `name-batch-i`) until the server dies; note each acknowledged batch."""
    with requests.Session() as http:
        batch = 0
        while not stop.is_set():
            records = [{"body": f"{name}-{batch}-{i}"} for i in range(BATCH)]
            try:
                response = http.post(
                    f"{url}/v1/streams/load/records",
                    json={"records": records},
                    headers={"s2-basin": BASIN},
                    timeout=TIMEOUT,
                )
            except requests.RequestException:
                return
            if response.status_code != 200:
                return
            acked.append((response.json()["start"]["seq_num"], f"{name}-{batch}"))
            batch += 1


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--data-dir", str(data_dir), "--basin", BASIN]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line.startswith("READY "), line
    return proc, line.split(" ", 1)[1]


def _end(proc: subprocess.Popen[str], how: signal.Signals) -> None:
    if proc.poll() is None:
        proc.send_signal(how)
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()


def test_kill_9_under_load_loses_nothing_acknowledged_and_leaves_no_half_batch(tmp_path: Path) -> None:
    proc, url = _start(tmp_path)
    acked: list[tuple[int, str]] = []
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(url, f"w{n}", acked, stop)) for n in range(4)]
    try:
        for writer in writers:
            writer.start()
        deadline = time.monotonic() + 10
        while len(acked) < 600 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        stop.set()
        _end(proc, signal.SIGKILL)
        for writer in writers:
            writer.join(10)
    assert len(acked) >= 600
    proc, url = _start(tmp_path)
    try:
        records: list[dict[str, Any]] = []
        with requests.Session() as http:
            while True:
                page = http.get(
                    f"{url}/v1/streams/load/records",
                    params={"seq_num": len(records), "wait": 0},
                    headers={"s2-basin": BASIN},
                    timeout=TIMEOUT,
                )
                if page.status_code == 416:
                    break
                records.extend(page.json()["records"])
    finally:
        _end(proc, signal.SIGTERM)
    bodies = [record["body"] for record in records]
    assert [record["seq_num"] for record in records] == list(range(len(records)))
    for start, batch in acked:  # every acknowledged batch, where its ack said
        assert bodies[start : start + BATCH] == [f"{batch}-{i}" for i in range(BATCH)]
    for start in range(0, len(bodies), BATCH):  # and every batch there is whole
        match = re.fullmatch(r"(w\d+-\d+)-0", bodies[start])
        assert match is not None, bodies[start : start + BATCH]
        assert bodies[start : start + BATCH] == [f"{match.group(1)}-{i}" for i in range(BATCH)]


def test_a_data_dir_serves_one_server_at_a_time(tmp_path: Path) -> None:
    with S2Server(data_dir=tmp_path):
        with pytest.raises(RuntimeError, match="in use by another local S2 server"):
            S2Server(data_dir=tmp_path).start()
        command = [sys.executable, "-m", "resumable_stream.testing.server", "--data-dir", str(tmp_path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert done.returncode == 1 and "in use by another local S2 server" in done.stderr and done.stdout == ""
    with S2Server(data_dir=tmp_path):  # free again once the first stopped
        pass
