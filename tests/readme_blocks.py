"""The code blocks of README.md and examples/*/README.md, for the tests that run them as written.

A block is named by its file, the heading of its section and its index in that
section. A ``python`` or ``sh`` block whose first line is ``# Fragment: ...``
tells readers it is not a program; ``text`` blocks show output or formats.
Every other block must be run by a test: :data:`RUN_BY` lists them, and
``test_readme.py`` checks that the list and the documents agree.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*/README.md"))]
#: Languages of blocks that show something rather than claim to run.
SHOWN = {"text"}
_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.S | re.M)
_HEADING = re.compile(r"^#{1,4} (.+)$", re.M)


@dataclass(frozen=True)
class Block:
    document: str
    heading: str
    index: int
    language: str
    code: str

    @property
    def key(self) -> tuple[str, str, int]:
        return self.document, self.heading, self.index

    @property
    def fragment(self) -> bool:
        return self.code.lstrip().startswith("# Fragment:")


def blocks(document: str) -> list[Block]:
    """The fenced blocks of ``document`` (a path relative to the repository root), in order."""
    text = (ROOT / document).read_text()
    fences = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
    headings = [
        (m.start(), m.group(1).strip())
        for m in _HEADING.finditer(text)
        if not any(start <= m.start() < end for start, end in fences)  # a shell comment is no heading
    ]
    found: list[Block] = []
    counts: dict[str, int] = {}
    for match in _FENCE.finditer(text):
        heading = next((h for start, h in reversed(headings) if start < match.start()), "")
        index = counts.get(heading, 0)
        counts[heading] = index + 1
        found.append(Block(document, heading, index, match.group(1), match.group(2)))
    return found


def block(document: str, heading: str, index: int = 0) -> str:
    """The code of one block; fails clearly when the document no longer has it."""
    for candidate in blocks(document):
        if candidate.key == (document, heading, index):
            assert not candidate.fragment, f"{candidate.key} is marked as a fragment, but a test runs it"
            return candidate.code
    raise AssertionError(f"{document} has no block {index} under the heading {heading!r}")


def command(code: str, program: str, **replace: str) -> list[str]:
    """The arguments after ``program`` in the one command of a shell block (comments dropped), with ``replace``.

    ``replace`` maps an option to the value the test needs instead (``port="0"`` for ``--port 8000``).
    """
    lines = [line.split("#", 1)[0].strip() for line in code.splitlines()]
    [line] = [line for line in lines if line]
    assert line.startswith(program + " "), f"expected a {program!r} command, not {line!r}"
    args = shlex.split(line[len(program) :])
    for option, value in replace.items():
        flag = "--" + option.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def run_python(
    code: str, namespace: dict[str, Any] | None = None, name: str = "README.md"
) -> tuple[str, dict[str, Any]]:
    """Run ``code`` as a module would run (``__name__`` is ``name``'s stem): its stdout and its namespace."""
    scope: dict[str, Any] = {"__name__": Path(name).stem.replace(".", "_"), **(namespace or {})}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), scope)
    return out.getvalue(), scope


_FLASK_CHAT = "examples/flask_chat/README.md"
#: Every block that runs, and the test module that runs it as written.
RUN_BY: dict[tuple[str, str, int], str] = {
    ("README.md", "resumable_stream", 0): "test_readme",
    ("README.md", "Install", 0): "test_install",
    ("README.md", "A plain script", 0): "test_readme",
    ("README.md", "Quick start (Flask)", 0): "test_readme",
    ("README.md", "Quick start (Flask)", 1): "test_readme",
    ("README.md", "Vercel AI SDK `useChat`", 0): "test_ai_sdk",
    ("README.md", "Django", 0): "test_django",
    ("README.md", "What clients see of a failure", 0): "test_readme",
    ("README.md", "Logging", 0): "test_readme",
    ("README.md", "Logging", 1): "test_readme",
    ("README.md", "The local S2-compatible server", 0): "test_readme",
    ("README.md", "The local S2-compatible server", 1): "test_readme",
    ("README.md", "The chat examples", 0): "test_readme",
    (_FLASK_CHAT, "Development server (one process)", 0): "test_chat_app",
    (_FLASK_CHAT, "gunicorn, several worker processes", 0): "test_gunicorn",
    (_FLASK_CHAT, "gunicorn, several worker processes", 1): "test_gunicorn",
    ("examples/ai_sdk_chat/README.md", "Running it", 0): "test_ai_sdk_chat",
}
