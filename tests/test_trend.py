"""Trend (rate of rise + time-to-limit forecast): vectorized ≡ per-reading reference, and
scenarios with concrete numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.trend import (
    DEFAULT_TREND,
    WindowParams,
    evaluate_trend,
    forecast,
    forecast_text,
    judged,
    new_trend_state,
    new_window,
    push,
    slope,
    trend_figures,
    trend_message,
    trend_state_for,
    variance,
)
from minewatch.readings import Quality
from tests.reference_trend import ReferenceTrend, RefWindow

NAN, INF = math.nan, math.inf
T0 = 1_780_000_000.0  # epoch seconds: float32 could not hold these, the window must cope


# --- property test -----------------------------------------------------------------------------
# Values on a 1/64 grid and times on a 0.5 s grid keep every sum exact in float64 and every
# cell exact in float32, so the vectorized running sums and the reference's from-scratch sums
# must agree bit for bit (slopes, forecasts and therefore every edge).

value_st = st.one_of(st.integers(-64, 192).map(lambda k: k / 64), st.just(NAN), st.just(INF))
quality_st = st.sampled_from([0] * 6 + [int(q) for q in Quality if q != Quality.OK])
params_st = st.fixed_dictionaries({
    "rate": st.sampled_from([NAN, 0.0, 0.125, 1.0, 2.0, 4.0, 30.0]),
    "horizon": st.sampled_from([4.0, 30.0, 600.0, INF]),
    "hysteresis": st.sampled_from([0.0, 0.25, 0.5]),
    "min_samples": st.sampled_from([2.0, 3.0, 5.0]),
    "limit": st.sampled_from([NAN, 0.5, 1.0, 2.0, 64.0]),
})


@st.composite
def streams(draw, max_slots=5):
    n = draw(st.integers(1, max_slots))
    size = draw(st.sampled_from([2, 3, 4, 7]))
    gap = draw(st.sampled_from([2.0, 5.0, 1e9]))
    params = [draw(params_st) for _ in range(n)]
    t = 1000.0
    last = [0.0] * n  # ramps: most readings step from the point's previous value
    batches = []
    for _ in range(draw(st.integers(1, 14))):
        rows = []
        for _ in range(draw(st.integers(0, 3 * n))):
            t += draw(st.sampled_from([0.0, 0.5, 0.5, 1.0, 1.5, 3.0, 6.0]))
            slot = draw(st.integers(0, n - 1))
            if draw(st.booleans()):
                value = draw(value_st)
            else:
                value = last[slot] + draw(st.sampled_from([-1, 0, 1, 1, 2, 4, 8])) / 64
            if math.isfinite(value):
                last[slot] = value
            rows.append((slot, t - draw(st.sampled_from([0, 0, 0, 2])), value,
                         draw(quality_st)))
        batches.append(rows)
    return n, size, gap, params, batches


def _key(row):
    return tuple(("nan",) if isinstance(x, float) and math.isnan(x) else x for x in row)


def _same(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.array_equal(a, b, equal_nan=True))


@settings(max_examples=400, deadline=None)
@given(streams())
def test_vectorized_trend_matches_reference(stream):
    n, size, gap, params, batches = stream
    win = new_window(n, WindowParams(size=size, reset_gap_s=gap))
    state = new_trend_state(*(np.array([p[k] for p in params]) for k in
                              ("limit", "rate", "horizon", "hysteresis", "min_samples")))
    ref_win = RefWindow(n, size, gap)
    ref = ReferenceTrend(ref_win, params)
    for rows in batches:
        slots = np.array([r[0] for r in rows], dtype=np.int64)
        ts = np.array([r[1] for r in rows])
        values = np.array([r[2] for r in rows])
        quality = np.array([r[3] for r in rows], dtype=np.int8)
        valid = judged(values, quality)
        accepted = push(win, slots, ts, values, valid)
        ref_accepted = [ref_win.push(s, t, v, bool(ok)) for (s, t, v, _), ok in
                        zip(rows, valid, strict=True)]
        assert accepted.tolist() == ref_accepted
        got = evaluate_trend(state, win, slots)
        expected = ref.evaluate(slots.tolist())
        assert sorted(map(_key, got.rows())) == sorted(map(_key, expected))
    assert state.active.tolist() == [p.active for p in ref.points]
    sl, fc = trend_figures(state, win)
    assert _same(sl, [p.slope for p in ref.points])
    assert _same(fc, [p.forecast for p in ref.points])
    mins = np.array([p["min_samples"] for p in params])
    assert _same(slope(win, None, mins), [ref_win.slope(i, mins[i]) for i in range(n)])
    assert _same(variance(win), [ref_win.variance(i) for i in range(n)])
    assert win.sums[0].tolist() == [len(ref_win.samples(i)) for i in range(n)]
    assert _same(win.last_value, [s.last_value for s in ref_win.slots])
    assert _same(win.last_ts, [s.last_ts for s in ref_win.slots])


@st.composite
def ramps(draw):
    """One reading per point per 1 s poll, each a step from the last: slopes that wander
    through the raise and hold bands, so the hysteresis is exercised on every example."""
    n = draw(st.integers(1, 4))
    size = draw(st.sampled_from([2, 3, 5]))
    params = [draw(st.fixed_dictionaries({
        "rate": st.sampled_from([1.875, 3.75, 7.5]),  # 2, 4, 8 steps of 1/64 per s
        "horizon": st.sampled_from([30.0, 600.0, INF]),
        "hysteresis": st.sampled_from([0.0, 0.25, 0.5]),
        "min_samples": st.sampled_from([2.0, 3.0]),
        "limit": st.sampled_from([4.0, 64.0]),
    })) for _ in range(n)]
    steps = draw(st.lists(st.lists(st.integers(-2, 10), min_size=n, max_size=n),
                          min_size=1, max_size=60))
    return n, size, params, steps


@settings(max_examples=200, deadline=None)
@given(ramps())
def test_trend_hysteresis_on_ramps_matches_reference(stream):
    n, size, params, steps = stream
    win = new_window(n, WindowParams(size=size, reset_gap_s=10.0))
    state = new_trend_state(*(np.array([p[k] for p in params]) for k in
                              ("limit", "rate", "horizon", "hysteresis", "min_samples")))
    ref_win = RefWindow(n, size, 10.0)
    ref = ReferenceTrend(ref_win, params)
    values = np.zeros(n)
    for k, step in enumerate(steps):
        values = values + np.array(step) / 64
        ts = np.full(n, 1000.0 + k)
        push(win, np.arange(n), ts, values, np.ones(n, bool))
        for i in range(n):
            ref_win.push(i, ts[i], values[i], True)
        got = evaluate_trend(state, win, np.arange(n))
        assert sorted(map(_key, got.rows())) == sorted(map(_key, ref.evaluate(range(n))))
    assert state.active.tolist() == [p.active for p in ref.points]


# --- scenarios -----------------------------------------------------------------------------


def _ch4_point(n=1, size=60, gap=60.0, limit=1.0):
    win = new_window(n, WindowParams(size=size, reset_gap_s=gap))
    state = trend_state_for(["ch4"] * n, np.full(n, limit))
    return win, state


def _feed(win, state, series, t_start=T0, step=1.0, slot=0):
    """Push one reading per call (one poll per batch) and collect the trend edges."""
    events = []
    for i, v in enumerate(series):
        t = t_start + i * step
        valid = judged([v], [0])
        push(win, [slot], [t], [v], valid)
        events += evaluate_trend(state, win, [slot]).rows()
    return events


def test_rise_of_0_02_percent_per_second_from_0_4_forecasts_30_s():
    win, state = _ch4_point()
    # 1 s polls rising 0.02 %/s, the newest reading 0.40 %: slope 1.2 %/min, limit 1.0 %.
    series = [0.40 - 0.02 * k for k in range(9, -1, -1)]  # 0.22 … 0.40, 10 samples
    events = _feed(win, state, series)
    assert trend_figures(state, win)[0][0] == pytest.approx(1.2, rel=1e-5)
    assert trend_figures(state, win)[1][0] == pytest.approx(30.0, rel=1e-5)
    assert state.active[0]
    [(slot, raised, value, ts, sl, fc)] = events  # raised once, at the 10th sample
    assert (slot, raised) == (0, True)
    assert value == pytest.approx(0.40) and ts == T0 + 9
    assert forecast_text(fc, 1.0) == "预计 30 秒后达到 1.00%"
    assert trend_message("1101回风隅角 甲烷", sl, fc, 1.0) == (
        "1101回风隅角 甲烷 上升 1.20%/min，预计 30 秒后达到 1.00%")
    # Keeps rising: the bit holds (no new event); the forecast shortens.
    events = _feed(win, state, [0.42, 0.44, 0.46], t_start=T0 + 10)
    assert events == []
    assert trend_figures(state, win)[1][0] == pytest.approx((1.0 - 0.46) / 1.2 * 60, rel=1e-5)
    # Reaches the alarm limit: no forecast any more, the trend clears (over_limit takes over).
    series = [0.48 + 0.02 * k for k in range(27)]  # … 1.00
    events = _feed(win, state, series, t_start=T0 + 13)
    assert [e[1] for e in events] == [False]
    assert events[0][2] == pytest.approx(1.0)
    assert math.isnan(trend_figures(state, win)[1][0])


def test_slow_rise_below_rate_and_far_forecast_do_not_raise():
    win, state = _ch4_point()
    # 0.05 %/min: below the 0.1 %/min rate.
    assert _feed(win, state, [0.30 + 0.05 / 60 * k for k in range(60)]) == []
    assert trend_figures(state, win)[0][0] == pytest.approx(0.05, rel=1e-4)
    last = 0.30 + 0.05 / 60 * 59
    assert trend_figures(state, win)[1][0] == pytest.approx((1.0 - last) / 0.05 * 60, rel=1e-4)
    # 0.12 %/min from 0.20 %: limit in 6.7 min; raised with a 10 min horizon ...
    win, state = _ch4_point()
    events = _feed(win, state, [0.20 - 0.002 * (59 - k) for k in range(60)])
    assert trend_figures(state, win)[0][0] == pytest.approx(0.12, rel=1e-4)
    assert trend_figures(state, win)[1][0] == pytest.approx(400.0, rel=1e-4)
    assert [e[1] for e in events] == [True]
    assert forecast_text(trend_figures(state, win)[1][0], 1.0) == "预计 6 分钟后达到 1.00%"
    # ... but not with a 5 min horizon.
    win, _ = _ch4_point()
    state = new_trend_state([1.0], 0.1, 300.0, 0.2, 10)
    assert _feed(win, state, [0.20 - 0.002 * (59 - k) for k in range(60)]) == []


def test_hysteresis_holds_until_slope_falls_below_rate_times_1_minus_h():
    win, state = _ch4_point()
    t = T0
    v = 0.10

    def ramp(per_min, count=60):
        nonlocal t, v
        series = []
        for _ in range(count):
            v += per_min / 60
            series.append(v)
        ev = _feed(win, state, series, t_start=t)
        t += count
        return [e[1] for e in ev]

    assert ramp(0.12) == [True]
    assert ramp(0.09) == []  # 0.09 ≥ 0.1 × (1 − 0.2): holds
    assert trend_figures(state, win)[0][0] == pytest.approx(0.09, rel=1e-4)
    assert ramp(0.07) == [False]  # below 0.08: clears
    assert ramp(0.09) == []  # 0.09 < 0.1: does not raise again


def test_flat_and_falling_values_forecast_inf():
    assert forecast(0.5, 0.0, 1.0) == INF
    assert forecast(0.5, -0.3, 1.0) == INF
    assert math.isnan(forecast(1.2, 0.5, 1.0))  # already above
    assert math.isnan(forecast(1.0, 0.5, 1.0))  # at the limit
    assert math.isnan(forecast(0.5, NAN, 1.0))  # no slope yet
    assert math.isnan(forecast(0.5, 0.5, NAN))  # no limit
    assert forecast(0.5, 0.5, 1.0) == pytest.approx(60.0)
    assert forecast_text(INF, 1.0) == ""
    assert forecast_text(245.0, 24.0, " ppm", 0) == "预计 4 分钟后达到 24 ppm"


def test_nan_gaps_use_only_valid_samples_and_need_min_samples():
    win, state = _ch4_point()
    values = np.array([0.3 + 0.01 * k for k in range(30)])
    quality = np.zeros(30, np.int8)
    values[2::3] = NAN  # every third reading lost
    quality[1::5] = Quality.FAULT  # and some faulty
    for k in range(30):
        push(win, [0], [T0 + k], [values[k]], judged(values[k:k + 1], quality[k:k + 1]))
    ok = ~np.isnan(values) & (quality == 0)
    assert win.sums[0, 0] == ok.sum()
    expected = np.polyfit(np.arange(30)[ok], values[ok], 1)[0] * 60
    assert slope(win)[0] == pytest.approx(expected, rel=1e-5)  # 0.6 %/min
    # Fewer than min_samples valid samples: no slope, no trend.
    win, state = _ch4_point()
    events = _feed(win, state, [0.3, NAN, 0.5, NAN, 0.7, 0.8, NAN, NAN, 0.9])
    assert events == [] and math.isnan(trend_figures(state, win)[0][0])


def test_replays_and_out_of_order_readings_are_ignored():
    win, state = _ch4_point()
    _feed(win, state, [0.3 + 0.01 * k for k in range(20)])
    before = win.sums.copy()
    acc = push(win, [0, 0, 0], [T0 + 19, T0 + 5, T0 + 18.5], [3.0, 3.0, 3.0], [True] * 3)
    assert not acc.any()
    assert np.array_equal(win.sums, before)
    assert evaluate_trend(state, win, [0]).rows() == []


def test_gap_longer_than_reset_gap_empties_the_window():
    win, state = _ch4_point(gap=60.0)
    _feed(win, state, [0.2 + 0.01 * k for k in range(30)])
    assert state.active[0]
    # 5 minutes of silence, then readings resume: the window restarts, no slope across it.
    events = _feed(win, state, [0.9], t_start=T0 + 330)
    assert win.sums[0, 0] == 1 and math.isnan(trend_figures(state, win)[0][0])
    assert [e[1] for e in events] == [False]


def test_several_readings_of_one_point_in_a_batch_equal_sequential_pushes():
    rng = np.random.default_rng(3)
    n, per = 7, 25
    slots = np.repeat(np.arange(n), per)
    rng.shuffle(slots)
    ts = T0 + np.arange(slots.size) * 0.25
    values = rng.uniform(0, 1.5, slots.size)
    valid = rng.random(slots.size) > 0.1
    a = new_window(n, WindowParams(size=16, reset_gap_s=60))
    b = new_window(n, WindowParams(size=16, reset_gap_s=60))
    assert push(a, slots, ts, values, valid).all()
    for s, t, v, ok in zip(slots, ts, values, valid, strict=True):
        push(b, [s], [t], [v], [ok])
    # Same cells and counts (time offsets may differ: the rolling re-base ran at other times).
    assert np.array_equal(a.cells[..., 0], b.cells[..., 0])
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.head, b.head)
    assert np.array_equal(a.sums[0], b.sums[0])
    assert np.allclose(slope(a), slope(b), rtol=1e-9, equal_nan=True)


def test_contiguous_and_scattered_batches_give_the_same_state():
    rng = np.random.default_rng(5)
    n = 200
    a = new_window(n)
    b = new_window(n)
    sa = trend_state_for(["ch4"] * n, np.full(n, 1.0))
    sb = trend_state_for(["ch4"] * n, np.full(n, 1.0))
    base = rng.uniform(0, 0.6, n)
    rate = rng.uniform(-0.01, 0.02, n)
    for k in range(150):
        v = base + rate * k + rng.normal(0, 0.002, n)
        order = rng.permutation(n)
        push(a, np.arange(n), np.full(n, T0 + k), v, np.ones(n, bool))
        push(b, order, np.full(n, T0 + k), v[order], np.ones(n, bool))
        ea = sorted(map(_key, evaluate_trend(sa, a, np.arange(n)).rows()))
        eb = sorted(map(_key, evaluate_trend(sb, b, order).rows()))
        assert ea == eb
    assert np.array_equal(a.cells, b.cells) and np.array_equal(a.valid, b.valid)
    assert np.array_equal(sa.active, sb.active)


def test_slope_stays_exact_over_many_laps_at_epoch_timestamps():
    """float32 offsets from a float64 base rebased each lap: no drift after 100 laps (the
    residual 1e-7 relative error is the float32 rounding of sub-second offsets)."""
    rng = np.random.default_rng(11)
    n, w = 50, 30
    win = new_window(n, WindowParams(size=w, reset_gap_s=60))
    hist_t, hist_v = [], []
    t = T0 + 0.123
    for _ in range(100 * w):
        t += rng.uniform(0.4, 0.6)
        v = rng.uniform(0.1, 0.9, n)
        push(win, np.arange(n), np.full(n, t), v, np.ones(n, bool))
        hist_t.append(t)
        hist_v.append(v.astype(np.float32).astype(np.float64))
    tt = np.array(hist_t[-w:]) - hist_t[-1]
    vv = np.array(hist_v[-w:])
    expected = np.polyfit(tt, vv, 1)[0] * 60
    assert np.allclose(slope(win), expected, rtol=1e-5, atol=1e-9)


def test_defaults_and_param_arrays():
    state = trend_state_for(["ch4", "wind", "co"], [1.0, 4.0, 24.0])
    assert state.rate[0] == DEFAULT_TREND["ch4"].rate_per_min == 0.1
    assert math.isnan(state.rate[1])  # no trend rule for wind
    assert state.rate[2] == DEFAULT_TREND["co"].rate_per_min
    assert state.horizon[0] == 600.0


def test_slot_out_of_range_raises():
    win = new_window(3)
    with pytest.raises(IndexError):
        push(win, [3], [T0], [0.1], [True])


def test_a_drop_after_a_step_is_not_a_trend():
    """A step above the limit then back down leaves a positive least-squares slope over the
    window for a while; the newest value below the window mean means it is a fall."""
    from alarms.trend import evaluate_trend, new_window, push, trend_state_for

    win = new_window(1)
    state = trend_state_for(["ch4"], np.array([1.0]))
    t, raised = 1000.0, []
    for value in [0.3] * 30 + [1.8] * 3 + [0.3] * 10:
        t += 0.5
        push(win, np.array([0]), np.array([t]), np.array([value]), np.array([True]))
        raised += [r for r in evaluate_trend(state, win, np.array([0])).rows() if r[1]]
    assert raised == []
