"""The local S2-compatible server over real HTTP, checked against S2's OpenAPI spec.

Every JSON body (success and error) is validated against the matching schema
of ``tests/s2-spec/openapi.json`` (S2's official spec, MIT); SSE ``batch`` and ``ping`` data against
``ReadBatch`` and ``PingEventData``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from resumable_stream import Record, S2Client, SequencedRecord
from resumable_stream.testing import S2Server
from resumable_stream.testing.jsonshapes import record_json, records_json
from resumable_stream.testing.routing import OPERATIONS

SPEC_PATH = Path(__file__).resolve().parent / "s2-spec" / "openapi.json"
SPEC_URI = "urn:s2-openapi"
BASIN = "test-basin"
MANUAL_BASIN = "manual-basin"  # streams are not created on demand here
HEARTBEAT = 0.2
TIMEOUT = (3.0, 10.0)  # every request: connect and read timeouts

_registry: Registry = Registry().with_resource(
    SPEC_URI, Resource.from_contents(json.loads(SPEC_PATH.read_text()), default_specification=DRAFT202012)
)
_validators: dict[str, Draft202012Validator] = {}


def validate(body: Any, schema: str) -> Any:
    """Assert ``body`` matches ``#/components/schemas/<schema>`` of the OpenAPI spec; return it."""
    if schema not in _validators:
        ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema}"}
        _validators[schema] = Draft202012Validator(ref, registry=_registry)
    _validators[schema].validate(body)
    return body


def check(response: requests.Response, status: int, schema: str | None = None) -> Any:
    """Assert the status, a correct Content-Length and (for JSON) the schema; return the parsed body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert int(response.headers["Content-Length"]) == len(response.content)
    if schema is None:
        return None
    assert response.headers["Content-Type"] == "application/json"
    return validate(response.json(), schema)


def error(response: requests.Response, status: int, code: str) -> str:
    """Assert a standard S2 error body; return its message."""
    body = check(response, status, "ErrorInfo")
    assert body["code"] == code, body
    return str(body["message"])


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def fence_record(token: str) -> dict[str, Any]:
    return {"headers": [["", "fence"]], "body": token}


def trim_record_b64(seq_num: int) -> dict[str, Any]:
    return {"headers": [["", b64("trim")]], "body": b64(seq_num.to_bytes(8, "big"))}


# -- fixtures --------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[S2Server]:
    with S2Server(basins=(BASIN, "second-basin"), heartbeat_interval=HEARTBEAT) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_faults(server: S2Server) -> Iterator[None]:
    server.faults.clear()
    yield
    server.faults.clear()


@pytest.fixture
def manual_basin(server: S2Server) -> Iterator[str]:
    """A basin whose streams must be created explicitly."""
    with requests.Session() as s:
        s.put(f"{server.url}/v1/basins/{MANUAL_BASIN}", json={"config": {}}, timeout=TIMEOUT).close()
    yield MANUAL_BASIN


class Client:
    """A requests session aimed at one basin of the server, with helpers for the records endpoints."""

    def __init__(self, server: S2Server, basin: str = BASIN) -> None:
        self.url = server.url
        self.session = requests.Session()
        self.session.headers["s2-basin"] = basin
        self.session.headers["Authorization"] = "Bearer anything"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", TIMEOUT)
        return self.session.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def append(
        self, stream: str, records: list[dict[str, Any]], fmt: str | None = None, **extra: Any
    ) -> requests.Response:
        headers = {"s2-format": fmt} if fmt else {}
        return self.request("POST", records_path(stream), json={"records": records, **extra}, headers=headers)

    def ok_append(self, stream: str, records: list[dict[str, Any]], fmt: str | None = None, **extra: Any) -> Any:
        return check(self.append(stream, records, fmt, **extra), 200, "AppendAck")

    def read(self, stream: str, fmt: str | None = None, **params: Any) -> requests.Response:
        headers = {"s2-format": fmt} if fmt else {}
        return self.get(records_path(stream), params=params, headers=headers)

    def ok_read(self, stream: str, fmt: str | None = None, **params: Any) -> Any:
        return check(self.read(stream, fmt, **params), 200, "ReadBatch")

    def tail(self, stream: str) -> int:
        return int(check(self.get(records_path(stream) + "/tail"), 200, "TailResponse")["tail"]["seq_num"])

    def sse(self, stream: str, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
        return self.get(
            records_path(stream), params=params, headers={"Accept": "text/event-stream", **(headers or {})}, stream=True
        )


def records_path(stream: str) -> str:
    return f"/v1/streams/{quote(stream, safe='')}/records"


@pytest.fixture
def client(server: S2Server) -> Iterator[Client]:
    with Client(server) as c:
        yield c


@pytest.fixture
def stream() -> str:
    return f"s-{uuid.uuid4().hex[:10]}"


def events(response: requests.Response) -> Iterator[dict[str, str]]:
    """Parse an SSE body into events ({"event", "id", "data"}), validating each against the spec's ReadEvent."""
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache, no-transform"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Transfer-Encoding"] == "chunked"
    current: dict[str, str] = {}
    for raw in response.iter_lines():
        line = raw.decode()
        if line:
            name, _, value = line.partition(": ")
            assert name not in current, line
            current[name] = value
            continue
        event, current = current, {}
        kind = event.get("event")
        if kind in ("batch", "ping"):
            data = json.loads(event["data"])
            validate(data, "ReadBatch" if kind == "batch" else "PingEventData")
            validate({**event, "data": data}, "ReadEvent")
        elif kind == "error":
            validate(event, "ReadEvent")
            validate(json.loads(event["data"]), "ErrorInfo")
        else:
            assert event == {"data": "[DONE]"}, event
        yield event


def collect(response: requests.Response) -> list[dict[str, str]]:
    """Every event of a session that must end with [DONE]."""
    out = list(events(response))
    assert out[-1] == {"data": "[DONE]"}
    return out


def batches(evts: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [json.loads(e["data"]) for e in evts if e.get("event") == "batch"]


def bodies(batch: dict[str, Any]) -> list[str]:
    return [r.get("body", "") for r in batch["records"]]


# -- routing, headers, HTTP ------------------------------------------------


def test_health_and_ping(client: Client) -> None:
    for path in ("/health", "/ping"):
        response = client.get(path)
        check(response, 200)
        assert response.text == "OK"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/v1"),
        ("GET", "/v1/nope"),
        ("GET", "/v1/streams/x/records/tail/more"),
        ("GET", "/v1/streams/x/other"),
        ("POST", "/health/x"),
    ],
)
def test_unknown_paths_are_404_with_a_json_body(client: Client, method: str, path: str) -> None:
    error(client.request(method, path), 404, "not_found")


def test_wrong_method_is_405_with_allow(client: Client, stream: str) -> None:
    response = client.request("DELETE", records_path(stream))
    error(response, 405, "method_not_allowed")
    assert response.headers["Allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/access-tokens"),
        ("POST", "/v1/access-tokens"),
        ("DELETE", "/v1/access-tokens/t1"),
        ("GET", "/v1/metrics"),
        ("GET", f"/v1/metrics/{BASIN}"),
        ("GET", f"/v1/metrics/{BASIN}/s"),
        ("GET", "/v1/locations"),
        ("GET", "/v1/locations/default"),
        ("PUT", "/v1/locations/default"),
    ],
)
def test_access_tokens_metrics_and_locations_are_not_implemented(client: Client, method: str, path: str) -> None:
    assert error(client.request(method, path, json={}), 501, "not_implemented") == "Not implemented"


def test_any_bearer_token_or_none_is_accepted(server: S2Server, stream: str) -> None:
    with requests.Session() as s:
        for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
            response = s.get(
                server.url + records_path(stream) + "/tail", headers={"s2-basin": BASIN, **headers}, timeout=TIMEOUT
            )
            check(response, 200, "TailResponse")


def test_streams_need_the_basin_header(server: S2Server, client: Client, stream: str) -> None:
    with requests.Session() as s:
        for method, path in [
            ("GET", "/v1/streams"),
            ("POST", "/v1/streams"),
            ("GET", f"/v1/streams/{stream}"),
            ("GET", records_path(stream)),
            ("POST", records_path(stream)),
            ("GET", records_path(stream) + "/tail"),
            ("GET", "/v1/streams/%2E/records"),
        ]:
            response = s.request(method, server.url + path, json={"records": [{}]}, timeout=TIMEOUT)
            check(response, 400, "ErrorInfo")
            assert response.json() == {"code": "bad_header", "message": "Missing header `s2-basin`"}
    error(client.get(records_path(stream) + "/tail", headers={"s2-basin": "Not_A_Basin"}), 400, "bad_header")
    message = error(
        client.get(records_path(stream) + "/tail", headers={"s2-basin": "no-such-basin"}), 404, "basin_not_found"
    )
    assert "no-such-basin" in message


