"""Rate of rise and time-to-limit forecast over a per-point ring buffer (pure, vectorized).

The window is a struct of arrays indexed by point slot, like ``alarms.engine.EngineState``:

- ``cells`` (W, N, 2) float32: the last W accepted readings per slot, ``[..., 0]`` the value,
  ``[..., 1]`` its time in seconds relative to the slot's time base ``t0``; both 0 in a cell
  that holds no valid measurement, so it contributes nothing to any sum.
- ``valid`` (W, N) bool: the cell holds a valid measurement.
- ``head`` (N,): the row the slot's next reading goes to. Ring rows are the outer axis, so a
  batch of consecutive slots polled together (a substation's channels, every point in the
  benchmark) reads and writes one contiguous row: slices, not gathers. Heads start aligned
  and stay aligned while the slots get the same number of readings; otherwise the same code
  gathers and scatters cell by cell.
- ``sums`` (6, N) float64: running sums over the valid cells (count, Σt, Σv, Σt², Σtv, Σv²).
  A push adds the new reading and subtracts the evicted one, so the slope and the variance
  cost O(1) per point whatever W is, and gaps are handled by counts, not per-element Python
  (STACK.md: a naive NaN-tolerant slope was 40× slower).

Why float32 cells: sensor values have 3-4 significant digits (CH4 0.01 %, CO 1 ppm), far inside
float32's 7, and float32 halves the memory and memory traffic of the largest array (STACK.md:
0.7 vs 2.0 ms per 100k points). Epoch seconds do not fit float32 (spacing 128 s at 1.8e9),
hence a float64 base ``t0`` per slot and float32 offsets. Every push call also re-bases a
rolling block of slots (``ceil(k / (8 W))`` for a batch of k readings): their base moves to
their newest reading and their sums are recomputed from the cells, so offsets stay small
(sub-millisecond resolution) and the add/subtract rounding of the running sums never
accumulates beyond 8 laps. The sums are float64: Σt² minus (Σt)² cancels.

Memory per point with W = 60: 480 B of cells + 60 B of flags + 48 B of sums + ~45 B of per-slot
scalars, about 0.63 kB (630 MB for 1M points; W = 30 halves the cells). Trend state adds ~65 B.

Rules:
- A reading is accepted only if its timestamp is finite and newer than the slot's last one
  (a replay is ignored, as in the engine). Accepted readings fill the ring whether valid or
  not; invalid ones (fault, calibrating, stale, non-finite: see ``judged``) are empty cells.
- A gap longer than ``reset_gap_s`` between accepted readings empties the slot's window, so a
  slope is never fitted across an outage.
- ``slope``: least-squares slope of value over time of the valid samples in the window, in
  units per minute; NaN with fewer than ``min_samples`` valid samples.
- ``forecast``: seconds until ``limit`` at the current slope: NaN without a slope, without a
  limit, or when the value is already at or above the limit (the over-limit alarm owns that
  case); +inf when not rising.
- ``trend`` bit: raised when slope ≥ rate AND forecast ≤ horizon; once raised it holds while
  slope ≥ rate·(1 − h) AND forecast ≤ horizon·(1 + h) (h = hysteresis). Evaluated once per
  batch on the slots the batch touched, from their final window; while a slot's newest reading
  is not a valid measurement the bit holds (like the engine's limit bits during a fault). The
  exact slope and forecast are computed only where a trend is possible or active (a
  division-free test on the sums first); ``trend_figures`` gives them for any point on demand
  (the screen and the API), and each edge event carries them.

The per-reading reference is ``tests/reference_trend.py``; the property tests in
``tests/test_trend.py`` check both agree on random streams.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

from alarms.engine import as_index
from minewatch.readings import Quality

_OK = np.int8(Quality.OK)
_OOR = np.int8(Quality.OUT_OF_RANGE)

# Rows of Window.sums.
S_N, S_T, S_V, S_TT, S_TV, S_VV = range(6)
REBASE_LAPS = 8  # each slot is re-based at least once per this many laps of full batches


# --- parameters (the caller reads them from configuration) -----------------------------------


@dataclass(frozen=True, slots=True)
class WindowParams:
    """Ring-buffer shape; one per engine.

    size: samples per slot. 60 = 30 s at the sample mine's 0.5 s poll, 30 min at the
        regulation's maximum 30 s poll (AQ 6201-2019). (?) a choice, not a regulation value.
    reset_gap_s: a gap longer than this between readings of a point empties its window. (?)
        a choice: 2 × the 30 s maximum poll cycle.
    """

    size: int = 60
    reset_gap_s: float = 60.0


@dataclass(frozen=True, slots=True)
class TrendParams:
    """Early-warning (趋势预警) parameters for one sensor kind.

    rate_per_min: a rise at least this fast (unit per minute) is a trend; NaN = rule off.
        (?) all defaults below are engineering guesses, DOMAIN.md has no trend values.
    horizon_s: ... and only if the alarm limit is reached within this many seconds. (?) 10 min
    hysteresis: once raised, the trend holds until slope < rate·(1 − h) or
        forecast > horizon·(1 + h). (?)
    min_samples: valid samples needed for a slope (at least 2). (?)
    """

    rate_per_min: float = math.nan
    horizon_s: float = 600.0
    hysteresis: float = 0.2
    min_samples: int = 10


# (?) guesses: CH4 0.1 %/min is the brief's example; CO and CO2 scaled to their alarm limits
# (24 ppm, 0.5 %), temperature 0.5 ℃/min. O2 and wind alarm on falling values: not covered.
DEFAULT_TREND: dict[str, TrendParams] = {
    "ch4": TrendParams(rate_per_min=0.1),
    "co": TrendParams(rate_per_min=2.0),
    "co2": TrendParams(rate_per_min=0.05),
    "temp": TrendParams(rate_per_min=0.5),
}


def param_arrays(kinds: Sequence[str], table: Mapping[str, object], cls: type) -> dict:
    """Per-slot float64 parameter arrays from a per-kind table of dataclasses.

    Kinds missing from ``table`` get ``cls()``'s defaults (NaN thresholds = rule off).
    """
    kinds_arr = np.asarray(list(kinds), dtype=str)
    uniq, inverse = np.unique(kinds_arr, return_inverse=True)
    rows = [table.get(str(k), cls()) for k in uniq]
    out = {}
    for f in fields(cls):
        col = np.array([float(getattr(r, f.name)) for r in rows], dtype=np.float64)
        out[f.name] = col[inverse] if len(kinds_arr) else np.empty(0)
    return out


# --- batch indexing ----------------------------------------------------------------------------


def _unique_index(slots: np.ndarray, stamp: np.ndarray) -> slice | np.ndarray | None:
    """The batch's index (slice or array) when every slot appears once, else None."""
    k = slots.shape[0]
    if k < 2 or bool((slots[1:] > slots[:-1]).all()):
        if k and int(slots[-1]) - int(slots[0]) == k - 1:
            return slice(int(slots[0]), int(slots[-1]) + 1)
        return slots
    positions = np.arange(k)
    stamp[slots] = positions
    return slots if bool((stamp[slots] == positions).all()) else None


