"""Secrets: a unique access token sent down every error path must appear nowhere.

Every logger at DEBUG (the library's, urllib3's, everyone's), with their tracebacks; every exception
raised (its ``str``, ``repr``, ``args``, attributes, formatted traceback, and its causes and contexts);
every local variable of every frame of those tracebacks, as Sentry, rich tracebacks or
``pytest --showlocals`` record them (``repr`` and ``str``, into containers); exceptions of background
threads; the reprs of the client and the context. The paths: 401 and 403 answers, a refused connection,
timeouts, a producer whose appends are refused mid-stream, and tokens refused before any request
(a trailing newline, CR/LF, non-Latin-1 characters, NUL, spaces), from the argument and from
``S2_ACCESS_TOKEN``.
"""

from __future__ import annotations

import logging
import secrets
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from resumable_stream import (
    ConfigurationError,
    PermissionDenied,
    Record,
    ResumableStreamContext,
    RetryPolicy,
    S2Client,
    S2Error,
    Unavailable,
)

from .processes import BASIN, ServerProcess, free_port
from .readers import Reader, wait_until
from .scale import MARKS

pytestmark = MARKS

FAST = RetryPolicy(max_attempts=3, max_elapsed=1.0, initial_backoff=0.01, max_backoff=0.05)
HERE = str(Path(__file__).resolve())


class Witness(logging.Handler):
    """Everything a token could leak into, collected as text: log records, exceptions, frame locals.

    Values are seen as ``repr``-based tools show them (rich tracebacks, ``pytest --showlocals``), and, with
    ``item_by_item``, also as serializers that walk a mapping's items whatever its ``repr`` (Sentry's).
    """

    def __init__(self, token: str, item_by_item: bool = False) -> None:
        super().__init__(logging.DEBUG)
        self.token = token
        self.item_by_item = item_by_item
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.texts: list[tuple[str, str]] = []  # (where, text)
        self.counts = {"log records": 0, "exceptions": 0, "frames": 0, "locals": 0}
        self._levels: dict[logging.Logger, int] = {}

    # -- logging, every logger at DEBUG ---------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        self.counts["log records"] += 1
        self.texts.append((f"log {record.name}", self.format(record)))
        if record.exc_info and record.exc_info[1] is not None:
            self.exception(record.exc_info[1], f"logged by {record.name}")

    def __enter__(self) -> Witness:
        loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
        for logger in loggers:
            self._levels[logger] = logger.level
            logger.setLevel(logging.DEBUG)
        logging.getLogger().addHandler(self)
        self._excepthook = threading.excepthook
        threading.excepthook = lambda args: self.exception(args.exc_value, f"thread {args.thread}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        logging.getLogger().removeHandler(self)
        for logger, level in self._levels.items():
            logger.setLevel(level)
        threading.excepthook = self._excepthook

    # -- exceptions and their frames -------------------------------------------------------------------------

    def exception(self, exc: BaseException | None, where: str, frames: bool = True) -> None:
        seen: list[BaseException] = []
        pending = [exc]
        while pending:
            current = pending.pop()
            if current is None or any(current is s for s in seen):
                continue
            seen.append(current)
            self.counts["exceptions"] += 1
            label = f"{where}: {type(current).__name__}"
            self.value(current, label, depth=2)
            self.texts.append((f"{label} args", repr(current.args)))
            self.texts.append((f"{label} traceback", "".join(traceback.format_exception(current))))
            if frames:
                self.frames(current.__traceback__, label)
            pending += [current.__cause__, current.__context__]

    def frames(self, tb: TracebackType | None, label: str) -> None:
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename != HERE:  # the library's frames and its dependencies', not this test's
                self.counts["frames"] += 1
                for name, value in frame.f_locals.items():
                    self.counts["locals"] += 1
                    where = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)  # co_qualname: Python 3.11+
                    self.value(value, f"{label} local {name!r} of {where}", depth=3)
            tb = tb.tb_next

    def value(self, value: object, where: str, depth: int) -> None:
        """``repr`` and ``str`` of ``value``, and of what it holds (sequences, the library's objects' attributes,
        and, item by item, mappings whose ``repr`` hides their items)."""
        for show in (repr, str):
            try:
                self.texts.append((where, show(value)))
            except Exception:
                continue
        if depth <= 0:
            return
        items: list[Any] = []
        if isinstance(value, dict) and (self.item_by_item or type(value).__repr__ is dict.__repr__):
            items = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)[:200]
        elif isinstance(value, BaseException) or type(value).__module__.startswith("resumable_stream"):
            items = list(getattr(value, "__dict__", {}).values())
        for item in items:
            self.value(item, where, depth - 1)

    def leaks(self, fragment: str | None = None) -> list[str]:
        """Where the token (or ``fragment`` of it) shows."""
        needle = fragment or self.token
        return [f"{where}: ...{text[max(0, text.find(needle) - 60):text.find(needle) + 40]!r}..."
                for where, text in self.texts if needle in text]


