"""The README's runnable examples run, and say what the README says they do."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from resumable_stream.testing import S2Server

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def block_after(heading: str, number: int = 0) -> str:
    section = README.split(heading, 1)[1]
    return re.findall(r"```python\n(.*?)```", section, re.S)[number]


def run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue()


def test_the_plain_script(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    output = run(block_after("## A plain script"))
    assert output.splitlines() == ["the quick brown fox jumps over the lazy dog ", "StreamState.COMPLETED"]


def test_pointing_the_client_at_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    with S2Server(basins=("my-basin-1",)) as server:
        for name, value in server.env("my-basin-1").items():
            monkeypatch.setenv(name, value)
        output = run(block_after("## The local S2-compatible server"))
    assert output.strip() == "[b'hello', b'world']"
