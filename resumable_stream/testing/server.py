"""A local S2-compatible server: the project's test double and development server.

It speaks S2's API the way s2-lite (S2's open-source server) does, on one
endpoint: ``/v1/basins*`` for basins, ``/v1/streams*`` with the basin in the
``s2-basin`` header. Over HTTP/1.1 and HTTP/2 (cleartext, prior knowledge),
with JSON or protobuf bodies, SSE and S2S sessions, so S2's official SDKs
work against it on their default transports. Any ``Authorization`` is accepted.

Run it from a shell::

    python -m resumable_stream.testing.server --port 8080 --basin my-basin-1 [--data-dir DIR]

It prints ``READY http://127.0.0.1:8080`` once it listens, and serves until
SIGINT or SIGTERM. With ``--data-dir``, everything it acknowledges is kept
there (SQLite) and served again after a restart.

Or use :class:`S2Server` in-process. Its :attr:`S2Server.faults` injects
latency, error responses and dropped connections per operation and stream;
a server in another process takes the same faults as JSON on ``POST
/_faults`` (``GET`` lists them, ``DELETE`` clears them).

Deliberate differences from s2-lite: no compressed responses, encryption,
retention or delete-on-empty; access tokens, metrics and locations answer
``501 not_implemented`` (as in lite); deleting a stream or basin removes it
at once instead of leaving it pending deletion; the ``s2-stream-config``
header is ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

from .. import S2Client
from . import http1, http2
from .api import Api
from .config import BasinConfig
from .durable import Journal
from .faults import Faults
from .jsonshapes import BASIN_NAME_RULE, check_basin_name
from .operations import OPERATIONS
from .store import BasinLog, Store

__all__ = ["S2Server", "main"]

logger = logging.getLogger(__name__)

#: The transports, asked in turn whether a connection's first line is theirs.
TRANSPORTS: tuple[ModuleType, ...] = (http2, http1)


class S2Server:
    """A local S2-compatible server on background threads.

    Thread-safe: each connection is served on a thread of its own (and each
    HTTP/2 request too), and every method may be called from any thread.
    :attr:`faults` may be changed while requests are in flight. Use it as a
    context manager, or call :meth:`start` and :meth:`stop`; a stopped server
    cannot be restarted (a new one on the same ``data_dir`` serves the same data).

    :param host: address to listen on.
    :param port: port to listen on; 0 picks a free one (see :attr:`url`).
    :param basins: basins to create up front (unless they exist in ``data_dir``), with
        ``create_stream_on_append`` and ``create_stream_on_read`` enabled. The first is the default of :meth:`env`.
    :param heartbeat_interval: seconds between heartbeats (``ping`` events) of an idle read session.
    :param data_dir: keep every basin, stream and acknowledged record in this directory (SQLite), and
        load what it holds; ``None`` keeps everything in memory.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        basins: Sequence[str] = ("test-basin",),
        heartbeat_interval: float = 10.0,
        data_dir: str | Path | None = None,
    ) -> None:
        if isinstance(basins, str):
            raise TypeError("basins must be a sequence of names, not a string")
        for name in basins:
            try:
                check_basin_name(name, "invalid")
            except Exception:
                raise ValueError(f"invalid basin name {name!r}: {BASIN_NAME_RULE}") from None
        self.host = host
        self.heartbeat_interval = heartbeat_interval
        self.data_dir = None if data_dir is None else Path(data_dir)
        #: Injected failures; see :class:`~resumable_stream.testing.faults.Faults`.
        self.faults = Faults()
        self._port = port
        self._default_basin = basins[0] if basins else None
        self._basins = tuple(basins)
        self._store: Store | None = None
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._track = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()
        self._stopped = False

    def __repr__(self) -> str:
        state = "running" if self._listener is not None else "stopped" if self._stopped else "not started"
        return f"<S2Server {state} {self.host}:{self._port}>"

    @property
    def port(self) -> int:
        """The port the server listens on (the real one once started)."""
        return self._port

    @property
    def open_connections(self) -> int:
        """Client connections open now."""
        with self._track:
            return len(self._sockets)

    @property
    def url(self) -> str:
        """The server's base URL, such as ``http://127.0.0.1:8080``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    def env(self, basin: str | None = None) -> dict[str, str]:
        """Environment variables that point an S2 client (this library's, or an official SDK) at this server."""
        name = basin or self._default_basin
        if name is None:
            raise ValueError("the server has no basins; name one")
        return {
            "S2_ACCESS_TOKEN": "local",
            "S2_BASIN": name,
            "S2_ACCOUNT_ENDPOINT": self.url,
            "S2_BASIN_ENDPOINT": self.url,
        }

    def client(self, basin: str | None = None, **options: Any) -> S2Client:
        """An :class:`~resumable_stream.S2Client` for ``basin`` (default: the first) of this server.

        ``options`` go to :class:`~resumable_stream.S2Client` (``retry``, ``request_timeout``...).
        The caller closes it.
        """
        env = self.env(basin)
        return S2Client(
            access_token=env["S2_ACCESS_TOKEN"],
            basin=env["S2_BASIN"],
            account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
            basin_endpoint=env["S2_BASIN_ENDPOINT"],
            **options,
        )

    def basin_log(self, name: str) -> BasinLog:
        """Basin ``name`` as an in-process log, to look behind the API; :class:`KeyError` if there is no such basin."""
        store = self._require_store()
        basin = store.basin_or_none(name)
        if basin is None:
            raise KeyError(name)
        return BasinLog(store, basin)

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the server is not running")
        return self._store

    def start(self) -> S2Server:
        """Bind and serve on a daemon thread; returns once the server accepts connections."""
        if self._listener is not None or self._stopped:
            raise RuntimeError("the server is already running or was stopped")
        family = socket.getaddrinfo(self.host, self._port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.create_server((self.host, self._port), family=family, backlog=1024)
        try:
            journal = None if self.data_dir is None else Journal(self.data_dir)
        except BaseException:
            listener.close()
            raise
        store = Store(heartbeat_interval=self.heartbeat_interval, journal=journal)
        for name in self._basins:
            if store.basin_or_none(name) is None:
                store.ensure_basin(name, BasinConfig(create_stream_on_append=True, create_stream_on_read=True))
        self._port = listener.getsockname()[1]
        self._store, self._listener = store, listener
        self._api = Api(store, self.faults, OPERATIONS, self._stopping)
        self._spawn(self._accept_loop, f"s2-local :{self._port}", listener)
        logger.debug("S2-compatible server listening on %s", self.url)
        return self

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._track:
            self._threads.add(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    sock, address = listener.accept()
                except OSError:
                    return  # the listener was closed
                with self._track:
                    if self._stopping.is_set():
                        sock.close()
                        return
                    self._sockets.add(sock)
                self._spawn(self._serve, f"s2-local {address}", sock)
        finally:
            with self._track:
                self._threads.discard(threading.current_thread())

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with sock.makefile("rb", buffering=65536) as rfile:
                first = rfile.readline(65536)
                if first:
                    transport = next(t for t in TRANSPORTS if t.accepts(first))
                    transport.serve(sock, rfile, first, self._api, self._stopping)
        except OSError as exc:
            logger.debug("connection ended: %r", exc)
        except Exception:
            logger.exception("unexpected error serving a connection")
        finally:
            with self._track:
                self._sockets.discard(sock)
                self._threads.discard(threading.current_thread())
            sock.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: end long-polls and sessions (they answer 503 or end their body), close every connection.

        Waits up to ``timeout`` seconds for the connection threads to finish.
        """
        listener, store = self._listener, self._store
        if listener is None or store is None:
            return
        self._listener = None
        self._stopped = True
        deadline = time.monotonic() + timeout
        self._stopping.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        store.close()
        # Wake the readers (idle keep-alive connections see end-of-file); responses being written still go out.
        self._shutdown_sockets(socket.SHUT_RD)
        self._join(min(deadline, time.monotonic() + 0.5))
        self._shutdown_sockets(socket.SHUT_RDWR)
        self._join(deadline)
        logger.debug("S2-compatible server on port %d stopped", self._port)

    def _shutdown_sockets(self, how: int) -> None:
        with self._track:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(how)

    def _join(self, deadline: float) -> None:
        with self._track:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0))

    def __enter__(self) -> S2Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGINT or SIGTERM; print ``READY <url>`` once it listens."""
    parser = argparse.ArgumentParser(
        prog="python -m resumable_stream.testing.server",
        description="A local S2-compatible server (s2-lite style: one endpoint, basin in the `s2-basin` header).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default: 0)")
    parser.add_argument(
        "--basin",
        action="append",
        metavar="NAME",
        help="create this basin, with streams created on append and read (repeatable; default: resumable-stream-dev)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep everything acknowledged in DIR (SQLite) and serve it again after a restart (default: in memory)",
    )
    parser.add_argument(
        "--heartbeat", type=float, default=10.0, metavar="SECONDS", help="ping interval of idle read sessions"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(message)s")
        logging.getLogger(__package__).setLevel(logging.DEBUG)
    try:
        basins = tuple(args.basin or ["resumable-stream-dev"])
        server = S2Server(
            args.host, args.port, basins=basins, heartbeat_interval=args.heartbeat, data_dir=args.data_dir
        )
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:  # the port is taken, the data directory in use...
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"READY {server.url}", flush=True)
    stop.wait()
    server.stop(timeout=0.9)
    return 0


if __name__ == "__main__":
    sys.exit(main())
