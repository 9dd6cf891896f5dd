"""MemoryLog's own API beyond the Log interface: stream management and configuration, closing."""

from __future__ import annotations

import threading
import time

import pytest

from resumable_stream import BadRequest, Conflict, MemoryLog, NotFound, Record, Unavailable
from resumable_stream.memory import merge_stream_config


def test_config_changes_merge_nested_objects_field_by_field() -> None:
    base = {"timestamping": {"mode": "arrival", "uncapped": True}, "storage_class": "express"}
    assert merge_stream_config(base, {"timestamping": {"uncapped": None}}) == {
        "timestamping": {"mode": "arrival"},
        "storage_class": "express",
    }
    assert merge_stream_config(base, {"timestamping": None, "delete_on_empty": {"min_age_secs": 60}}) == {
        "storage_class": "express",
        "delete_on_empty": {"min_age_secs": 60},
    }
    assert merge_stream_config(base, {"timestamping": {"mode": None, "uncapped": None}}) == {"storage_class": "express"}


def test_streams_get_their_config_on_top_of_the_basin_defaults() -> None:
    log = MemoryLog(default_stream_config={"timestamping": {"mode": "arrival"}})
    log.create_stream("s", {"timestamping": {"uncapped": True}})
    assert log.stream_info("s").config == {"timestamping": {"mode": "arrival", "uncapped": True}}
    log.reconfigure_stream("s", {"timestamping": {"uncapped": None}, "storage_class": "standard"})
    assert log.stream_info("s").config == {"timestamping": {"mode": "arrival"}, "storage_class": "standard"}
    with pytest.raises(Conflict):
        log.create_stream("s")
    with pytest.raises(BadRequest):
        log.reconfigure_stream("s", {"timestamping": {"mode": "sometimes"}})


def test_ensure_stream_leaves_an_existing_config_alone_unless_given_one() -> None:
    log = MemoryLog()
    log.ensure_stream("s", {"timestamping": {"mode": "client-require"}})
    log.ensure_stream("s")
    assert log.stream_info("s").config == {"timestamping": {"mode": "client-require"}}
    with pytest.raises(BadRequest, match="timestamp was required"):
        log.append("s", [Record(b"no timestamp")])
    log.ensure_stream("s", {})  # a config replaces the old one, as S2's PUT does
    assert log.stream_info("s").config == {}
    log.append("s", [Record(b"fine")])


def test_timestamps_follow_the_stream_config() -> None:
    log = MemoryLog()
    log.ensure_stream("prefer")
    future = int(time.time() * 1000) + 3_600_000
    acks = [log.append("prefer", [Record(b"x", timestamp=t)]) for t in (5, 3, future)]
    stamps = [ack.start.timestamp for ack in acks]
    assert stamps[0] == 5 and stamps[1] == 5  # monotonic
    assert stamps[2] < future  # capped at arrival time
    log.ensure_stream("uncapped", {"timestamping": {"uncapped": True}})
    assert log.append("uncapped", [Record(b"x", timestamp=future)]).start.timestamp == future
    log.ensure_stream("arrival", {"timestamping": {"mode": "arrival"}})
    assert log.append("arrival", [Record(b"x", timestamp=5)]).start.timestamp > 5


def test_delete_and_list() -> None:
    log = MemoryLog()
    for name in ("b/1", "a/1", "a/2", "a/3"):
        log.ensure_stream(name)
    infos, more = log.list_streams(prefix="a/", start_after="a/1", limit=1)
    assert [i.name for i in infos] == ["a/2"] and more
    log.delete_stream("a/2")
    assert [i.name for i in log.list_streams(prefix="a/")[0]] == ["a/1", "a/3"]
    with pytest.raises(NotFound):
        log.delete_stream("a/2")


def test_closing_ends_long_polls_and_refuses_more_work() -> None:
    log = MemoryLog()
    log.append("s", [Record(b"x")])
    errors: list[BaseException] = []

    def poll() -> None:
        try:
            log.read("s", seq_num=1, wait=30)
        except Unavailable as exc:
            errors.append(exc)

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    log.close()
    poller.join(timeout=5)
    assert not poller.is_alive() and len(errors) == 1
    with pytest.raises(Unavailable):
        log.append("s", [Record(b"y")])


def test_a_long_fencing_token_is_a_bad_request() -> None:
    with pytest.raises(BadRequest) as info:
        MemoryLog().append("s", [Record(b"x")], fencing_token="t" * 37)
    assert info.value.status == 400
