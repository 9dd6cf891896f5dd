"""A local S2-compatible server, for tests and development.

:class:`S2Server` serves S2's API (s2-lite style: one endpoint, the basin in
the ``s2-basin`` header) over HTTP/1.1 and HTTP/2, with JSON, protobuf, SSE
and S2S bodies, from memory or a data directory, on background threads, with
faults that can be injected at run time. Clients reach it through the usual
S2 settings, which :meth:`S2Server.env` returns; :meth:`S2Server.client`
gives a configured :class:`~resumable_stream.S2Client`.

For pytest, ``pytest_plugins = ["resumable_stream.testing.pytest_plugin"]``
provides an ``s2_server`` fixture (see :mod:`resumable_stream.testing.pytest_plugin`).
From a shell, ``python -m resumable_stream.testing.server --port 8080``
serves until interrupted.

Modules: ``server`` (:class:`S2Server` and the command line), ``store`` and
``durable`` (basins and streams, in memory or SQLite), ``operations`` (one
function per S2 operation), ``sessions`` (SSE and S2S bodies), ``api``
(requests, responses, routing and faults for every transport), ``http1`` and
``http2`` (the transports), ``faults``, ``config``, ``jsonshapes``,
``proto``, ``errors`` and ``routing`` (S2's shapes and rules).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .faults import Fault, Faults
    from .server import S2Server

__all__ = ["Fault", "Faults", "S2Server"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m resumable_stream.testing.server`
    # does not find the module already imported by its package.
    if name == "S2Server":
        from .server import S2Server

        return S2Server
    if name in ("Fault", "Faults"):
        from . import faults

        return getattr(faults, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
