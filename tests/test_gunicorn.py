"""examples/flask_chat under gunicorn's gthread workers: an answer started by one worker is resumed by another.

Gunicorn is started the documented way, ``python -m examples.flask_chat
--gunicorn --workers 2``, once pointed at the session's local S2 server and
once with no S2 configured (the command then starts a local S2 server of its
own). Every request goes on a fresh connection, so the kernel spreads them
over the workers; ``X-Worker-Pid`` says which one answered.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from examples.flask_chat.models import fake_answer
from resumable_stream.testing import S2Server

from .chat_helpers import read_answer, sse_events
from .support import BASIN

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 30.0
#: Fresh connections tried before giving up on reaching the other worker.
MAX_ATTEMPTS = 60


class Chat:
    """The chat app under gunicorn, started by its entry point; its output is collected as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "examples.flask_chat", "--gunicorn", "--workers", "2", "--threads", "4",
                   "--port", "0", "--graceful-timeout", "3"]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,  # so that teardown can kill gunicorn and the local S2 server with it
        )  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._await_start()

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

    def _await_start(self) -> str:
        """The URL gunicorn listens at, once both workers have booted."""
        deadline = time.monotonic() + START_TIMEOUT
        with self._changed:
            while True:
                text = "\n".join(self.lines)
                listening = re.search(r"Listening at: (http://\S+)", text)
                if listening and text.count("Booting worker with pid") >= 2:
                    return listening.group(1)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"the chat app did not start:\n{text}")
                self._changed.wait(min(remaining, 0.5))

    def stop(self) -> int:
        """SIGTERM the entry point (it shuts gunicorn and its S2 server down); kill the lot if that hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"the chat app did not shut down in time:\n{self.output()}") from None
        finally:
            self._reader.join(10)
            assert self.process.stdout is not None
            self.process.stdout.close()
        return code


@pytest.fixture
def start_chat() -> Iterator[Callable[[dict[str, str]], Chat]]:
    started: list[Chat] = []

    def start(settings: dict[str, str]) -> Chat:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("S2_", "OPENAI_", "FAKE_MODEL_"))}
        env.update(settings, FAKE_MODEL_TOKENS_PER_SECOND="50")
        chat = Chat(env)
        started.append(chat)
        return chat

    yield start
    for chat in started:
        try:
            chat.stop()
        finally:
            if chat.process.poll() is None:  # pragma: no cover - stop() failed half-way
                os.killpg(chat.process.pid, signal.SIGKILL)
                chat.process.wait(10)


def resume_on_another_worker(url: str, chat_id: str, cursor: str, other_than: str) -> tuple[str, str, str | None]:
    """Resume after ``cursor`` on fresh connections until a worker other than ``other_than`` serves it.

    Returns ``(worker pid, rest of the text, final event name)``.
    """
    for _ in range(MAX_ATTEMPTS):
        with requests.get(f"{url}/api/chat/{chat_id}/stream", params={"from": cursor}, stream=True, timeout=30) as r:
            assert r.status_code == 200
            pid = r.headers["X-Worker-Pid"]
            if pid == other_than:
                continue
            rest, _, final = read_answer(sse_events(r.iter_content(chunk_size=None)))
            return pid, rest, final.event if final else None
    raise AssertionError(f"{MAX_ATTEMPTS} fresh connections all reached worker {other_than}")


def check_cross_worker_resume(chat: Chat, chat_id: str) -> None:
    message = f"hello from {chat_id}"
    with requests.post(f"{chat.url}/api/chat/{chat_id}", json={"message": message}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        creator = r.headers["X-Worker-Pid"]
        head, cursor, final = read_answer(sse_events(r.iter_content(chunk_size=None)), limit=5)
    assert final is None and cursor is not None  # left mid-answer; the answer goes on in the creator's worker
    other, rest, final_event = resume_on_another_worker(chat.url, chat_id, cursor, creator)
    assert other != creator
    assert head + rest == fake_answer(message)
    assert final_event == "end"


def test_an_answer_started_on_one_worker_is_resumed_by_another(
    s2_server: S2Server, start_chat: Callable[[dict[str, str]], Chat], stream_name: str
) -> None:
    chat = start_chat(s2_server.env(BASIN))
    assert f"log: S2 basin '{BASIN}' at {s2_server.url}" in chat.output()
    check_cross_worker_resume(chat, stream_name)
    # A stop, served by whichever worker, ends the answer that a worker is producing.
    second = f"{chat.url}/api/chat/{stream_name}"
    with requests.post(second, json={"message": "stop me"}, stream=True, timeout=30) as r:
        events = sse_events(r.iter_content(chunk_size=None))
        head, _, _ = read_answer(events, limit=2)
        stopped = requests.post(f"{second}/stop", json={"answer": 1}, timeout=30)
        assert stopped.json() == {"answer": 1, "state": "stopped"}
        rest, _, final = read_answer(events)
    assert final is not None and final.event == "stopped"
    assert fake_answer("stop me").startswith(head + rest)
    history = requests.get(second, timeout=30).json()
    assert [m["answer"]["state"] for m in history["messages"]] == ["completed", "stopped"]
    assert chat.stop() == 0


def test_one_command_runs_several_workers_on_a_local_s2_server_it_starts(
    start_chat: Callable[[dict[str, str]], Chat], stream_name: str
) -> None:
    chat = start_chat({})
    output = chat.output()
    assert "S2 is not configured, so the workers share the local S2 server started for them" in output
    endpoint = re.search(r"log: S2 basin 'flask-chat-local' at (http://\S+)/v1;", output)
    assert endpoint is not None, output
    check_cross_worker_resume(chat, stream_name)
    assert chat.stop() == 0
    # The local S2 server went away with the app.
    address = urlsplit(endpoint.group(1))
    with pytest.raises(ConnectionRefusedError), socket.create_connection((address.hostname, address.port), timeout=5):
        pass
