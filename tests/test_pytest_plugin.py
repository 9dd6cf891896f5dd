"""The pytest plugin users enable in their own suites: its fixtures work in a separate pytest run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

USER_TESTS = '''
import pytest
from resumable_stream import PermissionDenied, Record, ResumableStreamContext, S2Client

pytest_plugins = ["resumable_stream.testing.pytest_plugin"]


def test_client(s2_client):
    s2_client.append("greetings", [Record(b"hello")])
    assert [r.body for r in s2_client.read("greetings", seq_num=0).records] == [b"hello"]


def test_env(s2_env):
    with S2Client() as client:  # from the S2_* variables
        assert client.check_tail("greetings").seq_num == 1  # the same server as the test before
    with ResumableStreamContext() as ctx:
        stream = ctx.create_new_resumable_stream("answer-1", lambda: iter(["a", "b"]))
        assert "".join(stream) == "ab"


def test_faults(s2_server, s2_client):
    s2_server.faults.add("check_tail", code="permission_denied")
    with pytest.raises(PermissionDenied):
        s2_client.check_tail("greetings")


def test_faults_were_cleared(s2_client):
    assert s2_client.check_tail("greetings").seq_num == 1
'''


def test_the_plugin_serves_a_users_suite(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(textwrap.dedent(USER_TESTS))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
