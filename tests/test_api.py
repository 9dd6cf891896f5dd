"""The public surface: curated exports, typing marker, logging, and no framework imports in the core."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import resumable_stream

PUBLIC = {
    "AppendAck", "AppendConditionFailed", "BadRequest", "ConfigurationError", "Conflict", "FencingTokenMismatch",
    "Log", "MemoryLog", "NotFound", "PermissionDenied", "RangeNotSatisfiable", "RateLimited", "ReadBatch", "Record",
    "ResumableStream", "ResumableStreamContext", "ResumableStreamError", "RetryPolicy", "S2Client", "S2Error",
    "SeqNumMismatch", "SequencedRecord", "StreamAbandoned", "StreamError", "StreamFailed", "StreamPosition",
    "StreamState", "StreamStatus", "TextBatch", "Unavailable",
}


def test_the_top_level_exports_exactly_the_public_names() -> None:
    exported = {name for name in vars(resumable_stream) if not name.startswith("_") and name[0].isupper()}
    assert exported == PUBLIC


def test_every_exception_derives_from_the_root() -> None:
    for name in PUBLIC:
        obj = getattr(resumable_stream, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, resumable_stream.ResumableStreamError), name


def test_the_package_is_typed() -> None:
    assert (Path(resumable_stream.__file__).parent / "py.typed").is_file()


def test_the_package_logger_has_only_a_null_handler() -> None:
    handlers = logging.getLogger("resumable_stream").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]


def test_the_core_imports_no_web_framework() -> None:
    code = (
        "import sys, resumable_stream, resumable_stream.sse, resumable_stream.testing;"
        "bad = [m for m in ('flask', 'django', 'werkzeug') if m in sys.modules];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
