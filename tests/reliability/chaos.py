"""A TCP proxy that resets connections at random points: mid-request, mid-answer, mid-SSE-session.

The local server's fault injection acts on whole requests (an error instead of the answer, a drop
before it, a commit and then a drop); it cannot cut a read session in the middle of an event. This
proxy sits between the client and the server and, on a share of the connections it carries, resets
both sides (``SO_LINGER`` 0: a TCP RST) once a random number of bytes has passed in one direction.
One thread serves every connection (``selectors``), so it adds little load.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
_MAX_BUFFER = 1 << 20


@dataclass
class _Side:
    sock: socket.socket
    out: bytearray = field(default_factory=bytearray)  # bytes waiting to be sent to this side
    budget: int | None = None  # bytes this side may still receive before the connection is cut
    done: bool = False  # this side has closed its end (sent EOF)


@dataclass
class _Pair:
    client: _Side
    server: _Side

    def peer(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client


class ChaosProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``, cutting connections at random points.

    ``cut_down`` and ``cut_up`` are the shares of connections cut while the server's answer, or the
    client's request, flows; the cut comes after a random number of bytes up to ``max_bytes``. With
    ``cut_after``, every answer is cut right after those bytes instead (a reproduction).
    :meth:`calm` stops cutting (for checking the outcome). :attr:`cuts` counts them.
    """

    def __init__(self, upstream: str, *, cut_down: float = 0.0, cut_up: float = 0.0, seed: int = 0,
                 max_bytes: int = 64 * 1024, cut_after: bytes | None = None) -> None:
        host, port = upstream.split("://", 1)[-1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cut_down, self.cut_up, self.max_bytes, self.cut_after = cut_down, cut_up, max_bytes, cut_after
        self.cuts = 0
        self.connections = 0
        self._rng = random.Random(seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, _READ, None)
        self._sides: dict[socket.socket, tuple[_Pair, _Side]] = {}
        self._stop = threading.Event()
        self._calm = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calm(self) -> None:
        """Stop cutting connections (those already doomed are spared too)."""
        self._calm.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in list(self._sides):
            sock.close()
        self._selector.close()
        self._listener.close()

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop ----------------------------------------------------------

    def _budget(self, share: float) -> int | None:
        return self._rng.randint(0, self.max_bytes) if self._rng.random() < share else None

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, events in self._selector.select(timeout=0.1):
                if key.data is None:
                    self._accept()
                    continue
                pair, side = key.data
                if side.sock not in self._sides:
                    continue  # closed earlier in this round
                if events & _WRITE:
                    self._flush(pair, side)
                if events & _READ and side.sock in self._sides:
                    self._pump(pair, side)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._reset(client)
            return
        self.connections += 1
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        calm = self._calm.is_set()
        pair = _Pair(_Side(client, budget=None if calm else self._budget(self.cut_down)),
                     _Side(server, budget=None if calm else self._budget(self.cut_up)))
        for side in (pair.client, pair.server):
            self._sides[side.sock] = (pair, side)
            self._selector.register(side.sock, _READ, (pair, side))

    def _pump(self, pair: _Pair, side: _Side) -> None:
        """Read what ``side`` sent and pass it on to its peer, unless the peer's budget runs out: then cut."""
        peer = pair.peer(side)
        try:
            data = side.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._close(pair)
            return
        if self.cut_after is not None and peer is pair.client and self.cut_after in data:
            peer.budget = data.index(self.cut_after) + len(self.cut_after)
        if not data:
            side.done = True
        elif peer.budget is not None and not self._calm.is_set() and len(data) >= peer.budget:
            peer.out += data[: peer.budget]
            self._send(pair, peer)
            self.cuts += 1
            self._close(pair, reset=True)
            return
        else:
            if peer.budget is not None:
                peer.budget -= len(data)
            peer.out += data
            self._send(pair, peer)
        self._update(pair)

    def _flush(self, pair: _Pair, side: _Side) -> None:
        self._send(pair, side)
        self._update(pair)

    def _send(self, pair: _Pair, side: _Side) -> None:
        """Send what waits for ``side``, as far as its socket takes it now."""
        try:
            while side.out:
                sent = side.sock.send(side.out)
                del side.out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            side.out.clear()
            side.done = pair.peer(side).done = True

    def _update(self, pair: _Pair) -> None:
        """Close the pair once one side is done and everything it sent is delivered; else listen as needed."""
        if pair.client.sock not in self._sides:
            return
        for side in (pair.client, pair.server):
            if side.done and not pair.peer(side).out:
                self._close(pair)
                return
        for side in (pair.client, pair.server):
            peer = pair.peer(side)
            events = (_WRITE if side.out else 0) | (_READ if not side.done and len(peer.out) <= _MAX_BUFFER else 0)
            registered = self._selector.get_map().get(side.sock)
            if registered is None:
                if events:
                    self._selector.register(side.sock, events, (pair, side))
            elif not events:
                self._selector.unregister(side.sock)
            elif registered.events != events:
                self._selector.modify(side.sock, events, (pair, side))

    def _close(self, pair: _Pair, reset: bool = False) -> None:
        for side in (pair.client, pair.server):
            if self._sides.pop(side.sock, None) is None:
                continue
            if side.sock in self._selector.get_map():
                self._selector.unregister(side.sock)
            if reset:
                self._reset(side.sock)
            else:
                side.sock.close()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