def rounds(slots: np.ndarray) -> list[np.ndarray]:
    """Split batch rows into rounds where each slot appears once, keeping batch order."""
    n = slots.shape[0]
    positions = np.arange(n)
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[True, sorted_slots[1:] != sorted_slots[:-1]]
    first = np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = positions - first
    return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


def unique_slots(slots: np.ndarray, stamp: np.ndarray) -> slice | np.ndarray:
    """Index of the distinct slots of a batch (a slice for a contiguous run)."""
    idx = _unique_index(slots, stamp)
    if idx is not None:
        return idx
    positions = np.arange(slots.shape[0])  # stamp holds one surviving position per slot
    return slots[stamp[slots] == positions]


# --- the ring buffer ---------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    cells: np.ndarray  # (W, N, 2) float32: value, time offset from t0 (0, 0 when not valid)
    valid: np.ndarray  # (W, N) bool: the cell holds a valid measurement
    sums: np.ndarray  # (6, N) float64 running sums over valid cells: n, Σt, Σv, Σt², Σtv, Σv²
    head: np.ndarray  # (N,) int64 ring row of the slot's next reading
    t0: np.ndarray  # (N,) float64 time base of the offsets
    last_ts: np.ndarray  # (N,) float64 newest accepted timestamp (replay guard), -inf
    last_valid: np.ndarray  # (N,) bool: the newest accepted reading is a valid measurement
    last_value: np.ndarray  # (N,) float64 newest valid value (as stored, float32-rounded)
    last_vts: np.ndarray  # (N,) float64 timestamp of that value, NaN if none
    reset_gap_s: float
    cursor: int  # next slot of the rolling re-base
    _stamp: np.ndarray  # (N,) int64 scratch for duplicate detection

    @property
    def size(self) -> int:
        return int(self.head.shape[0])

    @property
    def width(self) -> int:
        return int(self.cells.shape[0])

    def lagged(self, slots, lag) -> np.ndarray:
        """Value of each slot's reading ``lag`` readings before its newest (NaN if that
        reading was not valid or the window does not reach back that far)."""
        v, ok = lagged_cells(self, np.asarray(slots, dtype=np.int64), np.asarray(lag))
        return np.where(ok, v, np.nan)


