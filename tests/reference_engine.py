"""Naive per-reading reference of the engine rules: the oracle the vectorized engine must match.

Written for clarity, one reading at a time with plain Python floats; see alarms/engine.py for
the rules it mirrors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alarms.engine import ALARM_KINDS
from minewatch.readings import Quality


@dataclass
class RefPoint:
    alarm_hi: float
    alarm_lo: float
    cut: float
    restore: float
    deadband: float
    stale_after: float
    ts: float = -math.inf
    seen: float = math.nan
    value: float = math.nan
    active: set[str] = field(default_factory=set)


class ReferenceEngine:
    def __init__(self, limits: list[dict]) -> None:
        self.points = [RefPoint(**lim) for lim in limits]

    def apply(self, slot: int, ts: float, value: float, quality: int,
              received_at: float | None = None) -> list[tuple[int, str, bool, float, float]]:
        p = self.points[slot]
        if not (ts > p.ts and math.isfinite(ts)):
            return []
        before = set(p.active)
        finite = math.isfinite(value)
        if quality in (Quality.OK, Quality.OUT_OF_RANGE) and finite:
            v = value
            if "over_limit" in p.active:
                keep = v >= p.alarm_hi - p.deadband
            else:
                keep = v >= p.alarm_hi
            self._set(p, "over_limit", keep)
            if "under_limit" in p.active:
                keep = v < p.alarm_lo + p.deadband
            else:
                keep = v < p.alarm_lo
            self._set(p, "under_limit", keep)
            if "power_cut_limit" in p.active:
                keep = not (v < p.restore)
            else:
                keep = v >= p.cut
            self._set(p, "power_cut_limit", keep)
        faulty = quality in (Quality.FAULT, Quality.OUT_OF_RANGE) or (
            quality == Quality.OK and not finite)
        self._set(p, "fault", faulty)
        self._set(p, "stale", quality == Quality.STALE)
        p.ts, p.value = ts, value
        if received_at is not None:
            p.seen = received_at
        return self._diff(slot, before, p.active, value, ts)

    def sweep(self, now: float) -> list[tuple[int, str, bool, float, float]]:
        events = []
        for slot, p in enumerate(self.points):
            if "stale" not in p.active and not (p.seen >= now - p.stale_after):
                before = set(p.active)
                p.active.add("stale")
                events += self._diff(slot, before, p.active, p.value, now)
        return events

    @staticmethod
    def _set(p: RefPoint, kind: str, on: bool) -> None:
        if on:
            p.active.add(kind)
        else:
            p.active.discard(kind)

    @staticmethod
    def _diff(slot, before, after, value, ts):
        return [(slot, k, k in after, value, ts) for k in ALARM_KINDS
                if (k in before) != (k in after)]
