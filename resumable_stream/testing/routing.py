"""S2's paths: which operation (its OpenAPI operationId) a method and path name."""

from __future__ import annotations

from .errors import ApiError

__all__ = ["NOT_IMPLEMENTED", "OPERATIONS", "STREAM_SCOPED", "route"]

# Route name -> method -> OpenAPI operationId.
_ROUTES: dict[str, dict[str, str]] = {
    "basins": {"GET": "list_basins", "POST": "create_basin"},
    "basin": {"GET": "get_basin_config", "PUT": "ensure_basin", "PATCH": "reconfigure_basin", "DELETE": "delete_basin"},
    "streams": {"GET": "list_streams", "POST": "create_stream"},
    "stream": {
        "GET": "get_stream_config",
        "PUT": "ensure_stream",
        "PATCH": "reconfigure_stream",
        "DELETE": "delete_stream",
    },
    "records": {"GET": "read", "POST": "append"},
    "tail": {"GET": "check_tail"},
    "access_tokens": {"GET": "list_access_tokens", "POST": "issue_access_token"},
    "access_token": {"DELETE": "revoke_access_token"},
    "locations": {"GET": "list_locations"},
    "default_location": {"GET": "get_default_location", "PUT": "set_default_location"},
    "account_metrics": {"GET": "account_metrics"},
    "basin_metrics": {"GET": "basin_metrics"},
    "stream_metrics": {"GET": "stream_metrics"},
}
#: Every operationId the server knows; faults name these.
OPERATIONS = frozenset(op for methods in _ROUTES.values() for op in methods.values())
#: What s2-lite answers with ``501 not_implemented``, and so does this server.
NOT_IMPLEMENTED = frozenset(
    op
    for route in (
        "access_tokens",
        "access_token",
        "locations",
        "default_location",
        "account_metrics",
        "basin_metrics",
        "stream_metrics",
    )
    for op in _ROUTES[route].values()
)
#: Operations on a basin's streams: they name the basin in the ``s2-basin`` header.
STREAM_SCOPED = frozenset(op for route in ("streams", "stream", "records", "tail") for op in _ROUTES[route].values())


def route(method: str, raw_path: str) -> tuple[str, dict[str, str]]:
    """The operationId and raw (still percent-encoded) path parameters; 404 or 405 when nothing matches."""
    segments = raw_path.split("/")[1:]
    name: str | None = None
    params: dict[str, str] = {}
    if segments[:1] == ["v1"]:
        rest = segments[1:]
        head = rest[0] if rest else ""
        count = len(rest)
        if head == "basins" and count in (1, 2):
            name = "basins" if count == 1 else "basin"
            params = {"basin": rest[1]} if count == 2 else {}
        elif head == "streams" and count == 1:
            name = "streams"
        elif head == "streams" and (count == 2 or (count in (3, 4) and rest[2] == "records")):
            name = {2: "stream", 3: "records", 4: "tail" if rest[-1] == "tail" else None}[count]
            params = {"stream": rest[1]}
        elif head == "access-tokens" and count in (1, 2):
            name = "access_tokens" if count == 1 else "access_token"
        elif head == "locations" and (count == 1 or (count == 2 and rest[1] == "default")):
            name = "locations" if count == 1 else "default_location"
        elif head == "metrics" and count in (1, 2, 3):
            name = ("account_metrics", "basin_metrics", "stream_metrics")[count - 1]
    if name is None:
        raise ApiError(404, {"code": "not_found", "message": f"no route for {method} {raw_path}"})
    methods = _ROUTES[name]
    if method not in methods:
        raise ApiError(
            405,
            {"code": "method_not_allowed", "message": f"{method} is not allowed on {raw_path}"},
            {"Allow": ", ".join(sorted(methods))},
        )
    return methods[method], params