def lagged_cells(win: Window, slots: np.ndarray, lag: np.ndarray):
    """(float32 value, valid flag) of each slot's cell ``lag`` readings before its newest."""
    w, n = win.width, win.size
    row = win.head[slots] - 1 - lag  # in [-w, w - 2]: one wrap at most
    row += w * (row < 0)
    flat = row * n + slots
    return win.cells.reshape(-1)[flat * 2], win.valid.reshape(-1)[flat]  # value = even floats


def new_window(n: int, params: WindowParams = WindowParams()) -> Window:
    w = int(params.size)
    if w < 2:
        raise ValueError("window size must be at least 2")
    return Window(
        cells=np.zeros((w, n, 2), dtype=np.float32), valid=np.zeros((w, n), dtype=bool),
        sums=np.zeros((6, n)), head=np.zeros(n, dtype=np.int64), t0=np.zeros(n),
        last_ts=np.full(n, -np.inf), last_valid=np.zeros(n, dtype=bool),
        last_value=np.full(n, np.nan), last_vts=np.full(n, np.nan),
        reset_gap_s=float(params.reset_gap_s), cursor=0, _stamp=np.full(n, -1, dtype=np.int64),
    )


def judged(values, quality) -> np.ndarray:
    """The valid mask the engine judges limits on: quality ok or out_of_range, finite value."""
    quality = np.asarray(quality)
    return ((quality == _OK) | (quality == _OOR)) & np.isfinite(values)


def _check(win: Window, slots) -> np.ndarray:
    slots = np.asarray(slots, dtype=np.int64)
    if slots.size and (slots.min() < 0 or slots.max() >= win.size):
        raise IndexError("slot out of range")
    return slots


