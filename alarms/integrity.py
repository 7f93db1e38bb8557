"""Sensor integrity (数据造假/异常) detectors over the trend ring buffer (pure, vectorized).

These are the falsification patterns regulators hunt for (DOMAIN.md, "What regulators look
at"). Each detector yields one boolean per point; together they form a reason mask, and the
point is ``suspect`` while any reason holds.

Detectors (thresholds per point, from configuration; NaN turns a detector off):
- flat_line: the window variance ≤ ``flat_var_eps`` with ≥ ``flat_min_samples`` valid samples,
  held for ``flat_duration_s``, on a point flagged ``expects_noise`` (a return or face sensor
  that normally varies). A long window at constant memory: the W-sample window must stay
  noise-free for the whole duration, which also catches a frozen value replayed with a tiny
  drift.
- drop_to_fresh_air: the newest value ≤ ``fresh_level`` (fresh-air level, or zero) within
  ``drop_within_s`` of a reading ≥ ``high_level`` still in the window (a sudden drop; the
  look-back is at most the window's span), while an upstream or downstream neighbour on the
  same airflow is still ≥ ``high_level`` (its newest value is at most ``neighbour_max_age_s``
  older or newer). Once raised it holds while the value stays at fresh-air level and a
  neighbour stays high (a covered sensor stays covered).
- negative_drift: newest value < ``negative_tolerance``, or below zero while the window slope
  ≤ -``negative_slope_per_min`` (with ≥ ``negative_min_samples`` samples).
- neighbour_disagreement: |value - upstream value ``lag`` samples ago| > ``agree_tol`` +
  ``agree_rel`` × |upstream value|, held for ``agree_duration_s``; judged on the downstream
  point (the one with an upstream neighbour), and only when both have fresh values.
- calibration_undeclared: a reading flagged calibrating (标校) whose timestamp is outside the
  point's declared calibration window [cal_start, cal_end] (NaN = none declared): any such
  reading in the batch, or the point's newest reading.
- calibration_overlong: the point's newest timestamp is inside a declared window longer than
  ``calibration_max_s`` (an open window, cal_end = +inf, once it has run that long).

Evaluation happens once per batch, after ``alarms.trend.push``, on the points the batch touched
and on their neighbours' dependants (a point is re-evaluated when it or its upstream or
downstream neighbour received a reading), from the final window: the result does not depend
on the order of points within a poll. The per-reading part (calibration flags) is folded in
reading by reading. The rare conditions (fresh-air level, below zero, pending timers) are
checked on candidate subsets, so the common case costs a few array operations per point.

Reference: ``tests/reference_integrity.py``; property test: ``tests/test_integrity.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from alarms.trend import (
    S_N,
    Window,
    _slope,
    _unique_index,
    _variance,
    as_index,
    lagged_cells,
    param_arrays,
    unique_slots,
)
from minewatch.readings import Quality

REASONS: tuple[str, ...] = ("flat_line", "drop_to_fresh_air", "negative_drift",
                            "neighbour_disagreement", "calibration_undeclared",
                            "calibration_overlong")
FLAT, DROP, NEGATIVE, DISAGREE, CAL_UNDECLARED, CAL_OVERLONG = (
    np.uint8(1 << i) for i in range(len(REASONS)))

REASON_TEXT: dict[str, str] = {
    "flat_line": "曲线长时间平直无波动",
    "drop_to_fresh_air": "读数骤降至新鲜风流水平而同一风流相邻测点仍高",
    "negative_drift": "读数负漂",
    "neighbour_disagreement": "与同一风流上风侧测点读数不一致",
    "calibration_undeclared": "未申报标校却出现标校数据",
    "calibration_overlong": "申报的标校时间过长",
}

_CAL = np.int8(Quality.CALIBRATING)
_FLAT_TIMER, _DISAGREE_TIMER = 0, 1


@dataclass(frozen=True, slots=True)
class IntegrityParams:
    """Detector thresholds for one sensor kind; NaN = detector off. Values in the sensor's unit.

    The CH4 defaults in ``DEFAULT_INTEGRITY`` are documented there; every one of them is a (?)
    guess except where DOMAIN.md or the brief gives a number.
    """

    flat_var_eps: float = math.nan
    flat_min_samples: float = 60.0
    flat_duration_s: float = 1800.0
    fresh_level: float = math.nan
    high_level: float = math.nan
    drop_within_s: float = 60.0
    neighbour_max_age_s: float = 60.0
    negative_tolerance: float = math.nan
    negative_slope_per_min: float = math.nan
    negative_min_samples: float = 30.0
    agree_tol: float = math.nan
    agree_rel: float = 0.0
    agree_duration_s: float = 300.0
    calibration_max_s: float = math.nan


DEFAULT_INTEGRITY: dict[str, IntegrityParams] = {
    # CH4, % volume.
    "ch4": IntegrityParams(
        flat_var_eps=1e-6,  # (?) σ ≤ 0.001 %, a tenth of the 0.01 % display step
        flat_min_samples=60,  # (?) a full 60-sample window
        flat_duration_s=1800.0,  # (?) 30 min flat during production
        fresh_level=0.03,  # fresh-air level (brief, DOMAIN.md "drops to fresh-air level") (?)
        high_level=0.30,  # (?) "high": well above fresh air, below every alarm limit
        drop_within_s=60.0,  # (?) sudden = from high to fresh air within a minute
        neighbour_max_age_s=60.0,  # 2 × the 30 s maximum poll cycle (AQ 6201-2019)
        negative_tolerance=-0.05,  # (?) brief's example; zero drift beyond it is suspect
        negative_slope_per_min=0.005,  # (?) still falling below zero
        negative_min_samples=30,  # (?)
        agree_tol=0.30,  # (?) face / corner / return differ by ~0.1-0.2 % in normal air
        agree_rel=0.25,  # (?) catalytic sensor error grows with the reading
        agree_duration_s=300.0,  # (?) 5 min sustained
        calibration_max_s=1800.0,  # (?) a standard-gas calibration takes minutes, not hours
    ),
    # CO, ppm: (?) all guesses; no flat-line check (0 ppm for days is normal).
    "co": IntegrityParams(
        fresh_level=0.0, high_level=10.0, negative_tolerance=-2.0, agree_tol=10.0,
        agree_rel=0.25, calibration_max_s=1800.0),
    # Others: only calibration misuse. (?)
    "co2": IntegrityParams(calibration_max_s=1800.0),
    "o2": IntegrityParams(calibration_max_s=1800.0),
}

_PARAM_FIELDS = IntegrityParams.__slots__


@dataclass(slots=True)
class IntegrityState:
    # per-point thresholds (see IntegrityParams)
    flat_var_eps: np.ndarray
    flat_min_samples: np.ndarray
    flat_duration_s: np.ndarray
    fresh_level: np.ndarray
    high_level: np.ndarray
    drop_within_s: np.ndarray
    neighbour_max_age_s: np.ndarray
    negative_tolerance: np.ndarray
    negative_slope_per_min: np.ndarray
    negative_min_samples: np.ndarray
    agree_tol: np.ndarray
    agree_rel: np.ndarray
    agree_duration_s: np.ndarray
    calibration_max_s: np.ndarray
    # per-point layout and declarations
    expects_noise: np.ndarray  # bool
    up: np.ndarray  # int64 upstream slot on the same airflow, -1 = none
    down: np.ndarray  # int64 downstream slot, -1 = none
    lag: np.ndarray  # int64 samples of air travel from the upstream point
    cal_start: np.ndarray  # float64 declared calibration window (NaN = none)
    cal_end: np.ndarray  # float64 (+inf = open)
    # detector state
    reasons: np.ndarray  # uint8 mask of REASONS
    flat_since: np.ndarray  # float64 ts at which the window became flat, NaN
    disagree_since: np.ndarray  # float64
    cal_last: np.ndarray  # bool newest reading was calibrating outside the declared window
    _seen: np.ndarray  # bool scratch: undeclared calibrating reading in this batch
    _up_slots: np.ndarray  # int64 slots with an upstream neighbour; compact copies below
    _up_c: np.ndarray
    _lag_c: np.ndarray
    _tol_c: np.ndarray
    _rel_c: np.ndarray
    _age_c: np.ndarray
    _linked: bool  # any neighbour configured
    _declared: np.ndarray  # int64 slots with a declared calibration window
    _cal_active: bool  # any cal_last set
    _pending: np.ndarray  # (2,) int64 running timers: flat line, disagreement

    @property
    def size(self) -> int:
        return int(self.reasons.shape[0])

    @property
    def suspect(self) -> np.ndarray:
        return self.reasons != 0

    def declare_calibration(self, slots, start, end) -> None:
        """Declare (or with NaN, withdraw) calibration windows; end = +inf for an open one."""
        self.cal_start[slots] = start
        self.cal_end[slots] = end
        self._declared = np.flatnonzero(np.isfinite(self.cal_start))


@dataclass(slots=True)
class IntegrityEvents:
    """One row per point whose reason mask changed: raised (became suspect), cleared (no
    longer suspect, ``reasons`` = the mask it had) or, with ``raised`` and ``prev`` != 0,
    the reasons of an already suspect point changed."""

    slots: np.ndarray  # int32
    raised: np.ndarray  # bool: suspect after the change
    reasons: np.ndarray  # uint8 mask after (for a clear: before)
    prev: np.ndarray  # uint8 mask before
    values: np.ndarray  # float64 newest valid value
    ts: np.ndarray  # float64 newest accepted timestamp

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def rows(self) -> list[tuple[int, bool, int, int, float, float]]:
        return [(int(s), bool(r), int(m), int(p), float(v), float(t)) for s, r, m, p, v, t in
                zip(self.slots, self.raised, self.reasons, self.prev, self.values, self.ts,
                    strict=True)]


def reason_names(mask: int) -> list[str]:
    return [name for i, name in enumerate(REASONS) if (int(mask) >> i) & 1]


def integrity_message(mask: int, upstream_name: str | None = None) -> str:
    """Chinese text for a reason mask, e.g. "疑似数据异常：读数负漂"."""
    parts = []
    for name in reason_names(mask):
        text = REASON_TEXT[name]
        if name == "neighbour_disagreement" and upstream_name:
            text = f"与上风侧测点 {upstream_name} 读数不一致"
        parts.append(text)
    return "疑似数据异常：" + "；".join(parts) if parts else ""


def new_integrity_state(params: Mapping[str, np.ndarray], expects_noise, up=None, down=None,
                        lag=None, cal_start=None, cal_end=None, width: int | None = None,
                        ) -> IntegrityState:
    """State from per-point parameter arrays (keys = IntegrityParams fields) and layout.

    ``width``: the window size, to check every ``lag`` fits in the ring.
    """
    noise = np.asarray(expects_noise, dtype=bool).copy()
    n = noise.shape[0]

    def arr(x, fill, dtype) -> np.ndarray:
        if x is None:
            return np.full(n, fill, dtype=dtype)
        a = np.broadcast_to(np.asarray(x, dtype=dtype), (n,)).copy()
        return a

    up_a, down_a, lag_a = arr(up, -1, np.int64), arr(down, -1, np.int64), arr(lag, 0, np.int64)
    for name, a in (("up", up_a), ("down", down_a)):
        if ((a < -1) | (a >= n)).any():
            raise ValueError(f"{name} neighbour slot out of range")
    if (lag_a < 0).any() or (width is not None and (lag_a >= width).any()):
        raise ValueError("lag must be in [0, window size)")
    p = {f: arr(params[f], math.nan, np.float64) for f in _PARAM_FIELDS}
    start_a = arr(cal_start, math.nan, np.float64)
    linked = np.flatnonzero(up_a >= 0)
    return IntegrityState(
        **p, expects_noise=noise, up=up_a, down=down_a, lag=lag_a,
        cal_start=start_a, cal_end=arr(cal_end, math.nan, np.float64),
        reasons=np.zeros(n, dtype=np.uint8), flat_since=np.full(n, math.nan),
        disagree_since=np.full(n, math.nan),
        cal_last=np.zeros(n, dtype=bool), _seen=np.zeros(n, dtype=bool),
        _up_slots=linked, _up_c=up_a[linked], _lag_c=lag_a[linked],
        _tol_c=p["agree_tol"][linked], _rel_c=p["agree_rel"][linked],
        _age_c=p["neighbour_max_age_s"][linked],
        _linked=bool((up_a >= 0).any() or (down_a >= 0).any()),
        _declared=np.flatnonzero(np.isfinite(start_a)), _cal_active=False,
        _pending=np.zeros(2, dtype=np.int64),
    )


def integrity_state_for(kinds: Sequence[str], expects_noise, up=None, down=None, lag=None,
                        table: Mapping[str, IntegrityParams] = DEFAULT_INTEGRITY,
                        width: int | None = None) -> IntegrityState:
    """State for points of the given sensor kinds from a per-kind parameter table."""
    return new_integrity_state(param_arrays(kinds, table, IntegrityParams), expects_noise, up,
                               down, lag, width=width)


def _empty_events() -> IntegrityEvents:
    e = np.empty(0)
    return IntegrityEvents(np.empty(0, np.int32), np.empty(0, bool), np.empty(0, np.uint8),
                           np.empty(0, np.uint8), e, e.copy())


def evaluate_integrity(state: IntegrityState, win: Window, slots, ts, quality,
                       accepted=None) -> IntegrityEvents:
    """Fold a batch (already pushed into ``win``) into the detectors; return the edges.

    ``accepted`` is the mask ``alarms.trend.push`` returned for the same rows (rejected
    replays are ignored here too). Values come from the window.
    """
    slots = np.asarray(slots, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.int8)
    if accepted is not None:
        accepted = np.asarray(accepted, dtype=bool)
        if not accepted.all():
            keep = np.flatnonzero(accepted)
            slots, ts, quality = slots[keep], ts[keep], quality[keep]
    if slots.shape[0] == 0:
        return _empty_events()
    bidx = _unique_index(slots, win._stamp)
    seen = _observe(state, win, bidx, slots, ts, quality)
    events = _detect(state, win, _affected(state, win, bidx, slots), seen.size > 0)
    if seen.size:
        state._seen[seen] = False
    return events


def _observe(state: IntegrityState, win: Window, bidx, slots, ts, quality) -> np.ndarray:
    """Per-reading part: calibrating readings outside the declared window.

    ``bidx``: the batch's index when every slot appears once, else None.
    """
    if bidx is not None:
        last_idx, last_rows = bidx, slice(None)
    else:
        last_rows = np.flatnonzero(ts == win.last_ts[slots])  # each slot's newest reading
        last_idx = slots[last_rows]
    cal = quality == _CAL
    if not cal.any():
        if state._cal_active:
            state.cal_last[last_idx] = False
            state._cal_active = bool(state.cal_last.any())
        return np.empty(0, dtype=np.int64)
    c = np.flatnonzero(cal)
    cs = slots[c]
    undeclared = np.zeros(slots.shape[0], dtype=bool)
    undeclared[c] = ~((ts[c] >= state.cal_start[cs]) & (ts[c] <= state.cal_end[cs]))
    state.cal_last[last_idx] = undeclared[last_rows]
    state._cal_active = bool(state.cal_last.any())
    seen = slots[undeclared]
    state._seen[seen] = True
    return seen


def _affected(state: IntegrityState, win: Window, bidx, slots):
    """Points to re-evaluate: touched, or with a touched upstream/downstream neighbour."""
    n = state.size
    if isinstance(bidx, slice) and bidx.stop - bidx.start == n:
        return slice(0, n)
    if not state._linked:
        return bidx if bidx is not None else unique_slots(slots, win._stamp)
    touched = np.zeros(n, dtype=bool)
    touched[slots] = True
    aff = touched.copy()
    for nb in (state.up, state.down):
        has = nb >= 0
        aff |= has & touched[np.where(has, nb, 0)]
    return as_index(np.flatnonzero(aff))


def _ids(idx, c: np.ndarray) -> np.ndarray:
    """Slot ids of positions ``c`` within the evaluated index."""
    return c + idx.start if isinstance(idx, slice) else idx[c]


def _hold(state: IntegrityState, timer: int, since_arr: np.ndarray, ids: np.ndarray,
          holding: np.ndarray, now: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """A condition that must hold for ``duration``: ``since_arr`` is when it started (NaN =
    not holding). Called only for points holding or pending; returns which have fired."""
    started = since_arr[ids]
    before = np.count_nonzero(~np.isnan(started))
    started = np.where(holding, np.where(np.isnan(started), now, started), np.nan)
    since_arr[ids] = started
    state._pending[timer] += np.count_nonzero(holding) - before
    return holding & (now - started >= duration)


def _candidates(cond: np.ndarray, since: np.ndarray, pending: int) -> np.ndarray:
    """Positions where a timed condition holds or its timer runs."""
    return np.flatnonzero(cond | ~np.isnan(since) if pending else cond)


def _detect(state: IntegrityState, win: Window, idx, cal_seen: bool) -> IntegrityEvents:
    s = win.sums[:, idx]
    cur = win.last_value[idx]
    lts = win.last_ts[idx]
    old = state.reasons[idx].copy()
    new = np.zeros(cur.shape[0], dtype=np.uint8)
    full = isinstance(idx, slice) and idx.stop - idx.start == state.size
    with np.errstate(invalid="ignore", divide="ignore"):
        # flat line: a noise-free window on a point that normally varies, for a duration
        flat_now = (state.expects_noise[idx] & (s[S_N] >= state.flat_min_samples[idx])
                    & (_variance(s) <= state.flat_var_eps[idx]))
        c = _candidates(flat_now, state.flat_since[idx], state._pending[_FLAT_TIMER])
        if c.size:
            ids = _ids(idx, c)
            fired = _hold(state, _FLAT_TIMER, state.flat_since, ids, flat_now[c], lts[c],
                          state.flat_duration_s[ids])
            new[c[fired]] |= FLAT

        # sudden drop to fresh air while a neighbour on the airflow stays high (latched)
        # (many points sit at fresh-air level: intake air; few have a high neighbour)
        c = np.flatnonzero(cur <= state.fresh_level[idx])
        if c.size:
            ids = _ids(idx, c)
            cts = win.last_vts[ids]
            high = state.high_level[ids]
            age = state.neighbour_max_age_s[ids]
            nb_high = np.zeros(c.size, dtype=bool)
            for nb in (state.up[ids], state.down[ids]):
                has = nb >= 0
                j = np.where(has, nb, 0)
                nb_high |= has & (win.last_value[j] >= high) & (
                    np.abs(win.last_vts[j] - cts) <= age)
            c, ids, cts, high = c[nb_high], ids[nb_high], cts[nb_high], high[nb_high]
        if c.size:
            # a valid reading ≥ high within drop_within_s, still in the window
            cells = win.cells[:, ids]
            t = cells[:, :, 1].astype(np.float64) + win.t0[ids]
            sudden = (win.valid[:, ids] & (cells[:, :, 0] >= high)
                      & (cts - t <= state.drop_within_s[ids])).any(axis=0)
            latched = (old[c] & DROP) != 0
            new[c[latched | sudden]] |= DROP

        # negative drift: below the tolerance, or below zero and still falling
        c = np.flatnonzero(cur < np.fmax(state.negative_tolerance[idx], 0.0))
        if c.size:
            ids = _ids(idx, c)
            v = cur[c]
            sl = _slope(win.sums[:, ids], state.negative_min_samples[ids])
            neg = (v < state.negative_tolerance[ids]) | (
                (v < 0.0) & (sl <= -state.negative_slope_per_min[ids]))
            new[c[neg]] |= NEGATIVE

        # disagreement with the upstream point's reading `lag` readings ago, for a duration
        if full:
            pos = ids = state._up_slots
            up, lag, tol, rel, age = (state._up_c, state._lag_c, state._tol_c, state._rel_c,
                                      state._age_c)
        else:
            pos = np.flatnonzero(state.up[idx] >= 0)
            ids = _ids(idx, pos)
            up, lag, tol, rel = state.up[ids], state.lag[ids], state.agree_tol[ids], (
                state.agree_rel[ids])
            age = state.neighbour_max_age_s[ids]
        if pos.size:
            vu, ok = lagged_cells(win, up, lag)
            apart = np.abs(cur[pos] - vu) > tol + rel * np.abs(vu)
            apart &= ok
            c = np.flatnonzero(apart)  # usually few: check freshness only there
            apart[c] = np.abs(win.last_vts[up[c]] - win.last_vts[ids[c]]) <= age[c]
            pending = state._pending[_DISAGREE_TIMER]
            c = _candidates(apart, state.disagree_since[ids] if pending else apart, pending)
            if c.size:
                fired = _hold(state, _DISAGREE_TIMER, state.disagree_since, ids[c], apart[c],
                              lts[pos[c]], state.agree_duration_s[ids[c]])
                new[pos[c[fired]]] |= DISAGREE

        # calibration misuse
        if state._cal_active or cal_seen:
            new |= (state.cal_last[idx] | state._seen[idx]) * CAL_UNDECLARED
        if state._declared.size:
            c = (state._declared - idx.start if full else
                 np.flatnonzero(np.isfinite(state.cal_start[idx])))
            ids = _ids(idx, c)
            start, end, t = state.cal_start[ids], state.cal_end[ids], lts[c]
            length = np.where(np.isfinite(end), end - start, t - start)
            new[c[(t >= start) & (t <= end) & (length > state.calibration_max_s[ids])]] |= (
                CAL_OVERLONG)

    state.reasons[idx] = new
    changed = np.flatnonzero(old != new)
    if changed.size == 0:
        return _empty_events()
    slots = _ids(idx, changed)
    nw, od = new[changed], old[changed]
    raised = nw != 0
    return IntegrityEvents(slots.astype(np.int32), raised, np.where(raised, nw, od), od,
                           cur[changed], lts[changed])
