"""Helpers for the tests of the examples and the README: reading SSE answers as they arrive, running commands."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .support import Event, parse_sse

ROOT = Path(__file__).resolve().parents[1]

#: The final events of an answer stream.
ENDINGS = ("end", "error", "stopped", "abandoned")


def sse_events(chunks: Iterable[bytes]) -> Iterator[Event]:
    """Parse an event-stream body event by event, as its bytes arrive (in chunks of any size)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        while b"\n\n" in buffer:
            frame, buffer = buffer.split(b"\n\n", 1)
            yield from parse_sse(frame.decode("utf-8") + "\n\n")[0]


def read_answer(events: Iterable[Event], limit: int | None = None) -> tuple[str, str | None, Event | None]:
    """Collect data events: ``(text, last data cursor, final event)``, after at most ``limit`` data events.

    The final event is None when the stream ended without one, or when ``limit`` was reached first.
    """
    text: list[str] = []
    cursor = None
    for event in events:
        if event.event in ENDINGS:
            return "".join(text), cursor, event
        text.append(event.data)
        cursor = event.id
        if len(text) == limit:
            break
    return "".join(text), cursor, None


class Command:
    """A long-running command (a server) in its own session; its output is collected as it comes."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # so that a failed shutdown can kill its children (gunicorn, S2 server) too
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def await_output(self, ready: Callable[[str], re.Match[str] | None], timeout: float = 30.0) -> re.Match[str]:
        """Wait until ``ready(output so far)`` matches; fails if the process ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = "\n".join(self.lines)
                match = ready(text)
                if match is not None:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._reader.is_alive():
                    raise AssertionError(f"{self.process.args} did not start:\n{text}")
                self._changed.wait(min(remaining, 0.5))

    def stop(self, group: bool = False) -> int:
        """SIGTERM the command (``group``: its whole session) and return its exit code; kill it if it takes too long."""
        try:
            if self.process.poll() is None:
                if group:
                    os.killpg(self.process.pid, signal.SIGTERM)
                else:
                    self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
                raise AssertionError(f"{self.process.args} did not shut down in time:\n{self.output()}") from None
        finally:
            self._reader.join(10)
            assert self.process.stdout is not None
            self.process.stdout.close()


class AppProcess(Command):
    """``python -m examples.flask_chat ARGS``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        super().__init__([sys.executable, "-m", "examples.flask_chat", *args], env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_env(**settings: str) -> dict[str, str]:
    """This environment without S2, model or fake-model settings, plus ``settings``.

    This interpreter's directory comes first on ``PATH``, as in an activated virtualenv, so that the
    README's ``python``, ``gunicorn`` and ``flask`` are the ones with the package installed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S2_", "OPENAI_", "FAKE_MODEL_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(settings)
    return env
