"""Every code block of README.md and examples/*/README.md that claims to run is run, as written.

Python blocks run in this process (a Flask app under Flask's test client) or
in a subprocess; shell blocks run as commands. A command that listens on a
port is given a free one in its place (``--port``, ``PORT=``, ``localhost:``),
since other test runs may hold the one written. Blocks whose first line is
``# Fragment: ...`` say they are not programs, and ``text`` blocks show output.
:data:`~tests.readme_blocks.RUN_BY` names the test of every other block, and
the first test here checks that it names them all.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from resumable_stream import S2Client

from .chat_helpers import ROOT, Command, app_env, free_port, read_answer, sse_events
from .readme_blocks import DOCUMENTS, RUN_BY, SHOWN, block, blocks, run_python
from .support import parse_sse

README = "README.md"


def test_every_block_is_run_by_a_test_or_says_what_it_is() -> None:
    runnable = {b.key for d in DOCUMENTS for b in blocks(d) if b.language not in SHOWN and not b.fragment}
    assert sorted(runnable) == sorted(RUN_BY), "a block is neither run by a test nor marked as a fragment"
    for key, module in RUN_BY.items():
        source = (ROOT / "tests" / f"{module}.py").read_text()
        assert key[1] in source, f"{module} does not run the block under {key[1]!r}"
    for d in DOCUMENTS:
        for b in blocks(d):
            assert b.language in {"python", "sh", *SHOWN}, f"{b.key}: say what the block is (python, sh or text)"


def no_s2(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def test_the_plain_script(monkeypatch: pytest.MonkeyPatch) -> None:
    no_s2(monkeypatch)
    output, _ = run_python(block(README, "A plain script"))
    assert output.splitlines() == ["the quick brown fox jumps over the lazy dog ", "StreamState.COMPLETED"]


def test_the_flask_quick_start_answers_every_message_of_a_chat(monkeypatch: pytest.MonkeyPatch) -> None:
    no_s2(monkeypatch)
    _, scope = run_python(block(README, "Quick start (Flask)"), name="app.py")
    client = scope["app"].test_client()
    answers = []
    for message in ("hello", "and again"):
        response = client.post("/api/chat/42", json={"message": message})
        assert response.status_code == 200 and response.mimetype == "text/event-stream"
        events = parse_sse(response.get_data(as_text=True))[0]
        assert events[-1].event == "end"
        answers.append((response.headers["X-Answer-Id"], "".join(e.data for e in events if e.event == "message")))
    (first_id, first), (second_id, second) = answers
    assert first == "You said: hello. That is all I know. " and second.startswith("You said: and again.")
    assert first_id.startswith("42/") and first_id != second_id
    resumed = client.get(f"/api/answers/{first_id}?from=2").get_data(as_text=True)
    assert "".join(e.data for e in parse_sse(resumed)[0] if e.event == "message") == first.split(" ", 2)[2]
    assert client.get(f"/api/answers/{first_id}").status_code == 204  # finished, no cursor
    assert client.post(f"/api/answers/{first_id}/stop").get_json() == {"state": "completed"}
    scope["ctx"].close()


def test_the_gunicorn_command_and_curl(tmp_path: Path) -> None:
    """The Deployment section's gunicorn command serves the quick start; the curl line reads an answer."""
    (tmp_path / "app.py").write_text(block(README, "Quick start (Flask)"))
    readme = (ROOT / README).read_text()
    command = re.search(r"`(gunicorn -k gthread [^`]*app:app)`", readme.replace("\n  ", " "))
    assert command is not None
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    server = Command(
        [*shlex.split(command.group(1)), "--bind", f"127.0.0.1:{port}"],
        app_env(HOME=str(home)),
        cwd=tmp_path,
    )
    try:
        server.await_output(lambda text: re.search(r"Booting worker", text))
        curl = block(README, "Quick start (Flask)", 1).replace("localhost:5000", f"127.0.0.1:{port}")
        done = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        events = parse_sse(done.stdout)[0]
        assert "".join(e.data for e in events[:-1]) == "You said: hi. That is all I know. "
        assert events[-1].event == "end"
    finally:
        assert server.stop() == 0
    assert list(home.iterdir()) == []  # no ~/.gunicorn/ control socket


def test_the_first_commands_and_the_chat_examples_command() -> None:
    """``make run`` (on a free port, as PORT= allows) serves the chat, plainly and under gunicorn."""
    first = block(README, "resumable_stream").splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # the second is what CI runs
    gunicorn = block(README, "The chat examples").strip()
    for command, ready in [(first[0].split("#")[0], "Running on"), (gunicorn, "Listening at")]:
        port = free_port()
        run = Command(
            ["bash", "-c", f"{command} PORT={port}"],
            app_env(FAKE_MODEL_TOKENS_PER_SECOND="0"),
        )
        try:
            run.await_output(lambda text, ready=ready: re.search(ready, text), timeout=240)  # the first makes the venv
            url = f"http://127.0.0.1:{port}"
            assert requests.get(url, timeout=10).status_code == 200
            with requests.post(f"{url}/api/chat/readme", json={"message": "hi"}, stream=True, timeout=30) as r:
                text, _, final = read_answer(sse_events(r.iter_content(chunk_size=None)))
            assert text.startswith("You said: \u201chi\u201d.") and final is not None and final.event == "end"
        finally:
            run.stop(group=True)


def test_the_local_server_commands_and_client(monkeypatch: pytest.MonkeyPatch) -> None:
    section = "The local S2-compatible server"
    start, *exports = block(README, section).splitlines()
    port = free_port()
    server = Command(shlex.split(start.replace("--port 8080", f"--port {port}")), app_env())
    try:
        server.await_output(lambda text: re.search(r"READY http://127\.0\.0\.1:\d+", text))
        for line in exports:
            if line.startswith("export "):
                for assignment in shlex.split(line)[1:]:
                    name, _, value = assignment.partition("=")
                    monkeypatch.setenv(name, value.replace(":8080", f":{port}"))
        output, scope = run_python(block(README, section, 1))
        assert output.strip() == "[b'hello', b'world']"
        assert isinstance(scope["client"], S2Client)
        scope["client"].close()
    finally:
        assert server.stop() == 0


def test_what_clients_see_of_a_failure() -> None:
    output, _ = run_python(block(README, "What clients see of a failure"))
    assert output == "The model is busy. Try again in a minute.\n"


@pytest.mark.parametrize("index", [0, 1])
def test_the_logging_settings_show_the_library_s_warnings(index: int) -> None:
    code = block(README, "Logging", index)
    if "LOGGING" in code:
        code += "\nimport logging.config\nlogging.config.dictConfig(LOGGING)\n"
    code += "\nfrom resumable_stream import ResumableStreamContext\nResumableStreamContext().close()\n"
    done = subprocess.run([sys.executable, "-c", code], env=app_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "S2 is not configured" in done.stderr
    silent = subprocess.run(
        [sys.executable, "-c", "from resumable_stream import ResumableStreamContext; ResumableStreamContext().close()"],
        env=app_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert silent.stderr == ""  # without them, nothing (the package logger's NullHandler)


def test_the_readme_says_how_to_see_what_each_warning_means() -> None:
    table = (ROOT / README).read_text().split("## Logging", 1)[1].split("\n## ", 1)[0]
    for logger in ("resumable_stream.context", "resumable_stream.producer", "resumable_stream.reader",
                   "resumable_stream.retries", "resumable_stream.sse"):
        assert f"`{logger}`" in table