def test_connections_are_kept_alive_and_every_response_has_a_length(server: S2Server, stream: str) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        headers = {"s2-basin": BASIN, "Content-Type": "application/json"}
        conn.request("POST", records_path(stream), body=json.dumps({"records": [{"body": "a"}]}), headers=headers)
        first = conn.getresponse()
        assert first.status == 200 and first.getheader("Content-Length")
        first.read()
        sock = conn.sock
        for path in ("/health", records_path(stream) + "/tail", "/nope"):
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            assert response.getheader("Content-Length") == str(len(response.read()))
        conn.request("DELETE", f"/v1/streams/{stream}", headers=headers)
        deleted = conn.getresponse()
        assert (deleted.status, deleted.getheader("Content-Length"), deleted.read()) == (202, "0", b"")
        assert conn.sock is sock  # the same connection served every request
    finally:
        conn.close()


def test_chunked_request_bodies_are_accepted(server: S2Server, client: Client, stream: str) -> None:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        body = iter([b'{"records": [{"bo', b'dy": "chunked"}]}'])
        conn.request(
            "POST",
            records_path(stream),
            body=body,
            encode_chunked=True,
            headers={"s2-basin": BASIN, "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        validate(json.loads(response.read()), "AppendAck")
    finally:
        conn.close()
    assert bodies(client.ok_read(stream, seq_num=0)) == ["chunked"]


def test_expect_100_continue_is_answered_before_the_body(server: S2Server, stream: str) -> None:
    body = json.dumps({"records": [{"body": "x" * 2000}]}).encode()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(
            f"POST {records_path(stream)} HTTP/1.1\r\nHost: x\r\ns2-basin: {BASIN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK\r\n")


# -- basins ----------------------------------------------------------------


def test_basin_lifecycle(server: S2Server, client: Client) -> None:
    name = f"life-{uuid.uuid4().hex[:8]}"
    created = client.request("POST", "/v1/basins", json={"basin": name, "config": {"create_stream_on_append": True}})
    info = check(created, 201, "BasinInfo")
    assert created.headers["s2-provision-result"] == "created"
    assert (info["name"], info["deleted_at"], info["location"]) == (name, None, None)
    config = check(client.get(f"/v1/basins/{name}"), 200, "BasinConfig")
    assert config == {
        "default_stream_config": None,
        "stream_cipher": None,
        "create_stream_on_append": True,
        "create_stream_on_read": False,
    }
    error(client.request("POST", "/v1/basins", json={"basin": name}), 409, "resource_already_exists")

    patched = client.request(
        "PATCH",
        f"/v1/basins/{name}",
        json={"create_stream_on_read": True, "default_stream_config": {"timestamping": {"mode": "arrival"}}},
    )
    config = check(patched, 200, "BasinConfig")
    assert config["create_stream_on_read"] and config["create_stream_on_append"]
    assert config["default_stream_config"] == {"timestamping": {"mode": "arrival"}}
    with Client(server, name) as in_basin:  # a read now creates a stream, with the basin's default config
        in_basin.tail("auto")
        assert check(in_basin.get("/v1/streams/auto"), 200, "StreamConfig")["timestamping"]["mode"] == "arrival"
    patched = client.request(
        "PATCH", f"/v1/basins/{name}", json={"create_stream_on_append": None, "default_stream_config": None}
    )
    assert check(patched, 200, "BasinConfig")["create_stream_on_append"] is False
    assert check(client.get(f"/v1/basins/{name}"), 200, "BasinConfig")["default_stream_config"] is None

    ensured = client.request("PUT", f"/v1/basins/{name}", json={"config": {"create_stream_on_append": True}})
    check(ensured, 200, "BasinInfo")
    assert ensured.headers["s2-provision-result"] == "updated"
    again = client.request("PUT", f"/v1/basins/{name}", json={"config": {"create_stream_on_append": True}})
    assert (again.status_code, again.headers["s2-provision-result"]) == (200, "noop")
    # PUT sets the whole config: without a body the basin gets the defaults.
    reset = client.request("PUT", f"/v1/basins/{name}")
    assert (reset.status_code, reset.headers["s2-provision-result"]) == (200, "updated")
    assert check(client.get(f"/v1/basins/{name}"), 200, "BasinConfig")["create_stream_on_append"] is False

    check(client.request("DELETE", f"/v1/basins/{name}"), 202)
    error(client.get(f"/v1/basins/{name}"), 404, "basin_not_found")
    error(client.request("DELETE", f"/v1/basins/{name}"), 404, "basin_not_found")
    error(client.request("PATCH", f"/v1/basins/{name}", json={}), 404, "basin_not_found")
    with pytest.raises(KeyError):
        server.basin_log(name)
    new = client.request("PUT", f"/v1/basins/{name}")
    check(new, 201, "BasinInfo")
    assert new.headers["s2-provision-result"] == "created"


def test_list_basins(client: Client) -> None:
    prefix = f"list-{uuid.uuid4().hex[:6]}-"
    names = [prefix + c for c in "abc"]
    for name in reversed(names):
        check(client.request("PUT", f"/v1/basins/{name}"), 201, "BasinInfo")
    listed = check(client.get("/v1/basins", params={"prefix": prefix}), 200, "ListBasinsResponse")
    assert ([b["name"] for b in listed["basins"]], listed["has_more"]) == (names, False)
    page = check(client.get("/v1/basins", params={"prefix": prefix, "limit": 2}), 200, "ListBasinsResponse")
    assert ([b["name"] for b in page["basins"]], page["has_more"]) == (names[:2], True)
    rest = check(
        client.get("/v1/basins", params={"prefix": prefix, "start_after": names[1]}), 200, "ListBasinsResponse"
    )
    assert [b["name"] for b in rest["basins"]] == names[2:]
    assert {BASIN, "second-basin"} <= {
        b["name"] for b in check(client.get("/v1/basins"), 200, "ListBasinsResponse")["basins"]
    }
    error(client.get("/v1/basins", params={"prefix": "m", "start_after": "a"}), 422, "invalid")
    error(client.get("/v1/basins", params={"limit": "ten"}), 400, "bad_query")
    for path in [f"/v1/basins/{n}" for n in names]:
        check(client.request("DELETE", path), 202)


def test_create_basin_with_a_request_token_is_idempotent(client: Client) -> None:
    name = f"token-{uuid.uuid4().hex[:8]}"
    body = {"basin": name, "config": {"create_stream_on_read": True}}
    first = client.request("POST", "/v1/basins", json=body, headers={"s2-request-token": "tok-1"})
    check(first, 201, "BasinInfo")
    replay = client.request("POST", "/v1/basins", json=body, headers={"s2-request-token": "tok-1"})
    assert check(replay, 201, "BasinInfo") == first.json()
    assert replay.headers["s2-provision-result"] == "noop"
    other_config = {"basin": name, "config": {"create_stream_on_read": False}}
    error(
        client.request("POST", "/v1/basins", json=other_config, headers={"s2-request-token": "tok-1"}),
        409,
        "resource_already_exists",
    )
    error(
        client.request("POST", "/v1/basins", json=body, headers={"s2-request-token": "tok-2"}),
        409,
        "resource_already_exists",
    )
    error(
        client.request("POST", "/v1/basins", json={"basin": f"{name}-x"}, headers={"s2-request-token": "t" * 37}),
        400,
        "bad_header",
    )
    check(client.request("DELETE", f"/v1/basins/{name}"), 202)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"basin": "UPPER-case"}, 400, "bad_json"),
        ({"basin": "short"}, 400, "bad_json"),
        ({"basin": "-leading-hyphen"}, 400, "bad_json"),
        ({}, 400, "bad_json"),
        ({"basin": 12345678}, 400, "bad_json"),
        ({"basin": "valid-basin-1", "config": {"create_stream_on_append": "yes"}}, 400, "bad_json"),
        ({"basin": "valid-basin-1", "config": {"default_stream_config": {"storage_class": "cold"}}}, 400, "bad_json"),
        (
            {"basin": "valid-basin-1", "config": {"default_stream_config": {"retention_policy": {"age": 0}}}},
            422,
            "invalid",
        ),
        ({"basin": "valid-basin-1", "config": {"stream_cipher": "aegis-256"}}, 501, "not_implemented"),
    ],
)
def test_create_basin_validation(client: Client, body: dict[str, Any], status: int, code: str) -> None:
    error(client.request("POST", "/v1/basins", json=body), status, code)
    error(client.get("/v1/basins/valid-basin-1"), 404, "basin_not_found")


