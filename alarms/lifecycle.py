"""Alarm lifecycle (ISA-18.2): one record per occurrence, identity = point + kind.

    raise ──▶ unack_active ──ack──▶ ack_active ──clear──▶ cleared
                   │                                ▲
                 clear                              │
                   ▼                                │
              unack_rtn ───────────ack──────────────┘

While an alarm of a (point, kind) is not cleared, the same condition raising again re-arms it
(back to an active state) instead of opening a second alarm, so a condition never becomes
two alarms on the screen. Every transition returns the record so callers persist and journal it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import replace

from minewatch.records import AlarmRecord

SEVERITY = {"power_cut_limit": 1, "cut_unverified": 1, "spool_full": 1, "over_limit": 2,
            "under_limit": 2, "fault": 2, "stale": 2}


class AlarmError(ValueError):
    """An operator action that does not apply to the alarm (unknown id, wrong state)."""


class AlarmBook:
    def __init__(self) -> None:
        self.open: dict[str, AlarmRecord] = {}  # alarm id → not yet cleared
        self._by_key: dict[tuple[str, str], str] = {}  # (point, kind) → open alarm id
        self._seq = itertools.count(1)
        self._prefix = f"{int(time.time() * 1000):x}"

    def restore(self, records: list[AlarmRecord]) -> None:
        """Recover open alarms from the store after a restart."""
        for rec in records:
            if rec.state != "cleared":
                self.open[rec.id] = rec
                self._by_key[(rec.point_id, rec.kind)] = rec.id

    def active(self, point_id: str, kind: str) -> AlarmRecord | None:
        alarm_id = self._by_key.get((point_id, kind))
        return self.open.get(alarm_id) if alarm_id else None

    def raise_(self, point_id: str, kind: str, value: float, at: float, message: str,
               *, drill: bool = False) -> AlarmRecord:
        current = self.active(point_id, kind)
        if current is not None:
            state = "ack_active" if current.state in ("ack_active",) else "unack_active"
            rec = replace(current, state=state, value=value, cleared_at=None, updated_at=at,
                          message=message)
        else:
            rec = AlarmRecord(
                id=f"A{self._prefix}-{next(self._seq)}", point_id=point_id, kind=kind,
                severity=SEVERITY.get(kind, 3), state="unack_active", raised_at=at,
                value=value, message=message, drill=drill, updated_at=at)
        self._keep(rec)
        return rec

    def clear(self, point_id: str, kind: str, at: float) -> AlarmRecord | None:
        current = self.active(point_id, kind)
        if current is None or current.state in ("unack_rtn",):
            return None
        state = "cleared" if current.state == "ack_active" else "unack_rtn"
        rec = replace(current, state=state, cleared_at=at, updated_at=at)
        self._keep(rec)
        return rec

    def ack(self, alarm_id: str, user: str, at: float) -> AlarmRecord:
        current = self.open.get(alarm_id)
        if current is None:
            raise AlarmError(f"alarm {alarm_id} is not open (unknown or already cleared)")
        if current.state == "ack_active":
            raise AlarmError(f"alarm {alarm_id} is already acknowledged")
        state = "ack_active" if current.state == "unack_active" else "cleared"
        rec = replace(current, state=state, acked_at=at, acked_by=user, updated_at=at)
        self._keep(rec)
        return rec

    def _keep(self, rec: AlarmRecord) -> None:
        key = (rec.point_id, rec.kind)
        if rec.state == "cleared":
            self.open.pop(rec.id, None)
            if self._by_key.get(key) == rec.id:
                del self._by_key[key]
        else:
            self.open[rec.id] = rec
            self._by_key[key] = rec.id
