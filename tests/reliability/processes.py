"""Real processes for the suite: the local S2 server, worker processes, and their output line by line.

:class:`Proc` runs a command with its stdout read on a thread, so that a test can wait for a line with
a timeout; stderr goes to a file (a pipe nobody reads could fill and block the process).
:class:`ServerProcess` is ``python -m resumable_stream.testing.server`` in a process of its own, with
its faults driven over HTTP (``/_faults``), as a test suite of another project would drive it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

from resumable_stream import RetryPolicy, S2Client

from .results import ROOT

#: The basin the suite's servers create.
BASIN = "reliability-basin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A child process whose stdout lines can be awaited, each wait with a timeout."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, *, stdin: bool = False,
                 cwd: Path = ROOT) -> None:
        self.args = list(args)
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            self.args, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
            text=True, encoding="utf-8", errors="surrogateescape", start_new_session=True,
        )
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name=f"stdout of {self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:
                self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line, or ``None`` at end of output; :class:`AssertionError` after ``timeout``."""
        try:
            line = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            raise AssertionError(f"{self.args[:4]}: no output within {timeout:.1f} s; "
                                 f"last lines {self.lines[-5:]}, stderr: {self.stderr()[-2000:]}") from None
        if line is None:
            self._queue.put(None)  # end of output stays visible to later calls
            return None
        self.lines.append(line)
        return line

    def wait_for(self, prefix: str, timeout: float = 30) -> str:
        """The first line (from now on) that starts with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(deadline - time.monotonic())
            if line is None:
                raise AssertionError(f"{self.args[:4]} ended without {prefix!r}; last lines {self.lines[-5:]}, "
                                     f"stderr: {self.stderr()[-2000:]}")
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 60) -> list[str]:
        """Every line until the process ends its output (within ``timeout``)."""
        deadline = time.monotonic() + timeout
        out: list[str] = []
        while (line := self.next_line(deadline - time.monotonic())) is not None:
            out.append(line)
        return out

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        with contextlib.suppress(ValueError, OSError):
            self._stderr.seek(0)
            return self._stderr.read()
        return ""

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process (only to it: never to a group or by name)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def close(self, timeout: float = 10) -> None:
        """End the process (SIGTERM, then SIGKILL) and release its pipes."""
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait(timeout=timeout)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        self._reader.join(timeout)
        self._stderr.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RemoteFaults:
    """The faults of a server in another process, over its ``/_faults`` admin route."""

    def __init__(self, url: str) -> None:
        self.url = url + "/_faults"
        self._session = requests.Session()
        self.added = 0  # requests the faults added so far may affect (``times``)

    def add(self, op: str | None = None, stream: str | None = None, **fields: Any) -> None:
        response = self._session.post(self.url, json={"op": op, "stream": stream, **fields}, timeout=10)
        response.raise_for_status()
        self.added += fields.get("times") or 0

    def active(self) -> list[dict[str, Any]]:
        response = self._session.get(self.url, timeout=10)
        response.raise_for_status()
        faults: list[dict[str, Any]] = response.json()["faults"]
        return faults

    def clear(self) -> None:
        self._session.delete(self.url, timeout=10).raise_for_status()

    def close(self) -> None:
        self._session.close()


class ServerProcess:
    """The local S2-compatible server, ``python -m resumable_stream.testing.server``, in a process of its own."""

    def __init__(self, *, port: int = 0, data_dir: Path | None = None, heartbeat: float = 1.0) -> None:
        args = [sys.executable, "-m", "resumable_stream.testing.server", "--port", str(port), "--basin", BASIN,
                "--heartbeat", str(heartbeat)]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        self.proc = Proc(args)
        try:
            self.url = self.proc.wait_for("READY ", timeout=30).split()[1]
        except BaseException:
            self.proc.close()
            raise
        self.port = int(self.url.rsplit(":", 1)[1])
        self.faults = RemoteFaults(self.url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def env(self, token: str = "local", endpoint: str | None = None) -> dict[str, str]:
        """The ``S2_*`` variables of a client of this server (through ``endpoint`` if given, such as a proxy)."""
        url = endpoint or self.url
        return {"S2_ACCESS_TOKEN": token, "S2_BASIN": BASIN, "S2_ACCOUNT_ENDPOINT": url, "S2_BASIN_ENDPOINT": url}

    def client(self, endpoint: str | None = None, retry: RetryPolicy | None = None, **options: Any) -> S2Client:
        url = endpoint or self.url
        return S2Client(access_token="local", basin=BASIN, account_endpoint=url, basin_endpoint=url,
                        retry=retry or RetryPolicy(max_attempts=6, max_elapsed=10, initial_backoff=0.02,
                                                   max_backoff=0.5), **options)

    def open_fds(self) -> int:
        """How many file descriptors the server process holds (its sockets among them)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as a machine losing power would."""
        self.proc.kill()
        self.proc.wait(timeout=10)

    def close(self) -> None:
        self.faults.close()
        self.proc.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def worker(command: str, *args: str, env: dict[str, str], stdin: bool = False) -> Proc:
    """A ``python -m tests.reliability.workers COMMAND ...`` process."""
    return Proc([sys.executable, "-m", "tests.reliability.workers", command, *args], env, stdin=stdin)


def json_lines(lines: Sequence[str]) -> list[dict[str, Any]]:
    """The JSON objects among ``lines`` (workers print one per line)."""
    return [json.loads(line) for line in lines if line.startswith("{")]
