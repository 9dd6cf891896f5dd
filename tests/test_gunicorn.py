"""examples/flask_chat under gunicorn (gthread and gevent workers): an answer started by one worker, resumed by another.

Gunicorn is started the documented way, ``python -m examples.flask_chat
--gunicorn --workers 2``, once pointed at the session's local S2 server and
once with no S2 configured (the command then starts a local S2 server of its
own). Every request goes on a fresh connection, so the kernel spreads them
over the workers; ``X-Worker-Pid`` says which one answered.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest
import requests

from examples.flask_chat.models import fake_answer
from resumable_stream.testing import S2Server

from .chat_helpers import AppProcess, app_env, read_answer, sse_events
from .readme_blocks import block, command
from .support import BASIN

#: Fresh connections tried before giving up on reaching the other worker.
MAX_ATTEMPTS = 60


class Chat(AppProcess):
    """The chat app under gunicorn, with two workers: one of the example README's commands, on a free port."""

    def __init__(self, env: dict[str, str], block_index: int = 0) -> None:
        readme = block("examples/flask_chat/README.md", "gunicorn, several worker processes", block_index)
        args = command(readme, "python -m examples.flask_chat", port="0", graceful_timeout="3")
        assert args[:3] == ["--gunicorn", "--workers", "2"]
        super().__init__(args, env)
        try:  # wait for both workers: until then, every request goes to the first one
            ready = self.await_output(
                lambda text: (
                    re.search(r"Listening at: (http://\S+)", text) if text.count("Booting worker") >= 2 else None
                )
            )
        except AssertionError:
            self.stop()
            raise
        self.url = ready.group(1)


@pytest.fixture
def start_chat() -> Iterator[Callable[..., Chat]]:
    started: list[Chat] = []

    def start(settings: dict[str, str], block_index: int = 0) -> Chat:
        chat = Chat(app_env(**settings, FAKE_MODEL_TOKENS_PER_SECOND="50"), block_index)
        started.append(chat)
        return chat

    yield start
    for chat in started:
        if chat.process.returncode is None:
            chat.stop()


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
        assert r.headers["X-Server-Software"].startswith("gunicorn/")  # the page labels the pid a gunicorn worker
        creator = r.headers["X-Worker-Pid"]
        head, cursor, final = read_answer(sse_events(r.iter_content(chunk_size=None)), limit=5)
    assert final is None and cursor is not None  # left mid-answer; the answer goes on in the creator's worker
    other, rest, final_event = resume_on_another_worker(chat.url, chat_id, cursor, creator)
    assert other != creator
    assert head + rest == fake_answer(message)
    assert final_event == "end"


def check_stop(chat: Chat, chat_id: str) -> None:
    """A stop, served by whichever worker, ends the answer that a worker is producing."""
    second = f"{chat.url}/api/chat/{chat_id}"
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


def test_an_answer_started_on_one_worker_is_resumed_by_another(
    s2_server: S2Server, start_chat: Callable[..., Chat], stream_name: str
) -> None:
    chat = start_chat(s2_server.env(BASIN))
    assert f"log: S2 basin '{BASIN}' at {s2_server.url}" in chat.output()
    check_cross_worker_resume(chat, stream_name)
    check_stop(chat, stream_name)
    assert chat.stop() == 0


def test_the_library_works_unchanged_under_gevents_worker(
    s2_server: S2Server, start_chat: Callable[..., Chat], stream_name: str
) -> None:
    # gunicorn's gevent worker monkey-patches threads, locks and sockets: the library's threads become
    # greenlets, its HTTP goes through gevent's sockets, and it must behave exactly as under threads.
    chat = start_chat(s2_server.env(BASIN), block_index=1)
    assert "2 gevent workers" in chat.output() or "2 gevent worker(s)" in chat.output()
    check_cross_worker_resume(chat, stream_name)
    check_stop(chat, stream_name)
    assert chat.stop() == 0


def test_one_command_runs_several_workers_on_a_local_s2_server_it_starts(
    start_chat: Callable[..., Chat], stream_name: str
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