def test_basin_names_in_paths_are_validated(client: Client) -> None:
    for name in ("Bad_Name", "short", "x" * 49, "%20spaced-basin"):
        error(client.get(f"/v1/basins/{name}"), 400, "bad_path")


def test_basin_config_controls_stream_creation(
    server: S2Server, client: Client, manual_basin: str, stream: str
) -> None:
    with Client(server, manual_basin) as manual:
        assert "in basin `manual-basin`" in error(manual.append(stream, [{}]), 404, "stream_not_found")
        error(manual.read(stream, seq_num=0), 404, "stream_not_found")
        error(manual.get(records_path(stream) + "/tail"), 404, "stream_not_found")
        error(manual.get(f"/v1/streams/{stream}"), 404, "stream_not_found")
        patch = {"create_stream_on_append": True, "default_stream_config": {"timestamping": {"mode": "arrival"}}}
        check(client.request("PATCH", f"/v1/basins/{manual_basin}", json=patch), 200, "BasinConfig")
        manual.ok_append(stream, [{"body": "x", "timestamp": 5}])
        config = check(manual.get(f"/v1/streams/{stream}"), 200, "StreamConfig")
        assert config["timestamping"]["mode"] == "arrival"
        assert manual.ok_read(stream, seq_num=0)["records"][0]["timestamp"] > 5  # arrival time, not the client's
        error(manual.read(stream + "-2", seq_num=0), 404, "stream_not_found")  # reads still do not create


# -- streams ---------------------------------------------------------------

DEFAULT_CONFIG = {
    "storage_class": "express",
    "retention_policy": {"age": 604800},
    "timestamping": {"mode": "client-prefer", "uncapped": False},
    "delete_on_empty": {"min_age_secs": 0},
}


def test_stream_lifecycle(client: Client, stream: str) -> None:
    created = client.request("POST", "/v1/streams", json={"stream": stream, "config": {"storage_class": "standard"}})
    info = check(created, 201, "StreamInfo")
    assert (info["name"], info["deleted_at"], info["cipher"]) == (stream, None, None)
    assert created.headers["s2-provision-result"] == "created"
    error(client.request("POST", "/v1/streams", json={"stream": stream}), 409, "resource_already_exists")
    assert check(client.get(f"/v1/streams/{stream}"), 200, "StreamConfig") == {
        **DEFAULT_CONFIG,
        "storage_class": "standard",
    }

    patched = client.request(
        "PATCH",
        f"/v1/streams/{stream}",
        json={"retention_policy": {"infinite": {}}, "timestamping": {"uncapped": True}, "storage_class": None},
    )
    assert check(patched, 200, "StreamConfig") == {
        **DEFAULT_CONFIG,
        "retention_policy": {"infinite": {}},
        "timestamping": {"mode": "client-prefer", "uncapped": True},
    }
    patched = client.request("PATCH", f"/v1/streams/{stream}", json={"timestamping": {"mode": "arrival"}})
    assert check(patched, 200, "StreamConfig")["timestamping"] == {"mode": "arrival", "uncapped": True}

    # PUT makes the config exactly the one given (on the basin's defaults).
    ensured = client.request("PUT", f"/v1/streams/{stream}", json={"retention_policy": {"age": 60}})
    check(ensured, 200, "StreamInfo")
    assert ensured.headers["s2-provision-result"] == "updated"
    assert check(client.get(f"/v1/streams/{stream}"), 200, "StreamConfig") == {
        **DEFAULT_CONFIG,
        "retention_policy": {"age": 60},
    }
    again = client.request("PUT", f"/v1/streams/{stream}", json={"retention_policy": {"age": 60}})
    assert (again.status_code, again.headers["s2-provision-result"]) == (200, "noop")

    client.ok_append(stream, [{"body": "before delete"}])
    check(client.request("DELETE", f"/v1/streams/{stream}"), 202)
    error(client.get(f"/v1/streams/{stream}"), 404, "stream_not_found")
    error(client.request("DELETE", f"/v1/streams/{stream}"), 404, "stream_not_found")
    error(client.request("PATCH", f"/v1/streams/{stream}", json={}), 404, "stream_not_found")
    new = client.request("PUT", f"/v1/streams/{stream}")
    check(new, 201, "StreamInfo")
    assert new.headers["s2-provision-result"] == "created"
    assert client.tail(stream) == 0  # a new stream, not the old one
    assert check(client.get(f"/v1/streams/{stream}"), 200, "StreamConfig") == DEFAULT_CONFIG


def test_list_streams(client: Client) -> None:
    prefix = f"ls-{uuid.uuid4().hex[:6]}/"
    names = [prefix + c for c in "abc"]
    for name in reversed(names):
        check(client.request("PUT", f"/v1/streams/{quote(name, safe='')}"), 201, "StreamInfo")
    listed = check(client.get("/v1/streams", params={"prefix": prefix}), 200, "ListStreamsResponse")
    assert ([s["name"] for s in listed["streams"]], listed["has_more"]) == (names, False)
    page = check(client.get("/v1/streams", params={"prefix": prefix, "limit": 1}), 200, "ListStreamsResponse")
    assert ([s["name"] for s in page["streams"]], page["has_more"]) == (names[:1], True)
    rest = check(
        client.get("/v1/streams", params={"prefix": prefix, "start_after": names[0], "limit": 0}),
        200,
        "ListStreamsResponse",
    )
    assert [s["name"] for s in rest["streams"]] == names[1:]
    error(client.get("/v1/streams", params={"prefix": "b", "start_after": "a"}), 422, "invalid")
    error(client.get("/v1/streams", params={"limit": "-1"}), 400, "bad_query")
    other = client.get("/v1/streams", params={"prefix": prefix}, headers={"s2-basin": "second-basin"})
    assert check(other, 200, "ListStreamsResponse")["streams"] == []


def test_create_stream_with_a_request_token_is_idempotent(client: Client, stream: str) -> None:
    body = {"stream": stream, "config": {"storage_class": "standard"}}
    first = check(
        client.request("POST", "/v1/streams", json=body, headers={"s2-request-token": "a"}), 201, "StreamInfo"
    )
    replay = client.request("POST", "/v1/streams", json=body, headers={"s2-request-token": "a"})
    assert (check(replay, 201, "StreamInfo"), replay.headers["s2-provision-result"]) == (first, "noop")
    error(
        client.request("POST", "/v1/streams", json={"stream": stream}, headers={"s2-request-token": "a"}),
        409,
        "resource_already_exists",
    )
    check(client.request("DELETE", f"/v1/streams/{stream}"), 202)
    check(client.request("POST", "/v1/streams", json=body, headers={"s2-request-token": "a"}), 201, "StreamInfo")


@pytest.mark.parametrize(
    ("method", "body", "status", "code"),
    [
        ("POST", {"config": {}}, 400, "bad_json"),
        ("POST", {"stream": ""}, 400, "bad_json"),
        ("POST", {"stream": ".."}, 400, "bad_json"),
        ("POST", {"stream": "x" * 513}, 400, "bad_json"),
        ("POST", {"stream": "ok", "config": {"storage_class": "cold"}}, 400, "bad_json"),
        ("POST", {"stream": "ok", "config": {"retention_policy": {"age": -1}}}, 400, "bad_json"),
        ("POST", {"stream": "ok", "config": {"retention_policy": {"age": 1, "infinite": {}}}}, 400, "bad_json"),
        ("POST", {"stream": "ok", "config": {"timestamping": {"mode": "sometimes"}}}, 400, "bad_json"),
        ("POST", {"stream": "ok", "config": {"retention_policy": {"age": 0}}}, 422, "invalid"),
        ("PUT", {"timestamping": {"uncapped": "yes"}}, 400, "bad_json"),
        ("PUT", [], 400, "bad_json"),
    ],
)
def test_stream_config_validation(client: Client, method: str, body: Any, status: int, code: str) -> None:
    path = "/v1/streams" if method == "POST" else f"/v1/streams/cfg-{uuid.uuid4().hex[:6]}"
    error(client.request(method, path, json=body), status, code)
    error(client.get("/v1/streams/ok"), 404, "stream_not_found")


@pytest.mark.parametrize(
    "raw",
    ["%2E", "%2E%2E", "", "x" * 513, "%FF", "%C3%28"],
)
def test_invalid_stream_names_in_paths_are_bad_path(client: Client, raw: str) -> None:
    for path in (f"/v1/streams/{raw}", f"/v1/streams/{raw}/records", f"/v1/streams/{raw}/records/tail"):
        error(client.get(path), 400, "bad_path")
    error(client.request("POST", f"/v1/streams/{raw}/records", json={"records": [{}]}), 400, "bad_path")


