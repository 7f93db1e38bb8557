"""Naive per-reading reference of the trend window and rule: the oracle for alarms/trend.py.

One deque of (timestamp, value | None) per point, sums recomputed from scratch with plain
Python floats at every evaluation; see alarms/trend.py for the rules it mirrors. Values are
stored rounded to float32 like the vectorized window's cells (a storage choice, not a rule).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np


def f32(x: float) -> float:
    return float(np.float32(x))


@dataclass
class RefSlot:
    cells: deque = field(default_factory=deque)
    last_ts: float = -math.inf
    last_valid: bool = False
    last_value: float = math.nan
    last_vts: float = math.nan


class RefWindow:
    def __init__(self, n: int, size: int, reset_gap_s: float) -> None:
        self.size = size
        self.reset_gap_s = reset_gap_s
        self.slots = [RefSlot(deque(maxlen=size)) for _ in range(n)]

    def push(self, slot: int, ts: float, value: float, valid: bool) -> bool:
        p = self.slots[slot]
        if not (ts > p.last_ts and ts < math.inf):
            return False  # replay, out of order, or not a time
        if ts - p.last_ts > self.reset_gap_s:
            p.cells.clear()  # outage: never fit a slope across it
        valid = valid and math.isfinite(value)
        p.cells.append((ts, f32(value) if valid else None))
        p.last_ts, p.last_valid = ts, valid
        if valid:
            p.last_value, p.last_vts = f32(value), ts
        return True

    def samples(self, slot: int) -> list[tuple[float, float]]:
        return [(t, v) for t, v in self.slots[slot].cells if v is not None]

    def lagged(self, slot: int, lag: int) -> float:
        """The value ``lag`` accepted readings before the newest (NaN if invalid or absent)."""
        cells = self.slots[slot].cells
        if len(cells) <= lag:
            return math.nan
        v = cells[-1 - lag][1]
        return math.nan if v is None else v

    def slope(self, slot: int, min_samples: float) -> float:
        pts = self.samples(slot)
        n = len(pts)
        st = sum(t for t, _ in pts)
        sv = sum(v for _, v in pts)
        stt = sum(t * t for t, _ in pts)
        stv = sum(t * v for t, v in pts)
        num = n * stv - st * sv
        den = n * stt - st * st
        if n >= max(min_samples, 2) and den > 0:
            return num / den * 60.0
        return math.nan

    def variance(self, slot: int) -> float:
        pts = self.samples(slot)
        n = len(pts)
        if n == 0:
            return math.nan
        sv = sum(v for _, v in pts)
        svv = sum(v * v for _, v in pts)
        return (n * svv - sv * sv) / (n * n)


def ref_forecast(value: float, slope: float, limit: float) -> float:
    if math.isnan(slope) or math.isnan(value) or math.isnan(limit) or not value < limit:
        return math.nan
    if slope <= 0:
        return math.inf
    return (limit - value) / slope * 60.0


@dataclass
class RefTrendPoint:
    rate: float
    horizon: float
    hysteresis: float
    min_samples: float
    limit: float
    active: bool = False
    slope: float = math.nan
    forecast: float = math.nan


class ReferenceTrend:
    def __init__(self, window: RefWindow, params: list[dict]) -> None:
        self.window = window
        self.points = [RefTrendPoint(**p) for p in params]

    def evaluate(self, slots) -> list[tuple[int, bool, float, float, float, float]]:
        events = []
        for slot in sorted(set(slots)):
            p, w = self.points[slot], self.window.slots[slot]
            slope = self.window.slope(slot, p.min_samples)
            fc = ref_forecast(w.last_value, slope, p.limit)
            p.slope, p.forecast = slope, fc
            if not w.last_valid:
                continue  # newest reading is not a measurement: the bit holds
            values = [v for _, v in self.window.samples(slot)]
            rising = bool(values) and w.last_value * len(values) >= sum(values)
            if p.active:
                on = (slope >= p.rate * (1.0 - p.hysteresis)
                      and fc <= p.horizon * (1.0 + p.hysteresis)) and rising
            else:
                on = slope >= p.rate and fc <= p.horizon and rising
            if on != p.active:
                p.active = on
                events.append((slot, on, w.last_value, w.last_ts, slope, fc))
        return events
