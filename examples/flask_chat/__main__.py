"""Start the chat: ``python -m examples.flask_chat [--host H] [--port P] [--gunicorn [--workers N] [--threads M]
[--worker-class gevent]]``.

Without ``--gunicorn`` it runs on Flask's development server, in one
process. With ``--gunicorn`` it runs gunicorn's threaded (``gthread``)
workers, or gevent's. Several processes must share a log: if S2 is configured (``S2_*``
variables) they use it; otherwise this command starts the local
S2-compatible server (``python -m resumable_stream.testing.server``) as a
child, points the workers at it, and stops it on exit.

It says at start-up which log and which model it uses.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from resumable_stream import S2Client

from .models import model_from_env

ROOT = Path(__file__).resolve().parents[2]
S2_SETTINGS = ("S2_ACCESS_TOKEN", "S2_BASIN", "S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT")
LOCAL_BASIN = "flask-chat-local"
SERVER_START_TIMEOUT = 15.0


def describe_log(environ: Mapping[str, str]) -> str:
    """Which log the app will use with ``environ``; raises ConfigurationError for a bad S2 setting."""
    if not any(environ.get(name) for name in S2_SETTINGS):
        return "the in-process log (MemoryLog): answers live in this process only"
    with S2Client(
        access_token=environ.get("S2_ACCESS_TOKEN"),
        basin=environ.get("S2_BASIN"),
        account_endpoint=environ.get("S2_ACCOUNT_ENDPOINT"),
        basin_endpoint=environ.get("S2_BASIN_ENDPOINT"),
    ) as client:
        return f"S2 basin {client.basin!r} at {client.basin_endpoint}"


@contextmanager
def local_s2_server() -> Iterator[dict[str, str]]:
    """Run the local S2-compatible server as a child process; yields the S2_* settings that reach it."""
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--port", "0", "--basin", LOCAL_BASIN]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        url = _await_ready(server)
        yield {
            "S2_ACCESS_TOKEN": "local",
            "S2_BASIN": LOCAL_BASIN,
            "S2_ACCOUNT_ENDPOINT": url,
            "S2_BASIN_ENDPOINT": url,
        }
    finally:
        _end(server, timeout=5.0)
        if server.stdout is not None:
            server.stdout.close()


def _await_ready(server: subprocess.Popen[str]) -> str:
    """The URL the server prints on its ``READY <url>`` line; raises if it does not come in time."""
    found: list[str] = []

    def read() -> None:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("READY "):
                found.append(line.split()[1])
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(SERVER_START_TIMEOUT)
    if not found:
        raise RuntimeError(f"the local S2 server did not start within {SERVER_START_TIMEOUT:g} s")
    return found[0]


def _end(process: subprocess.Popen[Any], timeout: float) -> None:
    """Ask ``process`` to stop (SIGTERM); kill it if it has not within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_gunicorn(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run gunicorn's workers until it exits or this process is asked to stop."""
    command = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", args.worker_class, "--workers", str(args.workers), "--threads", str(args.threads),
        "--bind", f"{args.host}:{args.port}", "--graceful-timeout", str(args.graceful_timeout),
        "--pythonpath", str(ROOT), *_no_control_socket(), "examples.flask_chat.app:create_app()",
    ]  # fmt: skip
    gunicorn = subprocess.Popen(command, env=dict(environ))
    try:
        return gunicorn.wait()
    finally:
        # Gunicorn finishes in-flight requests within its graceful timeout.
        _end(gunicorn, timeout=args.graceful_timeout + 5)


def _no_control_socket() -> list[str]:
    """Gunicorn 25.1+ opens a control socket at one path per user; this app does not use it, so do not claim it."""
    from gunicorn.config import KNOWN_SETTINGS

    return ["--no-control-socket"] if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.flask_chat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on; 0 picks one (default: %(default)s)")
    parser.add_argument("--gunicorn", action="store_true", help="run under gunicorn (gthread workers)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: %(default)s)")
    parser.add_argument(
        "--worker-class",
        choices=["gthread", "gevent"],
        default="gthread",
        help="gunicorn's worker: threads, or gevent's greenlets (monkey-patched) (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=8,
        help="threads per gunicorn worker; each open answer stream holds one (default: %(default)s)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=int,
        default=10,
        help="seconds gunicorn gives open requests on shutdown (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Like gunicorn, take SIGTERM as a request to shut down cleanly (the `finally` clauses stop the children).
    signal.signal(signal.SIGTERM, exit_on_signal)
    environ = dict(os.environ)
    try:
        model = model_from_env(environ)
        log = describe_log(environ)
    except ValueError as exc:  # a bad model setting, or a bad S2 setting (ConfigurationError)
        parser.error(str(exc))
    if not args.gunicorn:
        from .app import create_app

        print(f"flask_chat: Flask development server; log: {log}; model: {model.description}", flush=True)
        create_app(model=model).run(args.host, args.port, threaded=True)
        return 0
    shared = any(environ.get(name) for name in S2_SETTINGS)
    try:
        if shared or args.workers == 1:
            print(
                f"flask_chat: gunicorn, {args.workers} {args.worker_class} worker(s) x {args.threads} threads; "
                f"log: {log}; model: {model.description}",
                flush=True,
            )
            return run_gunicorn(args, environ)
        with local_s2_server() as s2_env:
            environ.update(s2_env)
            print(
                f"flask_chat: gunicorn, {args.workers} {args.worker_class} workers x {args.threads} threads; "
                "S2 is not configured, "
                f"so the workers share the local S2 server started for them; log: {describe_log(environ)}; "
                f"model: {model.description}",
                flush=True,
            )
            return run_gunicorn(args, environ)
    except KeyboardInterrupt:
        return 130


def exit_on_signal(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the clean-up that follows is bounded; let it run
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