def expect(witness: Witness, error: type[BaseException], action: Callable[[], Any], where: str) -> None:
    """Run ``action``; it must raise ``error``, which the witness then goes through."""
    try:
        action()
    except error as exc:
        witness.exception(exc, where)
        return
    raise AssertionError(f"{where}: no {error.__name__}")


@pytest.fixture
def token() -> str:
    return "rs-secret-" + secrets.token_hex(16)


def _client(url: str, token: str, **options: Any) -> S2Client:
    return S2Client(access_token=token, basin=BASIN, account_endpoint=url, basin_endpoint=url, retry=FAST, **options)


def _every_operation(witness: Witness, client: S2Client, error: type[BaseException], label: str,
                     skip: tuple[str, ...] = ()) -> int:
    """Each operation of the client and of a context on it (but ``skip``): each must raise ``error``."""
    ctx = ResumableStreamContext(client, abandon_after=2)
    operations: list[tuple[str, Callable[[], Any]]] = [
        ("append", lambda: client.append("secret-s", [Record(b"x")], match_seq_num=0)),
        ("read", lambda: client.read("secret-s", seq_num=0)),
        ("check_tail", lambda: client.check_tail("secret-s")),
        ("read_session", lambda: next(iter(client.read_session("secret-s", seq_num=0)))),
        ("ensure_stream", lambda: client.ensure_stream("secret-s")),
        ("ensure_basin", lambda: client.ensure_basin()),
        ("create", lambda: ctx.create_new_resumable_stream("secret-s", lambda: iter(["x"]))),
        ("resume", lambda: ctx.resume_existing_stream("secret-s")),
        ("status", lambda: ctx.stream_status("secret-s")),
        ("stop", lambda: ctx.stop_stream("secret-s")),
    ]
    operations = [(name, operation) for name, operation in operations if name not in skip]
    for name, operation in operations:
        expect(witness, error, operation, f"{label} {name}")
    witness.value(ctx, f"{label} repr of the context", depth=1)
    witness.value(client, f"{label} repr of the client", depth=1)
    ctx.close(timeout=2)
    return len(operations)


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_the_token_appears_nowhere_on_any_error_path(server: ServerProcess, token: str, http2: bool,
                                                     record: Callable[..., None]) -> None:
    """401, 403, refused, timed out, and a producer refused mid-stream: the token is in no text anywhere.

    With ``http2``, read sessions go over HTTP/2 (its header compression must never index the token).
    """
    paths = 0
    with Witness(token) as witness:
        for status in (401, 403):
            server.faults.add(status=status)
            client = _client(server.url, token, http2=http2)
            paths += _every_operation(witness, client, PermissionDenied, f"HTTP {status}")
            client.close()
            server.faults.clear()
        refused = _client(f"http://127.0.0.1:{free_port()}", token, connect_timeout=0.5, http2=http2)
        paths += _every_operation(witness, refused, Unavailable, "refused")
        refused.close()
        server.faults.add(latency=1.5)
        slow = _client(server.url, token, request_timeout=0.3, http2=http2)
        # A read session waits for the server's pings, not for request_timeout: it outlasts this latency.
        paths += _every_operation(witness, slow, Unavailable, "timed out", skip=("read_session",))
        slow.close()
        server.faults.clear()
        # A producer whose appends are refused once it has begun: it gives up on a background thread and logs.
        client = _client(server.url, token, http2=http2)
        with ResumableStreamContext(client, abandon_after=2) as ctx:
            gate = threading.Event()

            def source() -> Iterator[str]:
                yield "first"
                gate.wait(10)
                yield "second"

            producer = f"secret-producer-{'http2' if http2 else 'http1'}"
            live = ctx.create_new_resumable_stream(producer, source)
            assert live is not None
            creator = Reader("creator", lambda: live)
            assert wait_until(lambda: bool(creator.events), 10), "the first chunk never came"
            server.faults.add("append", producer, status=403)
            gate.set()
            assert creator.join(15)
            witness.exception(creator.error, "the creator of a refused producer")
            assert isinstance(creator.error, S2Error), creator.error
            server.faults.clear()
            resumer = Reader("resumer", lambda: ctx.resume_existing_stream(producer, after=0))
            assert resumer.join(15)
            witness.exception(resumer.error, "a resumer of a refused producer")
            paths += 2
        client.close()
    leaks = witness.leaks()
    record(error_paths=paths, token_length=len(token), **witness.counts, texts_searched=len(witness.texts),
           places_the_token_showed=len(leaks))
    assert not leaks, "\n".join(leaks[:10])


