"""The store interface every backend implements (embedded SQLite, PostgreSQL/TimescaleDB).

Kept narrow and backend-neutral: rows in, rows out, times as epoch seconds. The same test
suite runs against every backend.

- Readings are unique on (point_id, ts): a replayed batch is counted as duplicates, never
  stored twice. Rollups (1 min / 5 min / 1 h: min, max, avg, last, count, alarms raised) cover
  readings of quality ok or out_of_range that are not drill readings, so calibration gas and
  drills never reach a regulator's statistics.
- Writes are idempotent so the durable spool can replay them after a crash: alarms and
  commands are upserts by id, journal entries carry a unique key.
- The journal is append-only and hash-chained: each row stores the SHA-256 of its content and
  the previous row's hash, so an edited or deleted row breaks the chain. Retention may prune
  the oldest rows; the pruned chain's last hash is kept as the anchor the verifier starts from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from minewatch.auth import User
from minewatch.records import AlarmRecord, CommandRecord, DeadLetter, IncidentRecord

# point_id, ts, value, quality, received_at, drill
ReadingRow = tuple[str, float, float | None, int, float, bool]
# point_id, ts, value, quality, received_at, drill
RawRow = tuple[str, float, float | None, int, float, bool]
# point_id, bucket start, min, max, avg, last, count, alarms raised in the bucket
RollupRow = tuple[str, float, float | None, float | None, float | None, float | None, int, int]
Resolution = Literal["raw", "1m", "5m", "1h"]
RESOLUTION_S: dict[str, int] = {"raw": 0, "1m": 60, "5m": 300, "1h": 3600}
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int


@dataclass(frozen=True)
class Retention:
    """Days kept; defaults sit above the regulation minimums (raw 7 d, records 1 y)."""

    raw_days: float = 90
    rollup_days: float = 730
    records_days: float = 730  # alarms, commands, journal


@dataclass(frozen=True)
class HistoryQuery:
    point_ids: tuple[str, ...]
    t_from: float
    t_to: float
    resolution: Resolution = "raw"
    limit: int = 10_000
    after: tuple[float, str] | None = None  # cursor: (ts or bucket, point_id) of the last row
    include_drill: bool = False  # raw only; rollups never include drill readings


@dataclass(frozen=True)
class AlarmQuery:
    state: str | None = None  # a state, "active" (unack/ack active) or "open" (not cleared)
    t_from: float | None = None  # on raised_at
    t_to: float | None = None
    kinds: tuple[str, ...] = ()
    point_ids: tuple[str, ...] = ()
    drill: bool | None = None
    limit: int = 500


@dataclass(frozen=True)
class CommandQuery:
    t_from: float | None = None  # on issued_at
    t_to: float | None = None
    action: str | None = None
    targets: tuple[str, ...] = ()
    alarm_ids: tuple[str, ...] = ()
    limit: int = 500


@dataclass(frozen=True)
class IncidentQuery:
    t_from: float | None = None  # on opened_at
    t_to: float | None = None
    state: str | None = None  # "open" | "closed" | None = both
    ids: tuple[str, ...] = ()
    drill: bool | None = None  # None = both
    limit: int = 500  # newest opened first


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
    body = json.dumps([seq, repr(float(at)), event, subject, data, prev], sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _finite(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    """Strict-JSON round trip (NaN/inf → null) so what is hashed is what a verifier reads."""
    return json.loads(json.dumps(_finite(data), ensure_ascii=False, allow_nan=False,
                                 default=str))


def first_broken(rows: list[JournalRow], anchor: tuple[int, str] = (0, GENESIS_HASH)
                 ) -> int | None:
    """Seq of the first row whose hash or link does not verify, or None if the chain holds.

    ``anchor`` is (seq, hash) of the last pruned row (or the genesis); a gap in seq (a deleted
    row) breaks the chain at the row after the gap.
    """
    prev_seq, prev = anchor
    for row in rows:
        if row.seq != prev_seq + 1 or row.prev_hash != prev or row.hash != journal_hash(
                row.seq, row.at, row.event, row.subject, row.data, row.prev_hash):
            return row.seq
        prev_seq, prev = row.seq, row.hash
    return None


class Where:
    """A WHERE clause for either SQL dialect, so both backends filter records identically.

    ``ph`` is the driver's placeholder ("?" for sqlite3, "%s" for psycopg); ``any_list``
    renders "column IN (…)" for a tuple of values in that dialect.
    """

    def __init__(self, ph: str, base: str = "1=1", args: list[Any] | None = None) -> None:
        self.ph = ph
        self.sql = base
        self.args: list[Any] = list(args or [])

    def add(self, clause: str, *values: Any) -> None:
        """``clause`` uses {} for each value's placeholder."""
        self.sql += " AND " + clause.format(*([self.ph] * len(values)))
        self.args.extend(values)

    def isin(self, column: str, values: tuple) -> None:
        if self.ph == "?":
            self.sql += f" AND {column} IN ({','.join('?' * len(values))})"
            self.args.extend(values)
        else:
            self.sql += f" AND {column} = ANY({self.ph})"
            self.args.append(list(values))


