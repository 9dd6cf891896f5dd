"""A local S2-compatible server, for tests and development.

:class:`S2Server` serves S2's REST API (JSON and SSE, s2-lite style: one
endpoint, the basin in the ``s2-basin`` header) from in-memory logs on a
background thread, with faults that can be injected at run time. Clients
reach it through the usual S2 settings, which :meth:`S2Server.env` returns.
A pytest fixture::

    @pytest.fixture
    def s2_server(monkeypatch):
        with S2Server(heartbeat_interval=0.5) as server:
            for name, value in server.env().items():
                monkeypatch.setenv(name, value)  # S2Client() now talks to it
            yield server

From a shell, ``python -m resumable_stream.testing.server --port 8080``
serves until interrupted; see :mod:`resumable_stream.testing.server`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import S2Server

__all__ = ["S2Server"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m resumable_stream.testing.server`
    # does not find the module already imported by its package.
    if name == "S2Server":
        from .server import S2Server

        return S2Server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
