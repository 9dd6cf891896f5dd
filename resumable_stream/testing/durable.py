"""The local server's durable storage: one SQLite database (WAL mode) in a data directory.

Every change is committed before the server acknowledges it: an append is one
transaction holding its records and the stream's new tail, fencing token and
trim point, so a crash (``kill -9`` included) loses nothing acknowledged and
leaves no batch half-written. ``synchronous=NORMAL``: a commit survives the
process dying at any point; the last commits before an operating-system crash
or power loss may be lost, never half-applied.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..log import Header, SequencedRecord
from .config import BasinConfig, basin_config

__all__ = ["DATABASE_NAME", "LOCK_NAME", "Journal", "SavedStream"]

#: The database file inside the data directory.
DATABASE_NAME = "s2-local.sqlite3"
#: The file a server holds a lock on while it uses the directory.
LOCK_NAME = "s2-local.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS basins (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    basin TEXT NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_seq INTEGER NOT NULL DEFAULT 0,
    last_timestamp INTEGER NOT NULL DEFAULT 0,
    fencing_token TEXT NOT NULL DEFAULT '',
    first_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (basin, name)
);
CREATE TABLE IF NOT EXISTS records (
    stream INTEGER NOT NULL,
    seq_num INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    headers BLOB NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (stream, seq_num)
) WITHOUT ROWID;
"""
_LENGTH = struct.Struct(">I")


def _pack_headers(headers: Sequence[Header]) -> bytes:
    return b"".join(_LENGTH.pack(len(part)) + part for header in headers for part in header)


def _unpack_headers(data: bytes) -> tuple[Header, ...]:
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        parts.append(data[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return tuple(zip(parts[::2], parts[1::2], strict=True))


@dataclass
class SavedStream:
    """A stream as the database holds it."""

    basin: str
    name: str
    config: dict[str, Any]
    created_at: datetime
    next_seq: int
    last_timestamp: int
    fencing_token: str
    records: list[SequencedRecord]


class Journal:
    """The SQLite database of one data directory. Thread-safe: one connection behind a lock.

    :param data_dir: the directory (created if missing) holding :data:`DATABASE_NAME`.
    """

    def __init__(self, data_dir: str | Path) -> None:
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DATABASE_NAME
        # One server per directory: a second one would serve a copy that the first does not see.
        self._owner = (directory / LOCK_NAME).open("a")
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise RuntimeError(f"{directory} is in use by another local S2 server") from None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"<Journal {str(self.path)!r}>"

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.close()  # and with it the directory's lock

    def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- loading -------------------------------------------------------------

    def basins(self) -> Iterator[tuple[str, BasinConfig, datetime]]:
        with self._lock:
            rows = self._db.execute("SELECT name, config, created_at FROM basins").fetchall()
        for name, config, created_at in rows:
            yield name, basin_config(json.loads(config), "config"), datetime.fromisoformat(created_at)

    def streams(self) -> Iterator[SavedStream]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, basin, name, config, created_at, next_seq, last_timestamp, fencing_token FROM streams"
            ).fetchall()
        for stream_id, basin, name, config, created_at, next_seq, last_timestamp, token in rows:
            with self._lock:
                records = [
                    SequencedRecord(seq_num, timestamp, body, _unpack_headers(headers))
                    for seq_num, timestamp, headers, body in self._db.execute(
                        "SELECT seq_num, timestamp, headers, body FROM records WHERE stream = ? ORDER BY seq_num",
                        (stream_id,),
                    )
                ]
            created = datetime.fromisoformat(created_at)
            yield SavedStream(basin, name, json.loads(config), created, next_seq, last_timestamp, token, records)

    # -- changes ---------------------------------------------------------------

    def save_basin(self, name: str, config: BasinConfig, created_at: datetime) -> None:
        sql = "INSERT INTO basins VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET config = excluded.config"
        self._transaction([(sql, (name, json.dumps(config.to_json()), created_at.isoformat()))])

    def delete_basin(self, name: str) -> None:
        self._transaction(
            [
                ("DELETE FROM records WHERE stream IN (SELECT id FROM streams WHERE basin = ?)", (name,)),
                ("DELETE FROM streams WHERE basin = ?", (name,)),
                ("DELETE FROM basins WHERE name = ?", (name,)),
            ]
        )

    def save_stream(self, basin: str, name: str, config: dict[str, Any], created_at: datetime) -> None:
        sql = (
            "INSERT INTO streams (basin, name, config, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (basin, name) DO UPDATE SET config = excluded.config"
        )
        self._transaction([(sql, (basin, name, json.dumps(config), created_at.isoformat()))])

    def delete_stream(self, basin: str, name: str) -> None:
        self._transaction(
            [
                (
                    "DELETE FROM records WHERE stream = (SELECT id FROM streams WHERE basin = ? AND name = ?)",
                    (basin, name),
                ),
                ("DELETE FROM streams WHERE basin = ? AND name = ?", (basin, name)),
            ]
        )

    def appender(self, basin: str, name: str) -> Callable[[Sequence[SequencedRecord], str, int], None]:
        """What a stream calls to commit a batch (see :data:`resumable_stream.memory.Persist`)."""

        def persist(records: Sequence[SequencedRecord], fencing_token: str, first_seq: int) -> None:
            last = records[-1]
            with self._lock:
                db = self._db
                db.execute("BEGIN IMMEDIATE")
                try:
                    (stream_id,) = db.execute(
                        "SELECT id FROM streams WHERE basin = ? AND name = ?", (basin, name)
                    ).fetchone()
                    db.executemany(
                        "INSERT INTO records VALUES (?, ?, ?, ?, ?)",
                        [(stream_id, r.seq_num, r.timestamp, _pack_headers(r.headers), r.body) for r in records],
                    )
                    db.execute(
                        "UPDATE streams SET next_seq = ?, last_timestamp = ?, fencing_token = ?, first_seq = ?"
                        " WHERE id = ?",
                        (last.seq_num + 1, last.timestamp, fencing_token, first_seq, stream_id),
                    )
                    db.execute("DELETE FROM records WHERE stream = ? AND seq_num < ?", (stream_id, first_seq))
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")

        return persist