@pytest.mark.parametrize(
    "name", ["a/b", "what?yes=1", "hash#tag", "100%", "with space", "plus+sign", "ünï/😀", "x" * 512]
)
def test_percent_encoded_stream_names(client: Client, name: str) -> None:
    name = f"{uuid.uuid4().hex[:4]}{name}"[:512]
    client.ok_append(name, [{"body": "hi"}])
    assert bodies(client.ok_read(name, seq_num=0)) == ["hi"]
    assert client.tail(name) == 1
    listed = check(client.get("/v1/streams", params={"prefix": name}), 200, "ListStreamsResponse")
    assert [s["name"] for s in listed["streams"]] == [name]
    check(client.get(f"/v1/streams/{quote(name, safe='')}"), 200, "StreamConfig")


# -- append ----------------------------------------------------------------


def test_append_ack_and_read_back(client: Client, stream: str) -> None:
    before = time.time_ns() // 1_000_000
    ack = client.ok_append(stream, [{"body": "one", "headers": [["kind", "text"], ["kind", "dup"]]}, {"body": ""}, {}])
    after = time.time_ns() // 1_000_000
    assert (ack["start"]["seq_num"], ack["end"]["seq_num"], ack["tail"]["seq_num"]) == (0, 3, 3)
    assert before <= ack["start"]["timestamp"] <= ack["end"]["timestamp"] <= after
    assert ack["tail"] == ack["end"]
    ack2 = client.ok_append(stream, [{"body": "four"}], match_seq_num=3)
    assert (ack2["start"]["seq_num"], ack2["end"]["seq_num"]) == (3, 4)
    batch = client.ok_read(stream, seq_num=0)
    assert "tail" not in batch  # not read from the live tail
    records = batch["records"]
    assert [r["seq_num"] for r in records] == [0, 1, 2, 3]
    assert records[0]["headers"] == [["kind", "text"], ["kind", "dup"]] and records[0]["body"] == "one"
    assert set(records[1]) == set(records[2]) == {"seq_num", "timestamp"}  # empty headers and body are omitted


def test_a_batch_of_plain_records_is_encoded_as_each_of_them_would_be() -> None:
    # The server encodes a batch of plain text records in one pass; it must match the record-by-record way.
    texts = ["plain", 'quo"te', "back\\slash", "tab\tnew\nline\x00\x1f", "ünï ✓ 😀", "\u2028\u2029", "/"]
    records = [SequencedRecord(i, 1_700_000_000_000 + i, t.encode()) for i, t in enumerate(texts)]
    records.append(SequencedRecord(len(texts), 1, b"\xff\xfe not UTF-8"))
    assert records_json(records) == [record_json(r) for r in records]
    assert [json.loads(line)["body"] for line in records_json(records)][:-1] == texts
    mixed = [*records, SequencedRecord(99, 2, b"", ((b"rs", b"heartbeat"),))]
    assert records_json(mixed) == [record_json(r) for r in mixed]


def test_timestamps_are_capped_and_monotonic(client: Client, stream: str) -> None:
    future = time.time_ns() // 1_000_000 + 3_600_000
    client.ok_append(
        stream, [{"body": "a", "timestamp": 1000}, {"body": "b", "timestamp": 500}, {"body": "c", "timestamp": future}]
    )
    stamps = [r["timestamp"] for r in client.ok_read(stream, seq_num=0)["records"]]
    assert stamps[:2] == [1000, 1000] and stamps[2] < future
    assert bodies(client.ok_read(stream, timestamp=1001)) == ["c"]
    assert bodies(client.ok_read(stream, timestamp=0, until=1001)) == ["a", "b"]
    required = f"{stream}-required"
    check(
        client.request("PUT", f"/v1/streams/{required}", json={"timestamping": {"mode": "client-require"}}),
        201,
        "StreamInfo",
    )
    assert "required" in error(client.append(required, [{"body": "x"}]), 422, "invalid")
    client.ok_append(required, [{"body": "x", "timestamp": 7}])


def test_base64_round_trips_any_bytes_and_raw_reads_are_lossy(client: Client, stream: str) -> None:
    body, name, value = b"\xff\x00\xfe binary", b"\xc3(", b"\x80v"
    client.ok_append(stream, [{"body": b64(body), "headers": [[b64(name), b64(value)]]}], fmt="base64")
    record = client.ok_read(stream, "base64", seq_num=0)["records"][0]
    assert (record["body"], record["headers"]) == (b64(body), [[b64(name), b64(value)]])
    lossy = client.ok_read(stream, "raw", seq_num=0)["records"][0]
    assert lossy["body"] == "\ufffd\x00\ufffd binary"
    assert lossy["headers"] == [["\ufffd(", "\ufffdv"]]
    client.ok_append(stream, [{"body": "ünï 😀", "headers": [["h", "v"]]}], fmt="raw")
    record = client.ok_read(stream, "base64", seq_num=1)["records"][0]
    assert base64.b64decode(record["body"]) == "ünï 😀".encode()
    assert record["headers"] == [[b64("h"), b64("v")]]


@pytest.mark.parametrize(
    ("value", "fmt"), [("json", "raw"), ("raw", "raw"), ("base64", "base64"), ("json-binsafe", "base64")]
)
def test_s2_format_values(client: Client, stream: str, value: str, fmt: str) -> None:
    body = "aGk=" if fmt == "base64" else "hi"
    client.ok_append(stream, [{"body": body}], fmt=value)
    assert client.ok_read(stream, value, seq_num=0)["records"][0]["body"] == body


def test_an_unknown_s2_format_is_a_bad_header(client: Client, stream: str) -> None:
    error(client.append(stream, [{"body": "x"}], fmt="hex"), 400, "bad_header")
    error(client.read(stream, "utf8", seq_num=0), 400, "bad_header")
    response = client.sse(stream, headers={"s2-format": "text"}, seq_num=0)
    with response:
        error(response, 400, "bad_header")


@pytest.mark.parametrize("bad", ["not base64!", "aGk", "aGk==", "QR==", "aGk=\n"])
def test_bad_base64_is_invalid(client: Client, stream: str, bad: str) -> None:
    for record in ({"body": bad}, {"headers": [[bad, "aGk="]]}, {"headers": [["aGk=", bad]]}):
        assert "Base64" in error(client.append(stream, [record], fmt="base64"), 422, "invalid")
    assert client.tail(stream) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"[]",
        b'"records"',
        b"{}",
        b'{"records": {}}',
        b'{"records": [1]}',
        b'{"records": [{"body": 1}]}',
        b'{"records": [{"body": null}]}',
        b'{"records": [{"headers": [["a"]]}]}',
        b'{"records": [{"headers": "a"}]}',
        b'{"records": [{"headers": [["a", 1]]}]}',
        b'{"records": [{"timestamp": -1}]}',
        b'{"records": [{"timestamp": 1.5}]}',
        b'{"records": [{"timestamp": true}]}',
        b'{"records": [{"timestamp": 18446744073709551616}]}',
        b'{"records": [{}], "match_seq_num": "1"}',
        b'{"records": [{}], "fencing_token": 5}',
        b'{"records": [{}], "fencing_token": "' + b"t" * 37 + b'"}',
        b'{"records": [{"timestamp": NaN}]}',
        b'{"records": [], "records": []}',
        b'{"records": [{"body": "\\ud800"}]}',
        b'{"records": [{"body": "a"}, {"body": "b", "body": "c"}]}',
        b'{"records": [{"body": "a"}, {"body": 1}]}',
        b'{"records": [{"body": "a"}, {"body": "\\udfff"}]}',
        b'\xff{"records": []}',
    ],
)
def test_malformed_append_bodies_are_bad_json(client: Client, stream: str, body: bytes) -> None:
    response = client.request("POST", records_path(stream), data=body, headers={"Content-Type": "application/json"})
    error(response, 400, "bad_json")


