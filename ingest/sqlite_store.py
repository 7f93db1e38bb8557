"""Embedded store: SQLite in WAL mode in the data directory, the default with no database.

All access goes through one worker thread (SQLite connections are not shared across threads
and writes serialize anyway), so the event loop never blocks on disk. Readings are inserted
with ``INSERT OR IGNORE`` against the (point_id, ts) key: a replayed batch counts duplicates.
Rollups are computed at query time (an embedded store serves one mine's screens and short
queries; the PostgreSQL backend keeps rollup tables for regulators' long ranges).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from minewatch.auth import User
from minewatch.records import AlarmRecord, CommandRecord, DeadLetter, IncidentRecord
from minewatch.store import (
    GENESIS_HASH,
    RESOLUTION_S,
    AlarmQuery,
    CommandQuery,
    HistoryQuery,
    IncidentQuery,
    JournalRow,
    ReadingRow,
    Retention,
    Where,
    WriteResult,
    alarm_where,
    command_where,
    incident_where,
    journal_hash,
    normalise,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    point_id TEXT NOT NULL,
    ts REAL NOT NULL,
    value REAL,
    quality INTEGER NOT NULL,
    received_at REAL NOT NULL,
    drill INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (point_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    point_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    raised_at REAL NOT NULL,
    drill INTEGER NOT NULL DEFAULT 0,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_raised ON alarms (raised_at);
CREATE INDEX IF NOT EXISTS alarms_point ON alarms (point_id, raised_at);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    issued_at REAL NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    alarm_id TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_issued ON commands (issued_at);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    mines TEXT NOT NULL,
    created_at REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    drill INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_opened ON incidents (opened_at);
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    subject TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    key TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS dead_letters (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_at ON dead_letters (at);
CREATE TABLE IF NOT EXISTS journal_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
"""


def _in(column: str, values: tuple, args: list) -> str:
    args.extend(values)
    return f" AND {column} IN ({','.join('?' * len(values))})"