def push(win: Window, slots, ts, values, valid) -> np.ndarray:
    """Append a batch of readings to the window; returns the accepted mask (batch order).

    ``valid`` marks readings that are real measurements (see ``judged``). Several readings of
    one slot in a batch are applied in batch order; a reading not newer than the slot's last
    accepted one is rejected.
    """
    slots = _check(win, slots)
    ts = np.asarray(ts, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool) & np.isfinite(values)
    k = slots.shape[0]
    if k == 0:
        return np.zeros(0, dtype=bool)
    idx = _unique_index(slots, win._stamp)
    if idx is not None:
        accepted = _push_unique(win, idx, slots, ts, values, valid)
    else:
        accepted = np.zeros(k, dtype=bool)
        for sel in rounds(slots):
            s = slots[sel]
            accepted[sel] = _push_unique(win, as_index(s), s, ts[sel], values[sel], valid[sel])
    _rebase_block(win, -(-k // (REBASE_LAPS * win.width)))
    return accepted


def _push_unique(win: Window, idx, slots, ts, values, valid) -> np.ndarray:
    last = win.last_ts[idx]
    age = ts - last
    fresh = age > 0  # also rejects a NaN timestamp
    if not ts.max() < np.inf:  # an infinite (or NaN) timestamp somewhere: reject it too
        fresh &= ts < np.inf
    if not fresh.all():
        keep = np.flatnonzero(fresh)
        slots, ts, values, valid, age = (slots[keep], ts[keep], values[keep], valid[keep],
                                         age[keep])
        idx = as_index(slots)
        if slots.shape[0] == 0:
            return fresh
    gap = age > win.reset_gap_s  # also the first reading: ts - (-inf) = inf
    if gap.any():
        _reset(win, slots[gap], ts[gap], age[gap])
    _write(win, idx, slots, ts, values, valid)
    return fresh


def _reset(win: Window, rows: np.ndarray, ts: np.ndarray, age: np.ndarray) -> None:
    had = rows[np.isfinite(age)]  # rows that held readings (not first ever)
    if had.size:
        win.valid[:, had] = False
        win.cells[:, had] = 0.0
    win.sums[:, rows] = 0.0
    win.t0[rows] = ts


def _write(win: Window, idx, slots, ts, values, valid) -> None:
    w, n = win.width, win.size
    nv32 = values.astype(np.float32)
    nt32 = (ts - win.t0[idx]).astype(np.float32)
    bad = np.flatnonzero(~valid)  # usually none or a few: patched, not masked
    bad_slots = slots[bad]
    keep_value, keep_vts = win.last_value[bad_slots], win.last_vts[bad_slots]
    win.last_ts[idx] = ts
    win.last_valid[idx] = valid
    win.last_value[idx] = nv32
    win.last_vts[idx] = ts
    if bad.size:
        win.last_value[bad_slots] = keep_value  # the newest *valid* value stays
        win.last_vts[bad_slots] = keep_vts
        nv32[bad] = 0.0  # an invalid reading is an empty cell
        nt32[bad] = 0.0
    heads = win.head[idx]
    h0 = int(heads[0])
    if isinstance(idx, slice) and bool((heads == h0).all()):
        # Aligned ring rows: one contiguous row of cells.
        row = win.cells[h0, idx]
        ov = row[:, 0].astype(np.float64)
        ot = row[:, 1].astype(np.float64)
        om = win.valid[h0, idx].copy()
        row[:, 0] = nv32
        row[:, 1] = nt32
        win.valid[h0, idx] = valid
        win.head[idx] = h0 + 1 if h0 + 1 < w else 0
    else:
        flat = heads * n + slots
        pairs = win.cells.reshape(-1).view(np.uint64)  # a (value, time) cell is 8 bytes
        old = pairs[flat].view(np.float32).reshape(-1, 2)
        ov = old[:, 0].astype(np.float64)
        ot = old[:, 1].astype(np.float64)
        flags = win.valid.reshape(-1)
        om = flags[flat]
        new = np.empty((slots.shape[0], 2), dtype=np.float32)
        new[:, 0] = nv32
        new[:, 1] = nt32
        pairs[flat] = new.view(np.uint64).reshape(-1)
        flags[flat] = valid
        heads = heads + 1
        heads[heads == w] = 0
        win.head[idx] = heads

    nv = nv32.astype(np.float64)
    nt = nt32.astype(np.float64)
    dt = nt - ot
    dv = nv - ov
    s = win.sums[:, idx]  # a view for a slice: updated in place
    flips = np.flatnonzero(valid != om)  # the count changes only where validity does
    if flips.size:
        s[S_N, flips] += valid[flips].astype(np.float64) - om[flips]
    s[S_T] += dt
    s[S_V] += dv
    s[S_TT] += dt * (nt + ot)  # nt² - ot²
    s[S_TV] += nt * nv - ot * ov
    s[S_VV] += dv * (nv + ov)  # nv² - ov²
    if not isinstance(idx, slice):
        win.sums[:, idx] = s


def _rebase_block(win: Window, count: int) -> None:
    """Re-base the next ``count`` slots (rolling): t0 := newest reading, sums from cells."""
    n = win.size
    a = win.cursor
    b = min(a + count, n)
    win.cursor = 0 if b >= n else b
    sl = slice(a, b)
    last = win.last_ts[sl]
    base = np.where(np.isfinite(last), last, win.t0[sl])
    shift = win.t0[sl] - base
    ok = win.valid[:, sl]
    cells = win.cells[:, sl]
    t = np.where(ok, cells[:, :, 1].astype(np.float64) + shift, 0.0).astype(np.float32)
    cells[:, :, 1] = t
    win.t0[sl] = base
    tz = t.astype(np.float64)
    vz = cells[:, :, 0].astype(np.float64)
    s = win.sums[:, sl]
    s[S_N] = ok.sum(axis=0)
    s[S_T] = tz.sum(axis=0)
    s[S_V] = vz.sum(axis=0)
    s[S_TT] = (tz * tz).sum(axis=0)
    s[S_TV] = (tz * vz).sum(axis=0)
    s[S_VV] = (vz * vz).sum(axis=0)


# --- slope and forecast ------------------------------------------------------------------------


def slope(win: Window, slots=None, min_samples=2) -> np.ndarray:
    """Least-squares slope (units per minute) of the valid samples in each slot's window.

    NaN where fewer than ``min_samples`` (scalar or per-slot array, at least 2) valid samples
    exist. ``slots``: an index array, a slice, or None for every slot.
    """
    idx = slice(None) if slots is None else slots
    return _slope(win.sums[:, idx], np.maximum(min_samples, 2))


def _slope(s: np.ndarray, min_samples) -> np.ndarray:
    n = s[S_N]
    st = s[S_T]
    num = n * s[S_TV] - st * s[S_V]
    den = n * s[S_TT] - st * st
    ok = (n >= min_samples) & (den > 0)
    out = np.full(n.shape, np.nan)
    np.divide(num, den, out=out, where=ok)
    out *= 60.0
    return out


def variance(win: Window, slots=None) -> np.ndarray:
    """Population variance of the valid samples in each slot's window (NaN if none)."""
    idx = slice(None) if slots is None else slots
    return _variance(win.sums[:, idx])


def _variance(s: np.ndarray) -> np.ndarray:
    n = s[S_N]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (n * s[S_VV] - s[S_V] * s[S_V]) / (n * n)


def forecast(value, slope_per_min, limit) -> np.ndarray:
    """Seconds until ``limit`` at the current slope.

    NaN when the slope, value or limit is NaN or the value is already ≥ limit; +inf when the
    value is below the limit but not rising (slope ≤ 0).
    """
    value, slope_per_min, limit = np.broadcast_arrays(
        np.asarray(value, np.float64), np.asarray(slope_per_min, np.float64),
        np.asarray(limit, np.float64))
    return _forecast(value, slope_per_min, limit)


def _forecast(value, slope_per_min, limit) -> np.ndarray:
    # Branch-free (np.where on a random mask costs ~4 ns per element): a non-positive
    # distance becomes NaN, a non-positive slope a zero divisor (+inf).
    with np.errstate(invalid="ignore", divide="ignore"):
        dist = limit - value
        dist = np.where(dist > 0, dist, np.nan)  # mostly true: predictable
        rise = np.maximum(slope_per_min, 0.0)
        rise += 0.0  # -0.0 → +0.0
        out = dist / rise
        out *= 60.0
    return out


# --- trend rule --------------------------------------------------------------------------------


@dataclass(slots=True)
class TrendState:
    rate: np.ndarray  # (N,) units per minute, NaN = rule off for the slot
    horizon: np.ndarray  # (N,) seconds
    hysteresis: np.ndarray  # (N,) fraction
    min_samples: np.ndarray  # (N,) float64 count (≥ 2)
    limit: np.ndarray  # (N,) alarm limit the forecast aims at (engine alarm_hi), NaN = none
    rate_hold: np.ndarray  # (N,) rate·(1 − h): precomputed
    horizon_hold: np.ndarray  # (N,) horizon·(1 + h)
    gate: np.ndarray  # (N,) min(rate, rate_hold) less a margin: 60·num ≥ gate·den is necessary
    active: np.ndarray  # (N,) bool trend bit

    @property
    def size(self) -> int:
        return int(self.active.shape[0])


@dataclass(slots=True)
class TrendEvents:
    """Edges of the trend bit: one row per slot whose bit changed in the batch."""

    slots: np.ndarray  # int32
    raised: np.ndarray  # bool
    values: np.ndarray  # float64 newest valid value
    ts: np.ndarray  # float64 newest accepted timestamp
    slope: np.ndarray  # float64 unit/min
    forecast: np.ndarray  # float64 seconds to the limit

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def rows(self) -> list[tuple[int, bool, float, float, float, float]]:
        return [(int(s), bool(r), float(v), float(t), float(sl), float(f)) for s, r, v, t, sl, f
                in zip(self.slots, self.raised, self.values, self.ts, self.slope, self.forecast,
                       strict=True)]


def new_trend_state(limit, rate, horizon, hysteresis, min_samples) -> TrendState:
    lim = np.asarray(limit, dtype=np.float64).copy()
    n = lim.shape[0]

    def f64(x) -> np.ndarray:
        return np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)).copy()

    rate, horizon, h = f64(rate), f64(horizon), f64(hysteresis)
    rate_hold = rate * (1.0 - h)
    low = np.minimum(rate, rate_hold)
    gate = low - 1e-6 * np.abs(low) - 1e-9  # margin far above the rounding of the slope
    return TrendState(rate=rate, horizon=horizon, hysteresis=h,
                      min_samples=np.maximum(f64(min_samples), 2.0), limit=lim,
                      rate_hold=rate_hold, horizon_hold=horizon * (1.0 + h), gate=gate,
                      active=np.zeros(n, dtype=bool))


