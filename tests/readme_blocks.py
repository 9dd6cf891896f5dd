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


def run_python(
    code: str, namespace: dict[str, Any] | None = None, name: str = "README.md"
) -> tuple[str, dict[str, Any]]:
    """Run ``code`` as a module would run (``__name__`` is ``name``'s stem): its stdout and its namespace."""
    scope: dict[str, Any] = {"__name__": Path(name).stem.replace(".", "_"), **(namespace or {})}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), scope)
    return out.getvalue(), scope


#: Every block that runs, and the test that runs it as written.
RUN_BY: dict[tuple[str, str, int], str] = {}
