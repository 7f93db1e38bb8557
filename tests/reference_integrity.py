"""Naive per-reading reference of the integrity detectors: the oracle for alarms/integrity.py.

Plain Python over the reference window (tests/reference_trend.py); see alarms/integrity.py for
the rules. Per reading: the calibration flags. Per batch:
every point touched, or whose upstream/downstream neighbour was touched, is re-evaluated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alarms.integrity import REASONS
from minewatch.readings import Quality
from tests.reference_trend import RefWindow


@dataclass
class RefIntegrityPoint:
    flat_var_eps: float
    flat_min_samples: float
    flat_duration_s: float
    fresh_level: float
    high_level: float
    drop_within_s: float
    neighbour_max_age_s: float
    negative_tolerance: float
    negative_slope_per_min: float
    negative_min_samples: float
    agree_tol: float
    agree_rel: float
    agree_duration_s: float
    calibration_max_s: float
    expects_noise: bool = False
    up: int = -1
    down: int = -1
    lag: int = 0
    cal_start: float = math.nan
    cal_end: float = math.nan
    reasons: int = 0
    flat_since: float = math.nan
    disagree_since: float = math.nan
    cal_last: bool = False
    cal_seen: bool = False


BIT = {name: 1 << i for i, name in enumerate(REASONS)}


class ReferenceIntegrity:
    def __init__(self, window: RefWindow, points: list[dict]) -> None:
        self.window = window
        self.points = [RefIntegrityPoint(**p) for p in points]
        self.touched: set[int] = set()

    def observe(self, slot: int, ts: float, value: float, valid: bool, quality: int) -> None:
        """One accepted reading (call after RefWindow.push returned True)."""
        p = self.points[slot]
        self.touched.add(slot)
        undeclared = quality == Quality.CALIBRATING and not (p.cal_start <= ts <= p.cal_end)
        p.cal_last = undeclared  # this is now the point's newest reading
        if undeclared:
            p.cal_seen = True

    def evaluate(self) -> list[tuple[int, bool, int, int, float, float]]:
        touched, self.touched = self.touched, set()
        if not touched:
            return []
        affected = [i for i, p in enumerate(self.points)
                    if i in touched or p.up in touched or p.down in touched]
        events = []
        for slot in affected:
            p = self.points[slot]
            old = p.reasons
            new = 0
            for name in REASONS:
                if getattr(self, "_" + name)(slot, p):
                    new |= BIT[name]
            p.reasons = new
            if new != old:
                w = self.window.slots[slot]
                events.append((slot, new != 0, new if new else old, old, w.last_value,
                               w.last_ts))
        for slot in touched:
            self.points[slot].cal_seen = False
        return events

    # --- detectors (names match REASONS) ---

    def _fresh_neighbour(self, slot: int, nb: int, p: RefIntegrityPoint) -> bool:
        a, b = self.window.slots[slot], self.window.slots[nb]
        return abs(b.last_vts - a.last_vts) <= p.neighbour_max_age_s

    def _flat_line(self, slot: int, p: RefIntegrityPoint) -> bool:
        w = self.window.slots[slot]
        n = len(self.window.samples(slot))
        flat_now = (p.expects_noise and n >= p.flat_min_samples
                    and self.window.variance(slot) <= p.flat_var_eps)
        if not flat_now:
            p.flat_since = math.nan
            return False
        if math.isnan(p.flat_since):
            p.flat_since = w.last_ts
        return w.last_ts - p.flat_since >= p.flat_duration_s

    def _drop_to_fresh_air(self, slot: int, p: RefIntegrityPoint) -> bool:
        w = self.window.slots[slot]
        if not w.last_value <= p.fresh_level:
            return False
        neighbour_high = any(
            nb >= 0 and self.window.slots[nb].last_value >= p.high_level
            and self._fresh_neighbour(slot, nb, p) for nb in (p.up, p.down))
        if not neighbour_high:
            return False
        if p.reasons & BIT["drop_to_fresh_air"]:
            return True  # latched while still at fresh-air level with a neighbour high
        return any(v >= p.high_level and w.last_vts - t <= p.drop_within_s
                   for t, v in self.window.samples(slot))

    def _negative_drift(self, slot: int, p: RefIntegrityPoint) -> bool:
        v = self.window.slots[slot].last_value
        if v < p.negative_tolerance:
            return True
        slope = self.window.slope(slot, p.negative_min_samples)
        return v < 0.0 and slope <= -p.negative_slope_per_min

    def _neighbour_disagreement(self, slot: int, p: RefIntegrityPoint) -> bool:
        w = self.window.slots[slot]
        now_dis = False
        if p.up >= 0 and self._fresh_neighbour(slot, p.up, p):
            vu = self.window.lagged(p.up, p.lag)
            now_dis = abs(w.last_value - vu) > p.agree_tol + p.agree_rel * abs(vu)
        if not now_dis:
            p.disagree_since = math.nan
            return False
        if math.isnan(p.disagree_since):
            p.disagree_since = w.last_ts
        return w.last_ts - p.disagree_since >= p.agree_duration_s

    def _calibration_undeclared(self, slot: int, p: RefIntegrityPoint) -> bool:
        return p.cal_last or p.cal_seen

    def _calibration_overlong(self, slot: int, p: RefIntegrityPoint) -> bool:
        t = self.window.slots[slot].last_ts
        if not p.cal_start <= t <= p.cal_end:
            return False
        length = p.cal_end - p.cal_start if math.isfinite(p.cal_end) else t - p.cal_start
        return length > p.calibration_max_s
