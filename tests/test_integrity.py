"""Sensor integrity (数据造假/异常) detectors: vectorized ≡ per-reading reference, and one
scenario per detector with concrete numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.integrity import (
    CAL_OVERLONG,
    CAL_UNDECLARED,
    DEFAULT_INTEGRITY,
    DISAGREE,
    DROP,
    FLAT,
    NEGATIVE,
    REASONS,
    IntegrityParams,
    evaluate_integrity,
    integrity_message,
    integrity_state_for,
    new_integrity_state,
    reason_names,
)
from alarms.trend import WindowParams, judged, new_window, push
from minewatch.readings import Quality
from tests.reference_integrity import ReferenceIntegrity
from tests.reference_trend import RefWindow

NAN, INF = math.nan, math.inf
T0 = 1_780_000_000.0
CAL = int(Quality.CALIBRATING)

# --- property test -----------------------------------------------------------------------------
# Values on a 1/64 grid, times on a 0.5 s grid: exact sums, so both sides agree bit for bit.

value_st = st.one_of(st.integers(-16, 96).map(lambda k: k / 64), st.just(NAN))
quality_st = st.sampled_from([0] * 6 + [CAL, CAL, int(Quality.FAULT), int(Quality.OUT_OF_RANGE)])
params_st = st.fixed_dictionaries({
    "flat_var_eps": st.sampled_from([NAN, 0.0, 1 / 64]),
    "flat_min_samples": st.sampled_from([2.0, 3.0]),
    "flat_duration_s": st.sampled_from([0.0, 1.0, 3.0]),
    "fresh_level": st.sampled_from([NAN, 0.0, 1 / 32, 0.25]),
    "high_level": st.sampled_from([NAN, 0.5, 1.0]),
    "drop_within_s": st.sampled_from([0.0, 2.0, 10.0]),
    "neighbour_max_age_s": st.sampled_from([1.0, 5.0, 100.0]),
    "negative_tolerance": st.sampled_from([NAN, -1 / 16]),
    "negative_slope_per_min": st.sampled_from([NAN, 0.0, 1.0]),
    "negative_min_samples": st.sampled_from([2.0, 3.0]),
    "agree_tol": st.sampled_from([NAN, 0.0, 0.25]),
    "agree_rel": st.sampled_from([0.0, 0.5]),
    "agree_duration_s": st.sampled_from([0.0, 2.0]),
    "calibration_max_s": st.sampled_from([NAN, 1.0, 10.0]),
})


@st.composite
def streams(draw):
    n = draw(st.integers(1, 5))
    size = draw(st.sampled_from([2, 3, 5]))
    gap = draw(st.sampled_from([4.0, 1e9]))
    slot_st = st.integers(-1, n - 1)
    points = []
    for _ in range(n):
        p = draw(params_st)
        p.update(expects_noise=draw(st.booleans()), up=draw(slot_st), down=draw(slot_st),
                 lag=draw(st.integers(0, size - 1)))
        points.append(p)
    t = 1000.0
    batches = []
    for _ in range(draw(st.integers(1, 14))):
        declare = None
        if draw(st.integers(0, 3)) == 0:
            start = t + draw(st.sampled_from([-5.0, 0.0, 2.0, NAN]))
            declare = (draw(st.integers(0, n - 1)), start,
                       start + draw(st.sampled_from([0.5, 3.0, 20.0, INF])))
        rows = []
        for _ in range(draw(st.integers(0, 3 * n))):
            t += draw(st.sampled_from([0.0, 0.5, 0.5, 1.0, 2.5, 6.0]))
            rows.append((draw(st.integers(0, n - 1)), t - draw(st.sampled_from([0, 0, 0, 2])),
                         draw(value_st), draw(quality_st)))
        batches.append((declare, rows))
    return n, size, gap, points, batches


def _key(row):
    return tuple(("nan",) if isinstance(x, float) and math.isnan(x) else x for x in row)


@settings(max_examples=400, deadline=None)
@given(streams())
def test_vectorized_integrity_matches_reference(stream):
    n, size, gap, points, batches = stream
    win = new_window(n, WindowParams(size=size, reset_gap_s=gap))
    params = {k: np.array([p[k] for p in points]) for k in IntegrityParams.__slots__}
    state = new_integrity_state(params, [p["expects_noise"] for p in points],
                                [p["up"] for p in points], [p["down"] for p in points],
                                [p["lag"] for p in points], width=size)
    ref_win = RefWindow(n, size, gap)
    ref = ReferenceIntegrity(ref_win, points)
    for declare, rows in batches:
        if declare is not None:
            slot, start, end = declare
            state.declare_calibration([slot], start, end)
            ref.points[slot].cal_start, ref.points[slot].cal_end = start, end
        slots = np.array([r[0] for r in rows], dtype=np.int64)
        ts = np.array([r[1] for r in rows])
        values = np.array([r[2] for r in rows])
        quality = np.array([r[3] for r in rows], dtype=np.int8)
        valid = judged(values, quality)
        accepted = push(win, slots, ts, values, valid)
        for (s, t, v, q), ok in zip(rows, valid, strict=True):
            if ref_win.push(s, t, v, bool(ok)):
                ref.observe(s, t, v, bool(ok), q)
        got = evaluate_integrity(state, win, slots, ts, quality, accepted)
        expected = ref.evaluate()
        assert sorted(map(_key, got.rows())) == sorted(map(_key, expected))
        assert state.reasons.tolist() == [p.reasons for p in ref.points]
    assert not state._seen.any()


# --- scenarios -----------------------------------------------------------------------------


class Line:
    """Points on one airflow, one reading per point per 1 s poll; collects integrity edges."""

    def __init__(self, n=1, size=60, *, up=None, down=None, lag=None, noise=True,
                 table=DEFAULT_INTEGRITY):
        self.win = new_window(n, WindowParams(size=size, reset_gap_s=60))
        self.state = integrity_state_for(["ch4"] * n, [noise] * n, up, down, lag, table,
                                         width=size)
        self.n = n
        self.t = T0
        self.events = []

    def poll(self, values, quality=None, slots=None):
        slots = np.arange(self.n) if slots is None else np.asarray(slots)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        q = np.zeros(len(slots), np.int8) if quality is None else np.asarray(quality, np.int8)
        ts = np.full(len(slots), self.t)
        valid = judged(values, q)
        acc = push(self.win, slots, ts, values, valid)
        self.events += evaluate_integrity(self.state, self.win, slots, ts, q, acc).rows()
        self.t += 1.0

    def hold(self, values, seconds, quality=None):
        for _ in range(int(seconds)):
            self.poll(values, quality)

    def reasons(self, slot=0):
        return reason_names(self.state.reasons[slot])


def test_flat_line_on_a_sensor_that_normally_varies():
    line = Line()
    noise = [0.35, 0.36, 0.35, 0.34]
    for k in range(120):  # a live return sensor: ±0.01 % jitter, variance 5e-5 ≫ 1e-6
        line.poll([noise[k % 4]])
    assert line.reasons() == []
    # Frozen at 0.35 % from poll 120: the window holds only 0.35 from poll 179 on (variance
    # 0), suspect 30 min later, at poll 1979.
    line.hold([0.35], 59 + 1800)
    assert line.reasons() == []
    line.poll([0.35])
    assert line.reasons() == ["flat_line"]
    [(slot, raised, mask, prev, value, _ts)] = line.events
    assert (slot, raised, mask, prev) == (0, True, int(FLAT), 0)
    assert value == pytest.approx(0.35)
    # One count of jitter (0.36 in 60 samples: variance 1.6e-6 > 1e-6) clears it.
    line.poll([0.36])
    assert line.reasons() == [] and line.events[-1][1] is False
    # A sensor flagged as not expected to vary (intake air, 0.00 % for days) is never flat.
    quiet = Line(noise=False)
    quiet.hold([0.0], 4000)
    assert quiet.events == []


def test_sudden_drop_to_fresh_air_while_neighbours_stay_high():
    # 0 = face T1 (upstream), 1 = return corner T0, 2 = return gate T2 (downstream).
    line = Line(3, up=[-1, 0, 1], down=[1, 2, -1])
    line.hold([0.55, 0.60, 0.50], 120)
    line.hold([0.55, 0.30, 0.50], 5)  # the corner sensor is being covered ...
    line.hold([0.55, 0.02, 0.50], 1)  # ... reads fresh air 6 s after its last 0.60
    assert line.reasons(1) == ["drop_to_fresh_air"]
    assert line.reasons(0) == [] and line.reasons(2) == []
    line.hold([0.55, 0.02, 0.50], 299)  # stays covered: the suspect holds (latched) ...
    assert line.reasons(1) == ["drop_to_fresh_air"]
    line.hold([0.55, 0.02, 0.50], 1)  # ... and after 5 min it also disagrees with the face:
    # |0.02 - 0.55| = 0.53 > 0.30 + 0.25 × 0.55
    assert line.reasons(1) == ["drop_to_fresh_air", "neighbour_disagreement"]
    line.hold([0.02, 0.02, 0.02], 1)  # the whole airflow clears: no longer suspect
    assert line.reasons(1) == []
    assert [(e[0], e[1], e[2]) for e in line.events if e[0] == 1] == [
        (1, True, int(DROP)), (1, True, int(DROP | DISAGREE)), (1, False, int(DROP | DISAGREE))]
    # The pairwise check also flags the return gate, downstream of the covered sensor
    # (0.50 vs 0.02 > 0.305): both messages name the corner sensor as the common factor.
    assert [(e[0], e[1], e[2]) for e in line.events if e[0] != 1] == [
        (2, True, int(DISAGREE)), (2, False, int(DISAGREE))]


def test_drop_with_neighbours_also_low_or_a_slow_decline_is_not_suspect():
    line = Line(3, up=[-1, 0, 1], down=[1, 2, -1])
    line.hold([0.55, 0.60, 0.50], 60)
    line.hold([0.02, 0.02, 0.02], 5)  # everything drops together (ventilation improved)
    assert line.events == []
    line = Line(3, up=[-1, 0, 1], down=[1, 2, -1])
    line.hold([0.55, 0.60, 0.50], 60)
    for k in range(600):  # the corner declines over 10 min: not a sudden drop
        line.poll([0.55, 0.60 - 0.001 * k, 0.50])
    line.hold([0.55, 0.02, 0.50], 10)
    assert line.events == []


def test_drop_to_zero_is_a_drop_to_fresh_air():
    line = Line(2, up=[-1, 0], down=[1, -1])
    line.hold([0.45, 0.40], 30)
    line.hold([0.45, 0.00], 1)
    assert line.reasons(1) == ["drop_to_fresh_air"]


def test_negative_drift():
    line = Line(noise=False)
    line.hold([-0.04], 60)  # inside the -0.05 % tolerance, not falling
    assert line.reasons() == []
    line.poll([-0.06])  # below the tolerance
    assert line.reasons() == ["negative_drift"]
    line.poll([0.01])
    assert line.reasons() == []
    # Below zero and still falling 0.01 %/min (≥ 0.005) over 60 samples: suspect at -0.01 %.
    line = Line(noise=False)
    for k in range(60):
        line.poll([0.0 - 0.01 / 60 * k])
    assert line.reasons() == ["negative_drift"]
    assert line.win.last_value[0] == pytest.approx(-0.0098, abs=1e-4)


def test_disagreement_with_the_upstream_point_after_the_lag():
    # 0 = upstream face sensor, 1 = downstream return sensor, 5 polls (5 s) of air travel.
    line = Line(2, up=[-1, 0], down=[1, -1], lag=[0, 5])
    line.hold([0.80, 0.40], 300)  # |0.40 - 0.80| = 0.40 ≤ 0.30 + 0.25 × 0.80 = 0.50
    assert line.events == []
    line.hold([0.80, 0.20], 300)  # 0.60 > 0.50, but not yet for 5 min
    assert line.reasons(1) == []
    line.poll([0.80, 0.20])
    assert line.reasons(1) == ["neighbour_disagreement"]
    assert line.reasons(0) == []
    line.poll([0.80, 0.70])
    assert line.reasons(1) == []


def test_lag_lets_the_downstream_point_follow_an_upstream_step():
    table = {"ch4": IntegrityParams(agree_tol=0.1, agree_duration_s=0.0)}
    for lag, expect_events in ((5, False), (0, True)):
        line = Line(2, up=[-1, 0], down=[1, -1], lag=[0, lag], table=table)
        line.hold([0.30, 0.30], 30)
        for k in range(20):  # upstream steps to 0.80 %; downstream 5 s later
            line.poll([0.80, 0.30 if k < 5 else 0.80])
        assert bool(line.events) is expect_events


def test_calibration_undeclared_and_overlong():
    line = Line(noise=False)
    line.state.declare_calibration([0], T0 + 100, T0 + 700)  # a declared 10 min window
    line.hold([0.10], 100)
    line.hold([2.00], 300, quality=[CAL])  # standard gas inside the window: fine
    line.hold([0.10], 400)
    assert line.events == []
    line.hold([2.00], 5, quality=[CAL])  # calibrating at T0 + 800: not declared
    assert line.reasons() == ["calibration_undeclared"]
    line.poll([0.10])
    assert line.reasons() == []
    # A 3 h window declared: suspect while it is in force.
    line.state.declare_calibration([0], line.t + 10, line.t + 3 * 3600)
    line.hold([0.10], 9)
    assert line.reasons() == []
    line.hold([0.10], 2)
    assert line.reasons() == ["calibration_overlong"]
    # An open window: suspect once it has run longer than 30 min.
    line.state.declare_calibration([0], line.t, INF)
    line.hold([0.10], 1801)
    assert line.reasons() == []
    line.hold([0.10], 1)
    assert line.reasons() == ["calibration_overlong"]
    line.state.declare_calibration([0], NAN, NAN)  # withdrawn
    line.poll([0.10])
    assert line.reasons() == []


def test_undeclared_calibration_inside_a_batch_is_not_lost():
    line = Line(noise=False)
    line.hold([0.1], 10)
    slots, ts = np.zeros(3, np.int64), T0 + np.array([10.0, 10.5, 11.0])
    values, q = np.array([0.1, 2.0, 0.1]), np.array([0, CAL, 0], np.int8)
    valid = judged(values, q)
    acc = push(line.win, slots, ts, values, valid)
    ev = evaluate_integrity(line.state, line.win, slots, ts, q, acc)
    assert [(r[1], r[2]) for r in ev.rows()] == [(True, int(CAL_UNDECLARED))]


def test_reasons_change_while_suspect_and_messages():
    line = Line(noise=False)
    line.hold([-0.06], 3)
    line.hold([-0.06], 1, quality=[CAL])  # calibrating, not declared; still negative
    rows = [(e[1], e[2], e[3]) for e in line.events]
    assert rows == [(True, int(NEGATIVE), 0),
                    (True, int(NEGATIVE | CAL_UNDECLARED), int(NEGATIVE))]
    assert integrity_message(int(NEGATIVE | CAL_UNDECLARED)) == (
        "疑似数据异常：读数负漂；未申报标校却出现标校数据")
    assert integrity_message(int(DISAGREE), "001A02") == (
        "疑似数据异常：与上风侧测点 001A02 读数不一致")
    assert integrity_message(0) == ""
    assert len(REASONS) == 6 and int(CAL_OVERLONG) == 32


def test_a_batch_for_one_point_re_evaluates_its_neighbours():
    line = Line(2, up=[-1, 0], down=[1, -1])
    line.hold([0.5, 0.5], 30)
    line.poll([0.5], slots=[1])  # only the downstream point reports
    line.poll([0.02], slots=[1])  # ... and drops while its upstream (heard 2 s ago) is high
    assert line.reasons(1) == ["drop_to_fresh_air"]
    line.poll([0.02], slots=[0])  # the upstream now reads fresh air too: re-evaluated
    assert line.reasons(1) == []


def test_layout_validation():
    with pytest.raises(ValueError):
        integrity_state_for(["ch4"], [True], up=[1])
    with pytest.raises(ValueError):
        integrity_state_for(["ch4", "ch4"], [True, True], up=[-1, 0], lag=[0, 60], width=60)
    s = integrity_state_for(["ch4", "wind"], [True, False])
    assert s.fresh_level[0] == 0.03 and math.isnan(s.fresh_level[1])