def trend_state_for(kinds: Sequence[str], limit, table: Mapping[str, TrendParams] = DEFAULT_TREND,
                    ) -> TrendState:
    """Trend state for points of the given sensor kinds; ``limit`` = the engine's alarm_hi."""
    p = param_arrays(kinds, table, TrendParams)
    return new_trend_state(limit, p["rate_per_min"], p["horizon_s"], p["hysteresis"],
                           p["min_samples"])


def _empty_trend_events() -> TrendEvents:
    e = np.empty(0)
    return TrendEvents(np.empty(0, np.int32), np.empty(0, bool), e, e.copy(), e.copy(),
                       e.copy())


def evaluate_trend(state: TrendState, win: Window, slots) -> TrendEvents:
    """Re-evaluate the trend bit of the slots a batch touched (after ``push``); the edges.

    Re-evaluating a slot without new data changes nothing, so passing the batch's slots
    (duplicates and rejected replays included) is fine. The exact slope and forecast are
    computed only where a trend is possible (a division-free necessary condition on the sums)
    or active; ``trend_figures`` gives them for any point on demand (UI, API).
    """
    slots = _check(win, slots)
    if slots.shape[0] == 0:
        return _empty_trend_events()
    return _evaluate_trend(state, win, unique_slots(slots, win._stamp))