def test_a_json_body_over_2_mib_is_refused_as_s2_lite_refuses_it(client: Client, stream: str) -> None:
    # 400 KB of ESC as raw JSON is 2.4 MB of "\u001b" escapes, over the 2 MiB s2-lite's axum buffers.
    body = json.dumps({"records": [{"body": "\x1b" * 400_000}]}).encode()
    response = client.request("POST", records_path(stream), data=body, headers={"Content-Type": "application/json"})
    assert "length limit exceeded" in error(response, 400, "bad_json")
    small = json.dumps({"records": [{"body": "x" * 1_000_000}]}).encode()
    assert client.request("POST", records_path(stream), data=small,
                          headers={"Content-Type": "application/json"}).status_code == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_appends_need_a_json_content_type(client: Client, stream: str, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.request("POST", records_path(stream), data=b'{"records": [{}]}', headers=headers)
    assert "Content-Type: application/json" in error(response, 400, "bad_json")
    ok = client.request(
        "POST",
        records_path(stream),
        data=b'{"records": [{}]}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    check(ok, 200, "AppendAck")


def test_protobuf_appends_and_reads(client: Client, stream: str) -> None:
    # AppendInput{records: [{timestamp: 5, body: "x"}]}, in protobuf's wire format.
    protobuf = {"Content-Type": "application/protobuf"}
    ack = client.request("POST", records_path(stream), data=b"\x0a\x05\x08\x05\x1a\x01x", headers=protobuf)
    assert check(ack, 200, "AppendAck")["end"]["seq_num"] == 1  # answered in JSON unless protobuf is accepted
    read = client.get(records_path(stream), params={"seq_num": 0}, headers={"Accept": "application/x-protobuf"})
    assert (read.status_code, read.headers["Content-Type"]) == (200, "application/protobuf")
    assert read.content == b"\x0a\x05\x10\x05\x22\x01x"  # ReadBatch{records: [{seq_num: 0, timestamp: 5, body: "x"}]}
    bad = client.request("POST", records_path(stream), data=b"\x0a\xff", headers=protobuf)
    error(bad, 400, "bad_proto")


def test_unknown_fields_are_ignored(client: Client, stream: str) -> None:
    ack = client.ok_append(stream, [{"body": "x", "extra": [1]}], future_field={"a": 1})
    assert ack["end"]["seq_num"] == 1
    check(client.request("POST", "/v1/streams", json={"stream": f"{stream}-2", "whatever": 1}), 201, "StreamInfo")


@pytest.mark.parametrize(
    ("records", "fragment"),
    [
        ([], "must not be empty"),
        ([{}] * 1001, "1000 records"),
        ([{"body": "x" * 600_000}, {"body": "y" * 600_000}], "metered size of 1 MiB"),
        ([{"body": "x" * (1024 * 1024)}], "record must have metered size"),
        ([{"headers": [["", "v"], ["a", "b"]]}], "empty name"),
        ([{"headers": [["", "v"]]}], "unknown command"),
        ([fence_record("t" * 37)], "36 bytes"),
        ([{"headers": [["", "trim"]], "body": "1234567"}], "must be 8"),
    ],
)
def test_invalid_batches_are_422(client: Client, stream: str, records: list[dict[str, Any]], fragment: str) -> None:
    assert fragment in error(client.append(stream, records), 422, "invalid")
    assert client.tail(stream) == 0


def test_largest_batches_are_accepted(client: Client, stream: str) -> None:
    assert client.ok_append(stream, [{}] * 1000)["end"]["seq_num"] == 1000
    client.ok_append(stream, [{"body": "x" * (1024 * 1024 - 8)}])
    assert client.tail(stream) == 1001


# -- fencing and trim --------------------------------------------------------


def test_fencing(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "unfenced"}], fencing_token="")  # "" asserts "not fenced"
    # A fence in a batch takes effect for the next batch: this batch passes the "" check.
    client.ok_append(stream, [fence_record("writer-1"), {"body": "same batch"}], fencing_token="")
    mismatch = check(client.append(stream, [{"body": "x"}], fencing_token=""), 412, "AppendConditionFailed")
    assert mismatch == {"fencing_token_mismatch": "writer-1"}
    wrong = check(client.append(stream, [{"body": "x"}], fencing_token="writer-2"), 412, "AppendConditionFailed")
    assert wrong == {"fencing_token_mismatch": "writer-1"}
    client.ok_append(stream, [{"body": "fenced"}], fencing_token="writer-1")
    client.ok_append(stream, [{"body": "no token, no check"}])
    # The token is checked before match_seq_num.
    both = client.append(stream, [{"body": "x"}], fencing_token="writer-2", match_seq_num=0)
    assert check(both, 412, "AppendConditionFailed") == {"fencing_token_mismatch": "writer-1"}
    seq = client.append(stream, [{"body": "x"}], fencing_token="writer-1", match_seq_num=0)
    assert check(seq, 412, "AppendConditionFailed") == {"seq_num_mismatch": 5}
    client.ok_append(stream, [fence_record("")], fencing_token="writer-1")  # an empty fence clears it
    client.ok_append(stream, [{"body": "cleared"}], fencing_token="", match_seq_num=6)
    records = client.ok_read(stream, seq_num=0)["records"]
    assert [r.get("body") for r in records] == [
        "unfenced",
        "writer-1",
        "same batch",
        "fenced",
        "no token, no check",
        None,
        "cleared",
    ]
    assert records[1]["headers"] == records[5]["headers"] == [["", "fence"]]
    assert "body" not in records[5]  # the empty token is omitted
    assert client.tail(stream) == 7


def test_fence_in_base64(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"headers": [["", b64("fence")]], "body": b64("w")}], fmt="base64")
    assert check(client.append(stream, [{}], fencing_token=""), 412, "AppendConditionFailed") == {
        "fencing_token_mismatch": "w"
    }


def test_trim(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": str(i)} for i in range(5)])
    client.ok_append(stream, [trim_record_b64(3)], fmt="base64")  # seq 5
    batch = client.ok_read(stream, "base64", seq_num=0)
    assert [r["seq_num"] for r in batch["records"]] == [3, 4, 5]
    trim = batch["records"][2]
    assert trim["headers"] == [["", b64("trim")]] and base64.b64decode(trim["body"]) == (3).to_bytes(8, "big")
    client.ok_append(stream, [trim_record_b64(1)], fmt="base64")  # seq 6: backwards, no effect
    assert client.ok_read(stream, seq_num=0)["records"][0]["seq_num"] == 3
    client.ok_append(stream, [trim_record_b64(1000)], fmt="base64")  # seq 7: capped at 7 + 1
    assert check(client.read(stream, seq_num=0), 416, "TailResponse")["tail"]["seq_num"] == 8
    assert client.tail(stream) == 8
    client.ok_append(stream, [{"body": "after"}])
    assert bodies(client.ok_read(stream, seq_num=0)) == ["after"]


# -- reads -------------------------------------------------------------------


def test_read_start_and_limits(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": f"r{i}"} for i in range(5)])  # 8 + 2 = 10 metered bytes each
    assert bodies(client.ok_read(stream, seq_num=2)) == ["r2", "r3", "r4"]
    assert bodies(client.ok_read(stream, tail_offset=2)) == ["r3", "r4"]
    assert bodies(client.ok_read(stream, tail_offset=100)) == ["r0", "r1", "r2", "r3", "r4"]
    assert bodies(client.ok_read(stream, seq_num=0, count=2)) == ["r0", "r1"]
    assert bodies(client.ok_read(stream, seq_num=0, bytes=25)) == ["r0", "r1"]
    assert client.ok_read(stream, seq_num=0, count=0) == {"records": []}
    assert client.ok_read(stream, seq_num=0, bytes=5) == {"records": []}
    assert client.ok_read(stream, seq_num=1, clamp="true", count=1)["records"][0]["body"] == "r1"


def test_unary_reads_are_capped_at_1000_records(client: Client, stream: str) -> None:
    client.ok_append(stream, [{}] * 1000)
    client.ok_append(stream, [{}] * 5)
    assert len(client.ok_read(stream, seq_num=0, count=5000)["records"]) == 1000
    assert len(client.ok_read(stream, seq_num=1000)["records"]) == 5


def test_416_rules(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}, {"body": "b"}])
    tail = client.ok_read(stream, seq_num=0)["records"][-1]["timestamp"]
    expected = {"tail": {"seq_num": 2, "timestamp": tail}}
    assert check(client.read(stream, seq_num=3), 416, "TailResponse") == expected  # beyond the tail
    assert check(client.read(stream, timestamp=tail + 1), 416, "TailResponse") == expected
    assert check(client.read(stream, seq_num=2), 416, "TailResponse") == expected  # at the tail, no wait
    assert check(client.read(stream), 416, "TailResponse") == expected  # no start = the tail
    assert check(client.read(stream, tail_offset=0), 416, "TailResponse") == expected
    assert check(client.read(stream, seq_num=99, clamp="true"), 416, "TailResponse") == expected  # clamped to it
    assert check(client.read(stream, seq_num=99, clamp="false"), 416, "TailResponse") == expected
    empty = f"{stream}-empty"
    assert check(client.read(empty, seq_num=0), 416, "TailResponse") == {"tail": {"seq_num": 0, "timestamp": 0}}
    started = time.monotonic()
    assert client.ok_read(stream, seq_num=99, clamp="true", wait=1) == {"records": []}  # clamped long-poll
    assert 0.9 < time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"seq_num": 0, "tail_offset": 1}, 422, "invalid"),
        ({"seq_num": 0, "timestamp": 1}, 422, "invalid"),
        ({"timestamp": 5, "until": 5}, 422, "invalid"),
        ({"seq_num": -1}, 400, "bad_query"),
        ({"seq_num": "abc"}, 400, "bad_query"),
        ({"seq_num": ""}, 400, "bad_query"),
        ({"count": "1.5"}, 400, "bad_query"),
        ({"seq_num": str(2**64)}, 400, "bad_query"),
        ({"wait": str(2**32)}, 400, "bad_query"),
        ({"clamp": "yes"}, 400, "bad_query"),
        ({"seq_num": ["1", "2"]}, 400, "bad_query"),
    ],
)
def test_read_parameter_errors(client: Client, stream: str, params: dict[str, Any], status: int, code: str) -> None:
    error(client.read(stream, **params), status, code)
    with client.sse(stream, **params) as response:
        error(response, status, code)