class SqliteStore:
    mode = "sqlite"

    def __init__(self, path: Path, retention: Retention | None = None) -> None:
        self.path = Path(path)
        self.retention = retention or Retention()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

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
            db.executemany("INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        inserted = db.total_changes - before
        return WriteResult(inserted, len(rows) - inserted)

    async def history(self, q: HistoryQuery) -> list:
        return await self._run(self._history, q)

    def _history(self, q: HistoryQuery) -> list:
        if not q.point_ids:
            return []
        args: list[Any] = [q.t_from, q.t_to]
        if q.resolution == "raw":
            sql = ("SELECT point_id, ts, value, quality, received_at, drill FROM readings "
                   "WHERE ts >= ? AND ts < ?" + _in("point_id", q.point_ids, args))
            if not q.include_drill:
                sql += " AND drill = 0"
            if q.after is not None:
                sql += " AND (ts > ? OR (ts = ? AND point_id > ?))"
                args += [q.after[0], q.after[0], q.after[1]]
            sql += " ORDER BY ts, point_id LIMIT ?"
            args.append(q.limit)
            return [(p, t, v, qu, rx, bool(d)) for p, t, v, qu, rx, d in
                    self.db.execute(sql, args)]
        width = RESOLUTION_S[q.resolution]
        inner = ("SELECT point_id, CAST(ts / ? AS INTEGER) * ? AS bucket, min(value) AS vmin, "
                 "max(value) AS vmax, avg(value) AS vavg, count(value) AS n, "
                 "max(ts) AS last_ts FROM readings WHERE ts >= ? AND ts < ? AND drill = 0 "
                 "AND quality IN (0, 3) AND value IS NOT NULL")
        args = [width, width, q.t_from, q.t_to]
        inner += _in("point_id", q.point_ids, args) + " GROUP BY point_id, bucket"
        sql = (f"SELECT b.point_id, b.bucket, b.vmin, b.vmax, b.vavg, r.value, b.n, "
               f"(SELECT count(*) FROM alarms a WHERE a.point_id = b.point_id AND a.drill = 0 "
               f"AND a.raised_at >= b.bucket AND a.raised_at < b.bucket + {width}) "
               f"FROM ({inner}) b JOIN readings r ON r.point_id = b.point_id AND r.ts = b.last_ts"
               " WHERE 1=1")
        if q.after is not None:
            sql += " AND (b.bucket > ? OR (b.bucket = ? AND b.point_id > ?))"
            args += [q.after[0], q.after[0], q.after[1]]
        sql += " ORDER BY b.bucket, b.point_id LIMIT ?"
        args.append(q.limit)
        return [(p, float(b), lo, hi, avg, last, n, al) for p, b, lo, hi, avg, last, n, al in
                self.db.execute(sql, args)]

    # --- alarms and commands -------------------------------------------------------------
    async def save_alarm(self, alarm: AlarmRecord) -> None:
        await self._run(self._save_alarm, normalise(alarm.to_dict()))

    def _save_alarm(self, rec: dict) -> None:
        self.db.execute(
            "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "state = excluded.state, record = excluded.record",
            (rec["id"], rec["point_id"], rec["kind"], rec["state"], rec["raised_at"],
             int(rec["drill"]), json.dumps(rec, ensure_ascii=False)))

    async def alarms(self, q: AlarmQuery) -> list[AlarmRecord]:
        return await self._run(self._alarms, q)

    def _alarms(self, q: AlarmQuery) -> list[AlarmRecord]:
        w = alarm_where(q, Where("?"))
        rows = self.db.execute(f"SELECT record FROM alarms WHERE {w.sql} "
                               "ORDER BY raised_at DESC, id DESC LIMIT ?", [*w.args, q.limit])
        return [AlarmRecord.from_dict(json.loads(r[0])) for r in rows]

    async def save_command(self, command: CommandRecord) -> None:
        await self._run(self._save_command, command)

    def _save_command(self, cmd: CommandRecord) -> None:
        self.db.execute(
            "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "record = excluded.record",
            (cmd.id, cmd.issued_at, cmd.action, cmd.target, cmd.alarm_id,
             json.dumps(normalise(cmd.to_dict()), ensure_ascii=False)))

    async def commands(self, q: CommandQuery) -> list[CommandRecord]:
        return await self._run(self._commands, q)

    def _commands(self, q: CommandQuery) -> list[CommandRecord]:
        w = command_where(q, Where("?"))
        rows = self.db.execute(f"SELECT record FROM commands WHERE {w.sql} "
                               "ORDER BY issued_at DESC, id DESC LIMIT ?", [*w.args, q.limit])
        return [CommandRecord.from_dict(json.loads(r[0])) for r in rows]

    # --- incidents -------------------------------------------------------------------------
    async def save_incident(self, incident: IncidentRecord) -> None:
        await self._run(self._save_incident, incident)

    def _save_incident(self, inc: IncidentRecord) -> None:
        # The newest ``updated_at`` wins (an equal one overwrites): an older record replayed
        # from the spool never undoes a newer state.
        self.db.execute(
            "INSERT INTO incidents (id, kind, state, opened_at, updated_at, drill, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "kind = excluded.kind, state = excluded.state, opened_at = excluded.opened_at, "
            "updated_at = excluded.updated_at, drill = excluded.drill, data = excluded.data "
            "WHERE incidents.updated_at <= excluded.updated_at",
            (inc.id, inc.kind, inc.state, inc.opened_at, inc.updated_at, int(inc.drill),
             json.dumps(normalise(inc.data), ensure_ascii=False)))

    async def incidents(self, q: IncidentQuery) -> list[IncidentRecord]:
        return await self._run(self._incidents, q)

    def _incidents(self, q: IncidentQuery) -> list[IncidentRecord]:
        w = incident_where(q, Where("?"))
        rows = self.db.execute(
            "SELECT id, kind, state, opened_at, updated_at, drill, data FROM incidents "
            f"WHERE {w.sql} ORDER BY opened_at DESC, id DESC LIMIT ?", [*w.args, q.limit])
        return [IncidentRecord(i, k, s, o, u, bool(d), json.loads(data))
                for i, k, s, o, u, d, data in rows]

    # --- journal ---------------------------------------------------------------------------
    async def append_journal(self, at: float, event: str, subject: str, data: dict[str, Any],
                             key: str) -> JournalRow | None:
        return await self._run(self._append_journal, at, event, subject, normalise(data), key)

    def _last(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1"
                              ).fetchone()
        return row if row else self._anchor()

    def _append_journal(self, at, event, subject, data, key) -> JournalRow | None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("SELECT 1 FROM journal WHERE key = ?", (key,)).fetchone():
                db.execute("COMMIT")
                return None
            last_seq, last_hash = self._last()
            seq = last_seq + 1
            digest = journal_hash(seq, at, event, subject, data, last_hash)
            db.execute("INSERT INTO journal VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (seq, at, event, subject, json.dumps(data, ensure_ascii=False),
                        last_hash, digest, key))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return JournalRow(seq, at, event, subject, data, last_hash, digest)

    async def journal(self, after_seq: int = 0, limit: int = 10_000,
                      events: Collection[str] | None = None) -> list[JournalRow]:
        return await self._run(self._journal, after_seq, limit, events)

    def _journal(self, after_seq, limit, events):
        where, args = "seq > ?", [after_seq]
        if events is not None:
            where += f" AND event IN ({', '.join('?' * len(events))})"
            args += list(events)
        rows = self.db.execute(
            "SELECT seq, at, event, subject, data, prev_hash, hash FROM journal "
            f"WHERE {where} ORDER BY seq LIMIT ?", (*args, limit))
        return [JournalRow(s, a, e, su, json.loads(d), p, h) for s, a, e, su, d, p, h in rows]

    async def journal_anchor(self) -> tuple[int, str]:
        return await self._run(self._anchor)

    def _anchor(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM journal_anchor WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else (0, GENESIS_HASH)

    # --- dead letters ----------------------------------------------------------------------
    async def save_dead_letter(self, letter: DeadLetter) -> None:
        await self._run(lambda: self.db.execute(
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
            (letter.key, letter.at, letter.source, letter.reason, letter.detail,
             letter.payload)))

    # --- users ---------------------------------------------------------------------------------
    async def save_user(self, user: User) -> None:
        await self._run(lambda: self.db.execute(
            "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?, ?)",
            (user.name, user.role, user.password_hash, json.dumps(user.mines),
             user.created_at, int(user.disabled))))

    async def user(self, name: str) -> User | None:
        found = await self._run(self._users, name)
        return found[0] if found else None

    async def users(self) -> list[User]:
        return await self._run(self._users, None)

    def _users(self, name: str | None) -> list[User]:
        sql = "SELECT name, role, password_hash, mines, created_at, disabled FROM users"
        rows = self.db.execute(sql + " WHERE name = ?", (name,)) if name is not None else \
            self.db.execute(sql + " ORDER BY name")
        return [User(n, r, h, json.loads(m), c, bool(d)) for n, r, h, m, c, d in rows]

    async def dead_letters(self, t_from: float | None, t_to: float | None,
                           limit: int) -> list[DeadLetter]:
        lo = -1e300 if t_from is None else t_from
        hi = 1e300 if t_to is None else t_to
        rows = await self._run(lambda: self.db.execute(
            "SELECT key, at, source, reason, detail, payload FROM dead_letters "
            "WHERE at >= ? AND at < ? ORDER BY at DESC LIMIT ?", (lo, hi, limit)).fetchall())
        return [DeadLetter(*r) for r in rows]

    # --- upkeep -----------------------------------------------------------------------------
    async def maintain(self, now: float) -> dict[str, Any]:
        return await self._run(self._maintain, now)

    def _maintain(self, now: float) -> dict[str, Any]:
        db, r = self.db, self.retention
        raw_cut = now - r.raw_days * 86400
        rec_cut = now - r.records_days * 86400
        db.execute("BEGIN IMMEDIATE")
        try:
            # Per point through the primary key (an index skip-scan written as a recursive
            # query) instead of a full scan or a second index on ts that every insert pays for.
            points = [p for (p,) in db.execute(
                "WITH RECURSIVE p(id) AS (SELECT min(point_id) FROM readings UNION ALL "
                "SELECT (SELECT min(point_id) FROM readings WHERE point_id > p.id) FROM p "
                "WHERE p.id IS NOT NULL) SELECT id FROM p WHERE id IS NOT NULL")]
            readings = sum(db.execute("DELETE FROM readings WHERE point_id = ? AND ts < ?",
                                      (p, raw_cut)).rowcount for p in points)
            alarms = db.execute("DELETE FROM alarms WHERE raised_at < ? AND state = 'cleared'",
                                (rec_cut,)).rowcount
            commands = db.execute("DELETE FROM commands WHERE issued_at < ?",
                                  (rec_cut,)).rowcount
            db.execute("DELETE FROM dead_letters WHERE at < ?", (rec_cut,))
            last = db.execute("SELECT seq, hash FROM journal WHERE at < ? ORDER BY seq DESC "
                              "LIMIT 1", (rec_cut,)).fetchone()
            pruned = 0
            if last:
                db.execute("INSERT INTO journal_anchor VALUES (1, ?, ?) ON CONFLICT (id) DO "
                           "UPDATE SET seq = excluded.seq, hash = excluded.hash", last)
                pruned = db.execute("DELETE FROM journal WHERE seq <= ?", (last[0],)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return {"readings_deleted": readings, "alarms_deleted": alarms,
                "commands_deleted": commands, "journal_pruned": pruned}