def _evaluate_trend(state: TrendState, win: Window, idx) -> TrendEvents:
    s = win.sums[:, idx]
    n = s[S_N]
    st = s[S_T]
    num = n * s[S_TV] - st * s[S_V]
    den = n * s[S_TT] - st * st
    num *= 60.0
    den *= state.gate[idx]
    possible = num >= den  # slope ≥ min(rate, rate_hold) needs this (den > 0)
    possible |= state.active[idx]
    possible &= win.last_valid[idx]  # newest reading not a measurement: the bit holds
    c = np.flatnonzero(possible)
    if c.size == 0:
        return _empty_trend_events()
    ids = c + idx.start if isinstance(idx, slice) else idx[c]
    sl = _slope(win.sums[:, ids], state.min_samples[ids])
    value = win.last_value[ids]
    fc = _forecast(value, sl, state.limit[ids])
    old = state.active[ids]
    # Still rising now: the newest value is not below the window's mean. After a drop the
    # least-squares slope over the window can stay positive for a while (the high samples
    # are recent), but that is a fall, not a trend towards the limit.
    sw = win.sums[:, ids]
    rising = value * sw[S_N] >= sw[S_V]
    raise_ = (sl >= state.rate[ids]) & (fc <= state.horizon[ids]) & rising
    hold = (sl >= state.rate_hold[ids]) & (fc <= state.horizon_hold[ids]) & rising
    new = (old & hold) | (~old & raise_)
    state.active[ids] = new
    changed = np.flatnonzero(old != new)
    if changed.size == 0:
        return _empty_trend_events()
    s = ids[changed]
    return TrendEvents(s.astype(np.int32), new[changed], value[changed], win.last_ts[s],
                       sl[changed], fc[changed])


def trend_figures(state: TrendState, win: Window, slots=None) -> tuple[np.ndarray, np.ndarray]:
    """(slope unit/min, seconds to the alarm limit) per point, from the current windows: what
    the screen and the API show ("预计 N 分钟后达到 1.00%")."""
    idx = slice(None) if slots is None else slots
    sl = _slope(win.sums[:, idx], state.min_samples[idx])
    return sl, _forecast(win.last_value[idx], sl, state.limit[idx])


# --- messages ----------------------------------------------------------------------------------


def forecast_text(forecast_s: float, limit: float, unit: str = "%", digits: int = 2) -> str:
    """"预计 N 分钟后达到 1.00%" (whole minutes, rounded down: never later than the forecast);
    under a minute "预计 N 秒后达到 …" (nearest second); empty without a finite forecast."""
    if not math.isfinite(forecast_s) or not math.isfinite(limit):
        return ""
    target = f"{limit:.{digits}f}{unit}"
    seconds = max(round(forecast_s), 0)  # nearest second: 29.9999 s is "30 秒"
    if seconds < 60:
        return f"预计 {seconds} 秒后达到 {target}"
    return f"预计 {seconds // 60} 分钟后达到 {target}"


def trend_message(name: str, slope_per_min: float, forecast_s: float, limit: float,
                  unit: str = "%", digits: int = 2) -> str:
    """e.g. "1101回风隅角 甲烷 上升 1.20%/min，预计 30 秒后达到 1.00%"."""
    rise = f"{name} 上升 {slope_per_min:.{digits}f}{unit}/min"
    eta = forecast_text(forecast_s, limit, unit, digits)
    return f"{rise}，{eta}" if eta else rise