def test_unknown_query_parameters_are_ignored(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}])
    assert bodies(client.ok_read(stream, seq_num=0, color="blue")) == ["a"]


def test_reads_create_streams_only_when_the_basin_says_so(
    server: S2Server, client: Client, manual_basin: str, stream: str
) -> None:
    assert client.tail(stream) == 0  # test-basin creates on read
    assert [s["name"] for s in client.get("/v1/streams", params={"prefix": stream}).json()["streams"]] == [stream]
    with Client(server, manual_basin).session as manual:
        response = manual.get(server.url + records_path(stream), params={"seq_num": 0}, timeout=TIMEOUT)
        error(response, 404, "stream_not_found")


def test_long_poll_returns_as_soon_as_an_append_lands(client: Client, server: S2Server, stream: str) -> None:
    client.ok_append(stream, [{"body": "old"}])

    def append_later() -> None:
        time.sleep(0.3)
        with Client(server).session as writer:
            writer.post(
                server.url + records_path(stream),
                json={"records": [{"body": "new"}]},
                headers={"s2-basin": BASIN},
                timeout=TIMEOUT,
            ).close()

    thread = threading.Thread(target=append_later)
    started = time.monotonic()
    thread.start()
    batch = client.ok_read(stream, seq_num=1, wait=10)
    elapsed = time.monotonic() - started
    thread.join(5)
    assert bodies(batch) == ["new"]
    assert batch["tail"]["seq_num"] == 2
    assert 0.25 < elapsed < 2.0  # well before the 10 s wait ends


def test_long_poll_without_records_returns_an_empty_batch(client: Client, stream: str) -> None:
    started = time.monotonic()
    assert client.ok_read(stream, wait=1) == {"records": []}
    assert 0.9 < time.monotonic() - started < 3


def test_fifty_long_polls_are_all_woken_by_one_append(server: S2Server, client: Client, stream: str) -> None:
    def poll() -> tuple[list[str], float]:
        with requests.Session() as s:
            response = s.get(
                server.url + records_path(stream),
                params={"seq_num": 0, "wait": 20},
                headers={"s2-basin": BASIN},
                timeout=(3, 30),
            )
            return bodies(check(response, 200, "ReadBatch")), time.monotonic()

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(poll) for _ in range(50)]
        time.sleep(0.5)
        appended = time.monotonic()
        client.ok_append(stream, [{"body": "wake up"}])
        results = [f.result(timeout=15) for f in futures]
    assert all(found == ["wake up"] for found, _ in results)
    assert max(done for _, done in results) - appended < 5


def test_check_tail(client: Client, stream: str) -> None:
    assert check(client.get(records_path(stream) + "/tail"), 200, "TailResponse") == {
        "tail": {"seq_num": 0, "timestamp": 0}
    }
    ack = client.ok_append(stream, [{"body": "a"}, {"body": "b", "timestamp": 1}])
    assert check(client.get(records_path(stream) + "/tail"), 200, "TailResponse") == {"tail": ack["tail"]}


# -- SSE read sessions -------------------------------------------------------


def test_sse_session_follows_live_appends_with_ids_pings_and_done(
    server: S2Server, client: Client, stream: str
) -> None:
    client.ok_append(stream, [{"body": "a"}, {"body": "bb", "headers": [["k", "v"]]}])  # 9 + 14 bytes
    received: list[dict[str, str]] = []
    with client.sse(stream, seq_num=0, count=4, wait=5) as response:
        for event in events(response):
            received.append(event)
            if event.get("event") == "ping" and len(batches(received)) == 1:
                client.ok_append(stream, [{"body": "c"}])
                client.ok_append(stream, [{"body": "d"}, {"body": "not read"}])
    assert received[-1] == {"data": "[DONE]"}
    found = batches(received)
    assert [bodies(b) for b in found] == [["a", "bb"], ["c"], ["d"]]
    ids = [e["id"] for e in received if e.get("event") == "batch"]
    assert ids == ["1,2,23", "2,3,32", "3,4,41"]  # last seq_num, records and bytes so far on this connection
    assert "tail" not in found[0]  # read from history
    assert found[1]["tail"] == {"seq_num": 3, "timestamp": found[1]["records"][0]["timestamp"]}
    pings = [json.loads(e["data"]) for e in received if e.get("event") == "ping"]
    assert pings[0]["tail"]["seq_num"] == 2  # sent as soon as the session caught up


def test_sse_bounded_session_without_wait_ends_at_the_tail(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}, {"body": "b"}])
    with client.sse(stream, seq_num=0, count=10) as response:
        received = collect(response)
    assert [e.get("event") for e in received] == ["batch", None]
    assert bodies(batches(received)[0]) == ["a", "b"]
    with client.sse(stream, seq_num=2, count=10) as response:  # at the tail, may not follow
        assert check(response, 416, "TailResponse")["tail"]["seq_num"] == 2


def test_sse_wait_0_ends_at_the_tail(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}])
    with client.sse(stream, seq_num=0, wait=0) as response:
        assert [e.get("event") for e in collect(response)] == ["batch", None]
    with client.sse(stream, seq_num=1, wait=0) as response:  # at the tail: no 416, it just ends
        assert collect(response) == [{"data": "[DONE]"}]
    check(client.read(stream, seq_num=1, wait=0), 416, "TailResponse")  # a unary read at the tail may not wait


def test_sse_wait_ends_an_idle_session(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}])
    started = time.monotonic()
    with client.sse(stream, seq_num=0, wait=1) as response:
        received = collect(response)
    assert 0.9 < time.monotonic() - started < 3
    kinds = [e.get("event") for e in received]
    assert kinds[0] == "batch" and kinds[-1] is None and set(kinds[1:-1]) == {"ping"}
    assert len(kinds) >= 4  # heartbeats every 0.2 s while idle