MALFORMED = {
    "a trailing newline": "{}\n",
    "CR/LF and a header": "{}\r\nX-Evil: 1",
    "a leading newline": "\n{}",
    "non-Latin-1 characters": "{}-tökén-日本",
    "NUL": "{}\x00",
    "a space": "{} x",
    "a tab": "\t{}",
}


@pytest.mark.parametrize("origin", ["argument", "S2_ACCESS_TOKEN"])
def test_a_malformed_token_is_refused_without_a_word_of_it(origin: str, token: str, monkeypatch: pytest.MonkeyPatch,
                                                           record: Callable[..., None]) -> None:
    """Malformed tokens: a ``ConfigurationError`` naming ``S2_ACCESS_TOKEN``, whose text never shows the token."""
    with Witness(token) as witness:
        for name, shape in MALFORMED.items():
            bad = shape.format(token)
            if origin != "argument" and "\x00" in bad:
                continue  # no environment variable can hold a NUL
            if origin == "argument":
                made: Callable[[], Any] = lambda bad=bad: _client("http://127.0.0.1:9", bad)  # noqa: E731
            else:
                monkeypatch.setenv("S2_ACCESS_TOKEN", bad)
                monkeypatch.setenv("S2_BASIN", BASIN)
                made = ResumableStreamContext
            try:
                made()
            except ConfigurationError as exc:
                assert exc.variable == "S2_ACCESS_TOKEN", name
                witness.exception(exc, name, frames=False)  # its frames: test_a_refused_configuration_...
                for text in (str(exc), repr(exc), repr(exc.args), "".join(traceback.format_exception_only(exc))):
                    assert token not in text, f"{name}: {text!r}"
            else:
                raise AssertionError(f"a token with {name} was accepted")
    record(origin=origin, malformed_tokens=len(MALFORMED), **witness.counts)
    leaks = witness.leaks()
    assert not leaks, "\n".join(leaks[:5])


def test_frame_locals_serialized_item_by_item_hold_no_token(server: ServerProcess, token: str) -> None:
    """As Sentry records frame locals (a mapping item by item, whatever its ``repr``): ``all_headers``, the request's
    headers with ``Authorization: Bearer <token>``, is a local of the frame that raises every HTTP error."""
    server.faults.add(status=401)
    with Witness(token, item_by_item=True) as witness:
        client = _client(server.url, token)
        expect(witness, PermissionDenied, lambda: client.check_tail("secret-s"), "HTTP 401 check_tail")
        client.close()
    leaks = witness.leaks()
    assert not leaks, "\n".join(leaks[:5])


@pytest.mark.parametrize("case", ["malformed token", "malformed S2_ACCESS_TOKEN", "valid token, invalid basin"])
def test_a_refused_configuration_leaves_the_token_in_no_frame_local(case: str, token: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What Sentry, rich tracebacks or ``pytest --showlocals`` record of a ``ConfigurationError``: no token.

    The token is held in a redacting ``Secret`` once the client is configured, but a configuration refused
    before that point leaves it in the locals of the library's own frames.
    """
    with Witness(token) as witness:
        if case == "malformed token":
            expect(witness, ConfigurationError, lambda: _client("http://127.0.0.1:9", token + "\n"), case)
        elif case == "malformed S2_ACCESS_TOKEN":
            monkeypatch.setenv("S2_ACCESS_TOKEN", token + "\n")
            monkeypatch.setenv("S2_BASIN", BASIN)
            expect(witness, ConfigurationError, ResumableStreamContext, case)
        else:
            expect(witness, ConfigurationError, lambda: S2Client(access_token=token, basin="Not A Basin!",
                                                                 account_endpoint="http://127.0.0.1:9",
                                                                 basin_endpoint="http://127.0.0.1:9"), case)
    leaks = witness.leaks()
    assert not leaks, "\n".join(leaks[:5])
