"""The local server's state: basins, their streams and configs, in memory or durable in a data directory.

Each stream's records live in a :class:`~resumable_stream.memory_stream.MemoryStream`
(its own lock; the same semantics as the in-process log). With a
:class:`~resumable_stream.testing.durable.Journal`, every change is written
to disk before it is acknowledged, and a new store loads what it holds.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..exceptions import NotFound, Unavailable
from ..log import AppendAck, ReadBatch, ReadSession, Record, SequencedRecord, StreamPosition
from ..memory_stream import MemoryStream
from .config import BasinConfig, basin_reconfigured, check_stream_config, merge_stream_config
from .durable import Journal
from .errors import ApiError, api_error
from .jsonshapes import records_json

__all__ = ["Basin", "BasinLog", "Store", "StreamEntry"]


def _creation_key(token: str | None, config: Any) -> str | None:
    """What makes a create with an ``s2-request-token`` a replay: the same token and the same config."""
    return None if token is None else json.dumps([token, config], sort_keys=True)


def _timestamping(config: Mapping[str, Any]) -> tuple[str, bool]:
    timestamping = config.get("timestamping") or {}
    return timestamping.get("mode") or "client-prefer", bool(timestamping.get("uncapped"))


@dataclass
class StreamEntry:
    """A stream of a basin: its own config (on top of the basin's default), creation time and records."""

    name: str
    config: dict[str, Any]
    created_at: datetime
    stream: MemoryStream
    creation_key: str | None = None

    def set_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.stream.timestamping = _timestamping(config)


@dataclass
class Basin:
    """A basin: its config and streams. Streams are looked up without a lock; creating or deleting one takes it."""

    name: str
    config: BasinConfig
    created_at: datetime
    creation_key: str | None = None
    streams: dict[str, StreamEntry] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Store:
    """Every basin and stream of one server. Thread-safe.

    :param heartbeat_interval: seconds between heartbeats of idle read sessions.
    :param journal: where changes are made durable (and loaded from); ``None`` keeps everything in memory.
    """

    def __init__(self, *, heartbeat_interval: float, journal: Journal | None = None) -> None:
        self.heartbeat_interval = heartbeat_interval
        self._journal = journal
        self._lock = threading.Lock()  # guards the basin table
        self._basins: dict[str, Basin] = {}
        self._closed = False
        if journal is not None:
            self._load(journal)

    def _load(self, journal: Journal) -> None:
        for name, config, created_at in journal.basins():
            self._basins[name] = Basin(name, config, created_at)
        for saved in journal.streams():
            basin = self._basins[saved.basin]
            entry = self._new_entry(basin.name, saved.name, saved.config, saved.created_at)
            entry.stream.restore(
                saved.records,
                next_seq=saved.next_seq,
                last_timestamp=saved.last_timestamp,
                fencing_token=saved.fencing_token,
            )
            basin.streams[saved.name] = entry

    def close(self) -> None:
        """End every long-poll and session, refuse further requests, and close the journal."""
        with self._lock:
            self._closed = True
            basins = list(self._basins.values())
        for basin in basins:
            with basin.lock:
                entries = list(basin.streams.values())
            for entry in entries:
                entry.stream.end(Unavailable("the server is shutting down", code="unavailable"))
        if self._journal is not None:
            self._journal.close()

    def _check_open(self) -> None:
        if self._closed:
            raise api_error("unavailable", "the server is shutting down")

    # -- basins ------------------------------------------------------------

    def basin_or_none(self, name: str) -> Basin | None:
        return self._basins.get(name)

    def basin(self, name: str) -> Basin:
        basin = self._basins.get(name)
        if basin is None:
            raise api_error("basin_not_found", f"basin `{name}` not found")
        return basin

    def list_basins(self, prefix: str, start_after: str, limit: int) -> tuple[list[Basin], bool]:
        with self._lock:
            names = sorted(n for n in self._basins if n.startswith(prefix) and n > start_after)
            return [self._basins[n] for n in names[:limit]], len(names) > limit

    def create_basin(self, name: str, config: BasinConfig, token: str | None) -> tuple[Basin, str]:
        key = _creation_key(token, config.to_json())
        with self._lock:
            self._check_open()
            existing = self._basins.get(name)
            if existing is not None:
                if key is not None and existing.creation_key == key:
                    return existing, "noop"
                raise api_error("resource_already_exists", f"basin `{name}` already exists")
            return self._add_basin(name, config, key), "created"

    def ensure_basin(self, name: str, config: BasinConfig) -> tuple[Basin, str]:
        with self._lock:
            self._check_open()
            basin = self._basins.get(name)
            if basin is None:
                return self._add_basin(name, config, None), "created"
            if basin.config == config:
                return basin, "noop"
            self._set_basin_config(basin, config)
            return basin, "updated"

    def _add_basin(self, name: str, config: BasinConfig, key: str | None) -> Basin:
        basin = Basin(name, config, datetime.now(timezone.utc), key)
        if self._journal is not None:
            self._journal.save_basin(name, config, basin.created_at)
        self._basins[name] = basin
        return basin

    def _set_basin_config(self, basin: Basin, config: BasinConfig) -> None:
        if self._journal is not None:
            self._journal.save_basin(basin.name, config, basin.created_at)
        basin.config = config

    def reconfigure_basin(self, name: str, changes: Any) -> BasinConfig:
        with self._lock:
            basin = self.basin(name)
            self._set_basin_config(basin, basin_reconfigured(basin.config, changes))
            return basin.config

    def delete_basin(self, name: str) -> None:
        with self._lock:
            basin = self.basin(name)
            with basin.lock:
                for entry in basin.streams.values():  # first, so that no append lands after the journal forgets it
                    entry.stream.end(NotFound(f"basin `{name}` not found", status=404, code="basin_not_found"))
            if self._journal is not None:
                self._journal.delete_basin(name)
            del self._basins[name]

    # -- streams -------------------------------------------------------------

    def _new_entry(self, basin: str, name: str, config: dict[str, Any], created_at: datetime) -> StreamEntry:
        persist: Callable[[Sequence[SequencedRecord], str, int], None] | None = None
        if self._journal is not None:
            persist = self._journal.appender(basin, name)
        stream = MemoryStream(name, heartbeat_interval=self.heartbeat_interval, persist=persist, encode=records_json)
        entry = StreamEntry(name, {}, created_at, stream)
        entry.set_config(config)
        return entry

    def _create(self, basin: Basin, name: str, config: dict[str, Any] | None) -> StreamEntry:
        """Add a stream with ``config`` on top of the basin's default. Call with the basin's lock held."""
        self._check_open()
        merged = merge_stream_config(basin.config.default_stream_config, config or {})
        check_stream_config(merged)
        entry = self._new_entry(basin.name, name, merged, datetime.now(timezone.utc))
        if self._journal is not None:
            self._journal.save_stream(basin.name, name, merged, entry.created_at)
        basin.streams[name] = entry
        return entry

    def entry(self, basin: Basin, name: str) -> StreamEntry:
        """A stream; 404 ``stream_not_found`` if it does not exist."""
        entry = basin.streams.get(name)
        if entry is None:
            raise api_error("stream_not_found", f"stream `{name}` in basin `{basin.name}` not found")
        return entry

    def stream(self, basin: Basin, name: str, *, create: bool) -> MemoryStream:
        """The records of stream ``name``, creating it first when ``create`` (the basin's on-append/on-read switch)."""
        entry = basin.streams.get(name)
        if entry is None:
            if not create:
                raise api_error("stream_not_found", f"stream `{name}` in basin `{basin.name}` not found")
            with basin.lock:
                entry = basin.streams.get(name) or self._create(basin, name, None)
        return entry.stream

    def list_streams(self, basin: Basin, prefix: str, start_after: str, limit: int) -> tuple[list[StreamEntry], bool]:
        with basin.lock:
            names = sorted(n for n in basin.streams if n.startswith(prefix) and n > start_after)
            return [basin.streams[n] for n in names[:limit]], len(names) > limit

    def create_stream(
        self, basin: Basin, name: str, config: dict[str, Any], token: str | None
    ) -> tuple[StreamEntry, str]:
        key = _creation_key(token, config)
        with basin.lock:
            existing = basin.streams.get(name)
            if existing is not None:
                if key is not None and existing.creation_key == key:
                    return existing, "noop"
                raise api_error("resource_already_exists", f"stream `{name}` in basin `{basin.name}` already exists")
            entry = self._create(basin, name, config)
            entry.creation_key = key
            return entry, "created"

    def ensure_stream(self, basin: Basin, name: str, config: dict[str, Any]) -> tuple[StreamEntry, str]:
        """S2's ``PUT``: the stream, new or not, ends up with exactly ``config`` on the basin's defaults."""
        with basin.lock:
            existing = basin.streams.get(name)
            if existing is None:
                return self._create(basin, name, config), "created"
            merged = merge_stream_config(basin.config.default_stream_config, config)
            if merged == existing.config:
                return existing, "noop"
            self._set_stream_config(basin, existing, merged)
            return existing, "updated"

    def reconfigure_stream(self, basin: Basin, name: str, changes: Mapping[str, Any]) -> StreamEntry:
        with basin.lock:
            entry = self.entry(basin, name)
            self._set_stream_config(basin, entry, merge_stream_config(entry.config, changes))
            return entry

    def _set_stream_config(self, basin: Basin, entry: StreamEntry, config: dict[str, Any]) -> None:
        check_stream_config(config)
        if self._journal is not None:
            self._journal.save_stream(basin.name, entry.name, config, entry.created_at)
        entry.set_config(config)

    def delete_stream(self, basin: Basin, name: str) -> None:
        """Delete a stream at once; its long-polls and sessions end with 404."""
        with basin.lock:
            entry = self.entry(basin, name)
            entry.stream.end(NotFound(f"stream `{name}` not found", status=404, code="stream_not_found"))
            if self._journal is not None:
                self._journal.delete_stream(basin.name, name)
            del basin.streams[name]


class BasinLog:
    """One basin of a store as an in-process :class:`~resumable_stream.log.Log`, for tests that look behind the API.

    Thread-safe. Streams are created on demand as the basin's config says.
    """

    def __init__(self, store: Store, basin: Basin) -> None:
        self._store = store
        self._basin = basin

    def __repr__(self) -> str:
        return f"<BasinLog {self._basin.name!r}>"

    def _stream(self, name: str, create: bool) -> MemoryStream:
        try:
            return self._store.stream(self._basin, name, create=create)
        except ApiError as exc:
            raise NotFound(str(exc.body.get("message")), status=exc.status, code=exc.body.get("code")) from None

    def append(
        self,
        stream: str,
        records: Sequence[Record],
        *,
        match_seq_num: int | None = None,
        fencing_token: str | None = None,
        timeout: float | None = None,
    ) -> AppendAck:
        """Append one batch (``timeout`` has nothing to bound: it never waits)."""
        target = self._stream(stream, self._basin.config.create_stream_on_append)
        return target.append(records, match_seq_num=match_seq_num, fencing_token=fencing_token)

    def read(self, stream: str, **options: Any) -> ReadBatch:
        return self._stream(stream, self._basin.config.create_stream_on_read).read(**options)

    def read_session(self, stream: str, **options: Any) -> ReadSession:
        return self._stream(stream, self._basin.config.create_stream_on_read).read_session(**options)

    def check_tail(self, stream: str) -> StreamPosition:
        return self._stream(stream, self._basin.config.create_stream_on_read).check_tail()

    def ensure_stream(self, stream: str) -> None:
        self._stream(stream, True)

    def stream_info(self, stream: str) -> StreamEntry:
        """The stream's name, own config and creation time; :class:`NotFound` if it does not exist."""
        self._stream(stream, False)
        return self._store.entry(self._basin, stream)

    def list_streams(
        self, prefix: str = "", start_after: str = "", limit: int = 1000
    ) -> tuple[list[StreamEntry], bool]:
        """Streams whose names start with ``prefix``, after ``start_after``, in name order; and whether more exist."""
        return self._store.list_streams(self._basin, prefix, start_after, limit)

    def close(self) -> None:
        """Nothing to release: the server owns the basin."""