def incident_where(q: IncidentQuery, w: Where) -> Where:
    """The incident filter in either dialect, shared by both backends so they filter alike."""
    if q.t_from is not None:
        w.add("opened_at >= {}", q.t_from)
    if q.t_to is not None:
        w.add("opened_at < {}", q.t_to)
    if q.state:
        w.add("state = {}", q.state)
    if q.ids:
        w.isin("id", q.ids)
    if q.drill is not None:
        w.add("drill = {}", q.drill)
    return w


def alarm_where(q: AlarmQuery, w: Where) -> Where:
    if q.state == "active":
        w.isin("state", ("unack_active", "ack_active"))
    elif q.state == "open":
        w.add("state <> 'cleared'")
    elif q.state:
        w.add("state = {}", q.state)
    if q.t_from is not None:
        w.add("raised_at >= {}", q.t_from)
    if q.t_to is not None:
        w.add("raised_at < {}", q.t_to)
    if q.kinds:
        w.isin("kind", q.kinds)
    if q.point_ids:
        w.isin("point_id", q.point_ids)
    if q.drill is not None:
        w.add("drill = {}", q.drill)
    return w


def command_where(q: CommandQuery, w: Where) -> Where:
    if q.t_from is not None:
        w.add("issued_at >= {}", q.t_from)
    if q.t_to is not None:
        w.add("issued_at < {}", q.t_to)
    if q.action:
        w.add("action = {}", q.action)
    if q.targets:
        w.isin("target", q.targets)
    if q.alarm_ids:
        w.isin("alarm_id", q.alarm_ids)
    return w


class Store(Protocol):
    mode: str  # "sqlite", "postgres-native", "timescaledb", "timescaledb-apache"

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def write_readings(self, rows: list[ReadingRow]) -> WriteResult: ...
    async def history(self, q: HistoryQuery) -> list[RawRow] | list[RollupRow]: ...

    async def save_alarm(self, alarm: AlarmRecord) -> None: ...
    async def alarms(self, q: AlarmQuery) -> list[AlarmRecord]: ...
    async def save_command(self, command: CommandRecord) -> None: ...
    async def commands(self, q: CommandQuery) -> list[CommandRecord]: ...
    async def save_incident(self, incident: IncidentRecord) -> None:
        """Upsert by id (the newest ``updated_at`` wins; an older replayed one is ignored)."""
        ...
    async def incidents(self, q: IncidentQuery) -> list[IncidentRecord]: ...
    async def save_user(self, user: User) -> None:
        """Insert or replace by name (users are per installation, not per mine)."""
        ...
    async def user(self, name: str) -> User | None: ...
    async def users(self) -> list[User]: ...

    async def append_journal(self, at: float, event: str, subject: str, data: dict[str, Any],
                             key: str) -> JournalRow | None:
        """Append unless ``key`` is already journaled (a replay): then return None."""
        ...

    async def journal(self, after_seq: int = 0, limit: int = 10_000,
                      events: Collection[str] | None = None) -> list[JournalRow]:
        """Rows after ``after_seq`` in order; ``events`` keeps only those event names."""
        ...

    async def save_dead_letter(self, letter: DeadLetter) -> None:
        """Idempotent by ``letter.key``."""
        ...

    async def dead_letters(self, t_from: float | None, t_to: float | None,
                           limit: int) -> list[DeadLetter]: ...

    async def journal_anchor(self) -> tuple[int, str]: ...

    async def maintain(self, now: float) -> dict[str, Any]:
        """Retention and rollup upkeep; returns what it did (for logs and health)."""
        ...


async def verify_journal(store: Store, page: int = 10_000) -> tuple[int, int | None]:
    """Walk the whole chain page by page: (rows checked, first broken seq or None)."""
    anchor = await store.journal_anchor()
    checked, after = 0, anchor[0]
    while True:
        rows = await store.journal(after, page)
        if not rows:
            return checked, None
        bad = first_broken(rows, anchor)
        if bad is not None:
            return checked + sum(1 for r in rows if r.seq < bad), bad
        checked += len(rows)
        anchor = (rows[-1].seq, rows[-1].hash)
        after = rows[-1].seq
