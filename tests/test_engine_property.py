"""The vectorized engine must agree with the per-reading reference on random streams."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.engine import evaluate, new_state, sweep_stale
from minewatch.readings import Quality
from tests.reference_engine import ReferenceEngine

NAN = math.nan

limits_st = st.fixed_dictionaries({
    "alarm_hi": st.one_of(st.just(NAN), st.sampled_from([0.5, 0.7, 1.0, 1.5, 24.0])),
    "alarm_lo": st.one_of(st.just(NAN), st.sampled_from([0.25, 1.0, 20.0])),
    "cut": st.one_of(st.just(NAN), st.sampled_from([0.5, 1.0, 1.5])),
    "restore": st.sampled_from([0.5, 1.0]),
    "deadband": st.sampled_from([0.0, 0.05, 0.1]),
    "stale_after": st.sampled_from([1.0, 2.0]),
})
value_st = st.one_of(
    st.sampled_from([0.0, 0.45, 0.5, 0.65, 0.7, 0.95, 1.0, 1.05, 1.5, 1.6, 20.0, 24.0, -0.1]),
    st.floats(-1, 30, allow_nan=False),
    st.just(NAN), st.just(math.inf),
)
quality_st = st.sampled_from([int(q) for q in Quality if q != Quality.SUSPECT] + [0, 0, 0])


@st.composite
def streams(draw):
    limits = draw(st.lists(limits_st, min_size=1, max_size=6))
    n = len(limits)
    batches = []
    t = 1000.0
    for _ in range(draw(st.integers(1, 12))):
        size = draw(st.integers(0, 3 * n))
        rows = []
        for _ in range(size):
            t += draw(st.sampled_from([0.0, 0.1, 0.5]))  # 0.0 → replayed timestamps
            rows.append((draw(st.integers(0, n - 1)), t - draw(st.sampled_from([0, 0, 5])),
                         draw(value_st), draw(quality_st)))
        sweep_at = t + draw(st.sampled_from([0.0, 1.5, 3.0]))
        batches.append((rows, t, sweep_at))
    return limits, batches


def _as_set(events):
    return sorted((s, k, r, math.isnan(v), 0.0 if math.isnan(v) else v, t)
                  for s, k, r, v, t in events)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_vectorized_engine_matches_reference(stream):
    limits, batches = stream
    state = new_state(*(np.array([lim[k] for lim in limits]) for k in
                        ("alarm_hi", "alarm_lo", "cut", "restore", "deadband", "stale_after")))
    ref = ReferenceEngine(limits)
    for rows, received, sweep_at in batches:
        expected = []
        for slot, ts, value, q in rows:
            expected += ref.apply(slot, ts, value, q, received)
        got = evaluate(state, [r[0] for r in rows], [r[1] for r in rows],
                       [r[2] for r in rows], [r[3] for r in rows], received)
        assert _as_set(got.rows()) == _as_set(expected)
        got_sweep = sweep_stale(state, sweep_at)
        assert _as_set(got_sweep.rows()) == _as_set(ref.sweep(sweep_at))
    for slot, p in enumerate(ref.points):
        got_active = {k for k, b in zip(
            ("over_limit", "power_cut_limit", "under_limit", "fault", "stale"),
            [(int(state.bits[slot]) >> i) & 1 for i in range(5)], strict=True) if b}
        assert got_active == p.active


def test_a_non_finite_timestamp_is_ignored_and_does_not_shadow_later_readings():
    state = new_state([1.0], [math.nan], [1.5], [1.0], [0.0], [60.0])
    q = np.array([Quality.OK], dtype=np.int8)
    for bad in (math.inf, math.nan):
        ev = evaluate(state, np.array([0]), np.array([bad]), np.array([2.0]), q, 0.0)
        assert len(ev) == 0
    ev = evaluate(state, np.array([0]), np.array([100.0]), np.array([2.0]), q, 100.0)
    assert {k for _s, k, r, _v, _t in ev.rows() if r} == {"over_limit", "power_cut_limit"}