def test_sse_last_event_id_resumes_after_the_last_record(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": str(i)} for i in range(6)])
    with client.sse(stream, headers={"Last-Event-ID": "1,2,18"}, seq_num=0, count=4) as response:
        received = collect(response)
    found = batches(received)
    assert [r["seq_num"] for r in found[0]["records"]] == [2, 3]  # count 4 - 2 already delivered
    assert received[0]["id"] == "3,2,18"  # counters restart on each connection
    with client.sse(stream, headers={"Last-Event-ID": "3,4,36"}, tail_offset=1, bytes=54) as response:
        assert [r["seq_num"] for r in batches(collect(response))[0]["records"]] == [4, 5]
    for bad in ("1,2", "a,b,c", "1,2,3,4", "-1,0,0", ""):
        with client.sse(stream, headers={"Last-Event-ID": bad}, seq_num=0) as response:
            error(response, 400, "bad_header")


def test_sse_errors_before_streaming_are_json(server: S2Server, client: Client, manual_basin: str, stream: str) -> None:
    with client.sse(stream, seq_num=5) as response:
        check(response, 416, "TailResponse")
    with client.sse(stream, seq_num=0, tail_offset=0) as response:
        error(response, 422, "invalid")
    with client.sse(stream, seq_num=0, headers={"s2-basin": manual_basin}) as response:
        error(response, 404, "stream_not_found")


def test_sse_error_event_ends_the_session(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": "a"}])
    received: list[dict[str, str]] = []
    with client.sse(stream, seq_num=0) as response:
        for event in events(response):
            received.append(event)
            if event.get("event") == "ping":
                check(client.request("DELETE", f"/v1/streams/{stream}"), 202)
    assert received[-1]["event"] == "error"
    assert json.loads(received[-1]["data"])["code"] == "stream_not_found"
    assert {"data": "[DONE]"} not in received


def test_sse_base64_format(client: Client, stream: str) -> None:
    client.ok_append(stream, [{"body": b64(b"\xff\x01")}], fmt="base64")
    with client.sse(stream, headers={"s2-format": "base64"}, seq_num=0, count=1) as response:
        assert batches(collect(response))[0]["records"][0]["body"] == b64(b"\xff\x01")


def test_concurrent_sse_sessions_each_get_every_record(server: S2Server, client: Client, stream: str) -> None:
    ready = threading.Barrier(6, timeout=10)

    def follow() -> list[str]:
        got: list[str] = []
        with Client(server) as reader, reader.sse(stream, seq_num=0, count=3, wait=5) as response:
            for event in events(response):
                if event.get("event") == "ping" and not got:
                    ready.wait()
                if event.get("event") == "batch":
                    got.extend(bodies(json.loads(event["data"])))
        return got

    with ThreadPoolExecutor(max_workers=5) as pool:
        futures = [pool.submit(follow) for _ in range(5)]
        ready.wait()
        for body in ("x", "y", "z"):
            client.ok_append(stream, [{"body": body}])
        assert [f.result(timeout=10) for f in futures] == [["x", "y", "z"]] * 5


# -- faults ------------------------------------------------------------------


def test_fault_status_answers_instead_of_handling(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("append", status=429, retry_after_ms=250)
    for _ in range(3):  # no `times`: until cleared
        response = client.append(stream, [{"body": "x"}])
        assert error(response, 429, "rate_limited") == "injected fault: rate_limited"
        assert response.headers["retry-after-ms"] == "250"
    assert client.tail(stream) == 0  # nothing was appended
    server.faults.clear()
    client.ok_append(stream, [{"body": "x"}])


@pytest.mark.parametrize(
    ("status", "code", "expected_status", "expected_code"),
    [
        (500, None, 500, "other"),
        (503, None, 503, "unavailable"),
        (409, None, 409, "transaction_conflict"),
        (408, None, 408, "request_timeout"),
        (None, "hot_server", 502, "hot_server"),
        (503, "server_draining", 503, "server_draining"),
        (418, "teapot", 418, "teapot"),
    ],
)
def test_fault_codes(
    server: S2Server,
    client: Client,
    stream: str,
    status: int | None,
    code: str | None,
    expected_status: int,
    expected_code: str,
) -> None:
    server.faults.add("check_tail", status=status, code=code, message="boom", times=1)
    response = client.get(records_path(stream) + "/tail")
    assert error(response, expected_status, expected_code) == "boom"
    assert "retry-after-ms" not in response.headers
    client.tail(stream)


def test_faults_match_by_operation_stream_and_times(server: S2Server, client: Client, stream: str) -> None:
    other = f"{stream}-other"
    server.faults.add("read", stream, status=503, times=2)
    for _ in range(2):
        check(client.read(other, seq_num=0), 416, "TailResponse")  # a read of another stream: not 503
        client.ok_append(stream, [{}])  # another operation on the faulty stream
    assert [f.times for f in server.faults.active()] == [2]
    error(client.read(stream, seq_num=0), 503, "unavailable")
    error(client.read(stream, seq_num=0), 503, "unavailable")
    assert server.faults.active() == []
    assert len(client.ok_read(stream, seq_num=0)["records"]) == 2


def test_faults_for_management_operations(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("create_stream", stream, status=500, times=1)
    server.faults.add("create_basin", code="rate_limited", times=1)
    server.faults.add("ensure_stream", status=503, times=1)
    error(client.request("POST", "/v1/streams", json={"stream": stream}), 500, "other")
    check(client.request("POST", "/v1/streams", json={"stream": stream}), 201, "StreamInfo")
    error(client.request("POST", "/v1/basins", json={"basin": "never-created"}), 429, "rate_limited")
    error(client.request("PUT", f"/v1/streams/{stream}-2"), 503, "unavailable")
    check(client.request("PUT", f"/v1/streams/{stream}-2"), 201, "StreamInfo")
    error(client.get("/v1/basins/never-created"), 404, "basin_not_found")


def test_latency_faults_delay_then_handle(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("append", stream, latency=0.3, times=1)
    server.faults.add(latency=0.2, times=1)  # any operation: adds up with the first
    started = time.monotonic()
    client.ok_append(stream, [{"body": "slow"}])
    assert 0.5 <= time.monotonic() - started < 2
    assert server.faults.active() == []  # both used up: the next request is not delayed
    assert bodies(client.ok_read(stream, seq_num=0)) == ["slow"]


def test_drop_closes_the_connection_without_handling(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("append", stream, drop=True, times=1)
    with pytest.raises(requests.ConnectionError):
        client.append(stream, [{"body": "lost"}])
    assert client.tail(stream) == 0
    client.ok_append(stream, [{"body": "kept"}])


def test_drop_after_commit_appends_then_closes(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("append", stream, drop_after_commit=True, times=1)
    with pytest.raises(requests.ConnectionError):
        client.append(stream, [{"body": "landed"}], match_seq_num=0)
    assert bodies(client.ok_read(stream, seq_num=0)) == ["landed"]
    retry = client.append(stream, [{"body": "landed"}], match_seq_num=0)
    assert check(retry, 412, "AppendConditionFailed") == {"seq_num_mismatch": 1}


def test_the_first_matching_terminal_fault_applies(server: S2Server, client: Client, stream: str) -> None:
    server.faults.add("check_tail", status=503, times=1)
    server.faults.add("check_tail", status=500, times=1)
    error(client.get(records_path(stream) + "/tail"), 503, "unavailable")
    error(client.get(records_path(stream) + "/tail"), 500, "other")
    client.tail(stream)


def test_fault_counts_are_exact_under_concurrency(server: S2Server, stream: str) -> None:
    server.faults.add("check_tail", stream, status=503, times=10)

    def status() -> int:
        with requests.Session() as s:
            return s.get(
                server.url + records_path(stream) + "/tail", headers={"s2-basin": BASIN}, timeout=TIMEOUT
            ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: status(), range(30)))
    assert (statuses.count(503), statuses.count(200)) == (10, 20)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"op": "no_such_op"},
        {"status": 412},
        {"status": 416},
        {"status": 200},
        {"status": 418},
        {"code": "made_up"},
        {"status": 500, "drop": True},
        {"drop": True, "drop_after_commit": True, "op": "append"},
        {"drop_after_commit": True},
        {"drop_after_commit": True, "op": "read"},
        {"times": 0},
        {"latency": -1},
        {"retry_after_ms": 5},
        {"message": "no status"},
        {"stream": 5},
        {"drop": "yes"},
    ],
)
def test_nonsense_faults_are_refused(server: S2Server, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        server.faults.add(**kwargs)
    assert server.faults.active() == []


def test_every_operation_id_of_the_spec_is_known() -> None:
    spec = json.loads(SPEC_PATH.read_text())
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values() if "operationId" in op}
    assert ids == OPERATIONS


def test_faults_over_http(server: S2Server, client: Client, stream: str) -> None:
    admin = server.url + "/_faults"
    with requests.Session() as s:
        added = s.post(admin, json={"op": "append", "stream": stream, "status": 503, "times": 2}, timeout=TIMEOUT)
        assert added.status_code == 201
        assert added.json() == {
            "op": "append",
            "stream": stream,
            "status": 503,
            "code": "unavailable",
            "message": None,
            "retry_after_ms": None,
            "latency": 0.0,
            "drop": False,
            "drop_after_commit": False,
            "times": 2,
        }
        error(client.append(stream, [{}]), 503, "unavailable")
        listed = s.get(admin, timeout=TIMEOUT).json()
        assert [(f["op"], f["times"]) for f in listed["faults"]] == [("append", 1)]
        s.post(admin, json={"op": "read", "drop": True}, timeout=TIMEOUT).close()
        assert len(server.faults.active()) == 2
        assert s.delete(admin, timeout=TIMEOUT).json() == {"cleared": 2}
        assert s.get(admin, timeout=TIMEOUT).json() == {"faults": []}
        error(s.post(admin, json={"op": "nope"}, timeout=TIMEOUT), 422, "invalid")
        error(s.post(admin, json={"opp": "append"}, timeout=TIMEOUT), 400, "bad_json")
        error(s.post(admin, data=b"{", headers={"Content-Type": "application/json"}, timeout=TIMEOUT), 400, "bad_json")
        error(s.put(admin, timeout=TIMEOUT), 405, "method_not_allowed")
    client.ok_append(stream, [{}])


# -- the server object and the command line -------------------------------------


def test_env_points_s2_client_at_the_server(server: S2Server, stream: str) -> None:
    env = server.env()
    assert env == {
        "S2_ACCESS_TOKEN": "local",
        "S2_BASIN": BASIN,
        "S2_ACCOUNT_ENDPOINT": server.url,
        "S2_BASIN_ENDPOINT": server.url,
    }
    assert server.env("second-basin")["S2_BASIN"] == "second-basin"
    assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
    with S2Client(
        access_token=env["S2_ACCESS_TOKEN"],
        basin="second-basin",
        account_endpoint=env["S2_ACCOUNT_ENDPOINT"],
        basin_endpoint=env["S2_BASIN_ENDPOINT"],
    ) as s2:
        s2.ensure_stream(stream)
        s2.append(stream, [Record(b"\xff"), Record.fence("w")])
        assert [r.body for r in s2.read(stream, seq_num=0).records] == [b"\xff", b"w"]
        assert s2.check_tail(stream).seq_num == 2
    assert server.basin_log("second-basin").check_tail(stream).seq_num == 2
    assert server.basin_log(BASIN).list_streams(prefix=stream) == ([], False)


def test_server_object_contract() -> None:
    with pytest.raises(ValueError):
        S2Server(basins=("Not Valid",))
    with pytest.raises(TypeError):
        S2Server(basins="test-basin")
    with pytest.raises(ValueError):
        S2Server(basins=()).env()
    server = S2Server(basins=())
    server.stop()  # never started: nothing to do
    with server:
        with pytest.raises(RuntimeError):
            server.start()
        with requests.Session() as s:
            assert s.get(server.url + "/v1/basins", timeout=TIMEOUT).json() == {"basins": [], "has_more": False}
    with pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(requests.ConnectionError), requests.Session() as s:
        s.get(server.url + "/health", timeout=TIMEOUT)


def test_stop_is_prompt_with_open_long_polls_sessions_and_idle_connections() -> None:
    server = S2Server(heartbeat_interval=30).start()  # heartbeats would not wake anything in time
    outcomes: list[str] = []
    lock = threading.Lock()

    def long_poll() -> None:
        with requests.Session() as s:
            try:
                response = s.get(
                    server.url + records_path("idle"),
                    params={"seq_num": 0, "wait": 60},
                    headers={"s2-basin": BASIN},
                    timeout=(3, 30),
                )
                outcome = f"{response.status_code}"
            except requests.RequestException:
                outcome = "disconnected"
        with lock:
            outcomes.append(outcome)

    def session() -> None:
        with requests.Session() as s:
            try:
                with s.get(
                    server.url + records_path("idle"),
                    params={"seq_num": 0},
                    headers={"s2-basin": BASIN, "Accept": "text/event-stream"},
                    stream=True,
                    timeout=(3, 30),
                ) as response:
                    kinds = [e.get("event") for e in events(response)]
                outcome = kinds[-1] or "done"
            except requests.RequestException:
                outcome = "disconnected"
        with lock:
            outcomes.append(outcome)

    idle = http.client.HTTPConnection(server.host, server.port, timeout=5)
    threads = [threading.Thread(target=long_poll) for _ in range(5)] + [
        threading.Thread(target=session) for _ in range(3)
    ]
    try:
        idle.request("GET", "/health")
        idle.getresponse().read()  # a keep-alive connection stays open
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads)
        assert len(outcomes) == 8 and set(outcomes) <= {"503", "error", "disconnected"}, outcomes
    finally:
        idle.close()
        server.stop()


def _ready_line(proc: subprocess.Popen[str], timeout: float = 15) -> str:
    assert proc.stdout is not None
    readable, _, _ = select.select([proc.stdout], [], [], timeout)
    assert readable, "the server printed nothing"
    return proc.stdout.readline().strip()


@pytest.mark.parametrize(
    ("args", "basin", "stop_signal"),
    [
        (["--basin", "cli-basin-1", "--heartbeat", "0.5"], "cli-basin-1", signal.SIGTERM),
        (["--verbose"], "resumable-stream-dev", signal.SIGINT),
    ],
)
def test_command_line_server(args: list[str], basin: str, stop_signal: signal.Signals) -> None:
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--port", "0", *args]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            line = _ready_line(proc)
            assert line.startswith("READY http://127.0.0.1:") and not line.endswith(":0"), line
            url = line.split(" ", 1)[1]
            with requests.Session() as s:
                s.headers["Authorization"] = "Bearer secret-token-123"
                assert s.get(url + "/health", timeout=TIMEOUT).text == "OK"
                listed = s.get(url + "/v1/basins", timeout=TIMEOUT).json()
                assert [b["name"] for b in listed["basins"]] == [basin]
                ack = s.post(
                    url + records_path("cli"),
                    json={"records": [{"body": "x"}]},
                    headers={"s2-basin": basin},
                    timeout=TIMEOUT,
                )
                assert check(ack, 200, "AppendAck")["end"]["seq_num"] == 1
            proc.send_signal(stop_signal)
            assert proc.wait(timeout=10) == 0
            assert proc.stdout is not None and proc.stderr is not None
            assert proc.stdout.read() == ""  # one line, READY
            log = proc.stderr.read()
            if "--verbose" in args:
                assert '"GET /health HTTP/1.1" 200' in log and "secret-token-123" not in log
            else:
                assert log == ""  # requests are logged at DEBUG only
        finally:
            proc.kill()


def test_command_line_rejects_a_bad_basin() -> None:
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--basin", "Bad Basin"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "invalid basin name" in done.stderr and done.stdout == ""


def _h2_response_headers(sock: socket.socket, conn: Any, timeout: float = 10) -> bytes:
    """Read until the response headers of stream 1 arrived; the bytes read."""
    import h2.events

    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
        if any(isinstance(e, h2.events.ResponseReceived) for e in conn.receive_data(chunk)):
            return received
    raise AssertionError("the S2S session was not answered in time")


def _h2_read_session(url: str, path: str) -> tuple[socket.socket, Any]:
    """Open an S2S read session over HTTP/2 with the h2 library; the socket and the connection."""
    import h2.config
    import h2.connection

    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "local")]
    headers += [("content-type", "s2s/proto"), ("s2-basin", "resumable-stream-dev")]
    conn.send_headers(1, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock, conn


def test_sigterm_ends_long_polls_and_sessions_within_a_second_and_departures_are_quiet() -> None:
    command = [sys.executable, "-m", "resumable_stream.testing.server", "--verbose", "--heartbeat", "30"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        try:
            url = _ready_line(proc).split(" ", 1)[1]
            headers = {"s2-basin": "resumable-stream-dev"}
            # A long-polling client that leaves before its answer: the server's write fails.
            leaver = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5)
            target = records_path("quiet") + "?seq_num=0&wait=30"
            request = f"GET {target} HTTP/1.1\r\ns2-basin: {headers['s2-basin']}\r\n\r\n"
            leaver.sendall(request.encode())
            time.sleep(0.3)
            leaver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset on close
            leaver.close()
            with requests.Session() as s:
                s.post(url + records_path("quiet"), json={"records": [{}]}, headers=headers, timeout=TIMEOUT).close()
            # Now open what has to end at shutdown: long-polls, an SSE session and an S2S session over HTTP/2.
            outcomes: list[str] = []

            def long_poll() -> None:
                with requests.Session() as s:
                    params = {"seq_num": 0, "wait": 60}
                    response = s.get(url + records_path("idle"), params=params, headers=headers, timeout=(3, 30))
                    outcomes.append(str(response.status_code))

            def sse() -> None:
                with requests.Session() as s, s.get(
                    url + records_path("idle"),
                    params={"seq_num": 0},
                    headers={**headers, "Accept": "text/event-stream"},
                    stream=True,
                    timeout=(3, 30),
                ) as response:
                    outcomes.append([e.get("event") for e in events(response)][-1] or "done")

            threads = [threading.Thread(target=long_poll) for _ in range(3)] + [threading.Thread(target=sse)]
            for thread in threads:
                thread.start()
            h2_sock, h2_conn = _h2_read_session(url, records_path("idle") + "?seq_num=0")
            received = _h2_response_headers(h2_sock, h2_conn)  # the session is open (however loaded the machine)
            time.sleep(0.5)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert time.monotonic() - started < 1.0
            for thread in threads:
                thread.join(5)
            assert sorted(outcomes) == ["503", "503", "503", "error"], outcomes  # answered, not cut off
            h2_sock.settimeout(5)
            while chunk := h2_sock.recv(65536):
                received += chunk
            assert b'"unavailable"' in received  # the S2S session ended with a terminal frame
            h2_sock.close()
            assert proc.stderr is not None
            log = proc.stderr.read()
            assert "Traceback" not in log and "client left before its response was sent" in log, log
        finally:
            proc.kill()
