"""The store interface every backend implements (embedded SQLite now, PostgreSQL later).

Kept narrow and backend-neutral: rows in, rows out, times as epoch seconds. Readings are
unique on (point_id, ts) so a replayed batch is counted as duplicates, never stored twice.
The journal is append-only and hash-chained: each row stores the SHA-256 of its own content
and the previous row's hash, so an edited or deleted row breaks the chain.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from minewatch.records import AlarmRecord, CommandRecord

ReadingRow = tuple[str, float, float, int, float]  # point_id, ts, value, quality, received_at
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


@dataclass(frozen=True)
class JournalRow:
    seq: int
    at: float
    event: str
    subject: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


def journal_hash(seq: int, at: float, event: str, subject: str, data: dict, prev: str) -> str:
    body = json.dumps([seq, repr(at), event, subject, data, prev], sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def first_broken(rows: list[JournalRow]) -> int | None:
    """Seq of the first row whose hash or link does not verify, or None if the chain holds."""
    prev = GENESIS_HASH
    expected_seq = 1
    for row in rows:
        if row.seq != expected_seq or row.prev_hash != prev or row.hash != journal_hash(
                row.seq, row.at, row.event, row.subject, row.data, row.prev_hash):
            return row.seq
        prev, expected_seq = row.hash, row.seq + 1
    return None


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def write_readings(self, rows: list[ReadingRow]) -> WriteResult: ...
    async def readings(self, point_id: str, t_from: float, t_to: float,
                       limit: int) -> list[ReadingRow]: ...

    async def save_alarm(self, alarm: AlarmRecord) -> None: ...
    async def alarms(self, state: str | None, t_from: float | None, t_to: float | None,
                     limit: int) -> list[AlarmRecord]: ...

    async def save_command(self, command: CommandRecord) -> None: ...
    async def commands(self, t_from: float | None, t_to: float | None,
                       limit: int) -> list[CommandRecord]: ...

    async def append_journal(self, at: float, event: str, subject: str,
                             data: dict[str, Any]) -> JournalRow: ...
    async def journal(self, after_seq: int = 0, limit: int = 10_000) -> list[JournalRow]: ...
