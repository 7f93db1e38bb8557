"""Embedded store: SQLite in WAL mode in the data directory, the default with no database.

All access goes through one worker thread (SQLite connections are not shared across threads
and writes serialize anyway), so the event loop never blocks on disk. Readings are inserted
with ``INSERT OR IGNORE`` against the (point_id, ts) key: a replayed batch counts duplicates.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

from minewatch.records import AlarmRecord, CommandRecord
from minewatch.store import (
    GENESIS_HASH,
    JournalRow,
    ReadingRow,
    WriteResult,
    journal_hash,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    point_id TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    quality INTEGER NOT NULL,
    received_at REAL NOT NULL,
    PRIMARY KEY (point_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    point_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms (raised_at);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    issued_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_issued ON commands (issued_at);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

_ALARM_FIELDS = {f.name for f in fields(AlarmRecord)}
_COMMAND_FIELDS = {f.name for f in fields(CommandRecord)}


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._last_hash = GENESIS_HASH
        self._last_seq = 0

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        if row:
            self._last_seq, self._last_hash = row
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    # --- readings ------------------------------------------------------------------------
    async def write_readings(self, rows: list[ReadingRow]) -> WriteResult:
        if not rows:
            return WriteResult(0, 0)
        return await self._run(self._write_readings, rows)

    def _write_readings(self, rows: list[ReadingRow]) -> WriteResult:
        db = self.db
        before = db.total_changes
        db.execute("BEGIN")
        try:
            db.executemany("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        inserted = db.total_changes - before
        return WriteResult(inserted, len(rows) - inserted)

    async def readings(self, point_id: str, t_from: float, t_to: float,
                       limit: int) -> list[ReadingRow]:
        return await self._run(self._readings, point_id, t_from, t_to, limit)

    def _readings(self, point_id, t_from, t_to, limit):
        return self.db.execute(
            "SELECT point_id, ts, value, quality, received_at FROM readings "
            "WHERE point_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
            (point_id, t_from, t_to, limit)).fetchall()

    # --- alarms and commands -------------------------------------------------------------
    async def save_alarm(self, alarm: AlarmRecord) -> None:
        await self._run(self._save_alarm, alarm.to_dict())

    def _save_alarm(self, rec: dict) -> None:
        self.db.execute(
            "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "state = excluded.state, record = excluded.record",
            (rec["id"], rec["point_id"], rec["kind"], rec["state"], rec["raised_at"],
             json.dumps(rec, ensure_ascii=False)))

    async def alarms(self, state: str | None, t_from: float | None, t_to: float | None,
                     limit: int) -> list[AlarmRecord]:
        return await self._run(self._alarms, state, t_from, t_to, limit)

    def _alarms(self, state, t_from, t_to, limit):
        sql, args = "SELECT record FROM alarms WHERE 1=1", []
        if state == "active":
            sql += " AND state IN ('unack_active', 'ack_active')"
        elif state == "open":
            sql += " AND state != 'cleared'"
        elif state:
            sql += " AND state = ?"
            args.append(state)
        if t_from is not None:
            sql += " AND raised_at >= ?"
            args.append(t_from)
        if t_to is not None:
            sql += " AND raised_at < ?"
            args.append(t_to)
        sql += " ORDER BY raised_at DESC LIMIT ?"
        args.append(limit)
        return [AlarmRecord(**{k: v for k, v in json.loads(r[0]).items() if k in _ALARM_FIELDS})
                for r in self.db.execute(sql, args)]

    async def save_command(self, command: CommandRecord) -> None:
        await self._run(self._save_command, command)

    def _save_command(self, cmd: CommandRecord) -> None:
        rec = {k: v for k, v in vars(cmd).items()}
        self.db.execute(
            "INSERT INTO commands VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "record = excluded.record",
            (cmd.id, cmd.issued_at, json.dumps(rec, ensure_ascii=False)))

    async def commands(self, t_from: float | None, t_to: float | None,
                       limit: int) -> list[CommandRecord]:
        return await self._run(self._commands, t_from, t_to, limit)

    def _commands(self, t_from, t_to, limit):
        lo = -1e300 if t_from is None else t_from
        hi = 1e300 if t_to is None else t_to
        rows = self.db.execute(
            "SELECT record FROM commands WHERE issued_at >= ? AND issued_at < ? "
            "ORDER BY issued_at DESC LIMIT ?", (lo, hi, limit))
        return [CommandRecord(**{k: v for k, v in json.loads(r[0]).items()
                                 if k in _COMMAND_FIELDS}) for r in rows]

    # --- journal ---------------------------------------------------------------------------
    async def append_journal(self, at: float, event: str, subject: str,
                             data: dict[str, Any]) -> JournalRow:
        return await self._run(self._append_journal, at, event, subject, data)

    def _append_journal(self, at, event, subject, data) -> JournalRow:
        seq = self._last_seq + 1
        data = json.loads(json.dumps(data, ensure_ascii=False))  # normalise what is hashed
        digest = journal_hash(seq, at, event, subject, data, self._last_hash)
        self.db.execute("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (seq, at, event, subject, json.dumps(data, ensure_ascii=False),
                         self._last_hash, digest))
        row = JournalRow(seq, at, event, subject, data, self._last_hash, digest)
        self._last_seq, self._last_hash = seq, digest
        return row

    async def journal(self, after_seq: int = 0, limit: int = 10_000) -> list[JournalRow]:
        return await self._run(self._journal, after_seq, limit)

    def _journal(self, after_seq, limit):
        rows = self.db.execute(
            "SELECT seq, at, event, subject, data, prev_hash, hash FROM journal "
            "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [JournalRow(s, a, e, su, json.loads(d), p, h) for s, a, e, su, d, p, h in rows]
