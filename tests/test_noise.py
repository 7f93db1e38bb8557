"""Noise control (ISA-18.2 / EEMUA 191): on/off-delay, chattering, flood; vectorized ≡ reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.engine import ALARM_KINDS
from alarms.noise import (
    ChatterParams,
    DelayParams,
    FloodParams,
    NoiseControl,
    NoiseParams,
    channel_arrays,
    chatter_step,
    chatter_sweep,
    delay_step,
    delay_sweep,
    flood_step,
    flood_sweep,
    new_chatter_state,
    new_delay_state,
    new_flood_state,
    positions_from_mine,
    window_count,
)
from minewatch.mine import Mine
from tests.reference_noise import ref_chatter, ref_delay, ref_flood

OVER, CUT, UNDER, FAULT, STALE = range(len(ALARM_KINDS))


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- on-delay / off-delay ------------------------------------------------------------------------

def test_on_delay_condition_must_persist():
    s = new_delay_state([5.0], [0.0])
    assert len(delay_step(s, [0], [True], 0.0)) == 0
    assert len(delay_sweep(s, 4.9)) == 0
    assert len(delay_step(s, [0], [False], 3.0)) == 0  # reverted within 5 s: nothing, ever
    assert len(delay_sweep(s, 100.0)) == 0
    delay_step(s, [0], [True], 10.0)
    assert delay_sweep(s, 20.0).rows() == [(0, True, 15.0, 10.0)]  # raised at 15, began at 10
    assert delay_step(s, [0], [False], 21.0).rows() == [(0, False, 21.0, 21.0)]  # no off-delay


def test_off_delay_holds_the_alarm_and_resolves_before_the_next_input():
    s = new_delay_state([0.0], [30.0])
    assert delay_step(s, [0], [True], 0.0).rows() == [(0, True, 0.0, 0.0)]
    assert delay_step(s, [0], [False], 10.0).rows() == []
    assert delay_step(s, [0], [True], 20.0).rows() == []  # back within 30 s: never cleared
    delay_step(s, [0], [False], 50.0)
    # No sweep in between: the clear that matured at 80 is emitted before the raise at 90.
    assert delay_step(s, [0], [True], 90.0).rows() == [(0, False, 80.0, 50.0),
                                                       (0, True, 90.0, 90.0)]


def test_safety_critical_kinds_may_not_be_delayed():
    with pytest.raises(ValueError, match="safety-critical"):
        channel_arrays(2, NoiseParams(delays={"power_cut_limit": DelayParams(on_delay_s=1)}))
    on, off, crit = channel_arrays(
        2, NoiseParams(delays={"under_limit": DelayParams(10, 5),
                               "power_cut_limit": DelayParams(0, 3)}))
    assert on.tolist() == [0, 0, 10, 0, 0] * 2
    assert off.tolist() == [0, 3, 5, 0, 0] * 2
    assert crit.tolist() == [False, True, False, False, False] * 2


# --- chattering ---------------------------------------------------------------------------------

def _edges(rows):
    ch, raised, at = zip(*rows, strict=True)
    s = new_delay_state(np.zeros(8), np.zeros(8))
    return delay_step(s, list(ch), list(raised), np.array(at))


def test_three_activations_in_a_minute_is_chattering_and_is_silenced_until_stable():
    st_ = new_chatter_state(8, ChatterParams(activations=3, window_s=60, stable_s=60))
    seq = [(2, True, 0.0), (2, False, 5.0), (2, True, 20.0), (2, False, 25.0), (2, True, 50.0),
           (2, False, 55.0), (2, True, 70.0)]
    shown, recs = chatter_step(st_, _edges(seq))
    # The first two activations and their clears are shown; the third is the chatter.
    assert [(a, r) for _, r, a, _ in shown.rows()] == [(0.0, True), (5.0, False), (20.0, True),
                                                       (25.0, False)]
    assert recs.rows() == [(2, True, 50.0, 3)]
    assert bool(st_.chattering[2])
    shown, recs = chatter_sweep(st_, 129.0)
    assert len(shown) == 0 and len(recs) == 0  # last transition at 70: stable at 130
    shown, recs = chatter_sweep(st_, 200.0)
    assert recs.rows() == [(2, False, 130.0, 2)]  # two activations while chattering
    assert shown.rows() == [(2, True, 130.0, 70.0)]  # the real state: active since 70


def test_slow_activations_are_not_chattering():
    st_ = new_chatter_state(8, ChatterParams(3, 60, 60))
    seq = [(1, True, 0.0), (1, False, 1.0), (1, True, 40.0), (1, False, 41.0),
           (1, True, 61.0)]
    shown, recs = chatter_step(st_, _edges(seq))
    assert len(recs) == 0 and len(shown) == 5


def test_critical_channel_chatter_is_flagged_never_silenced():
    crit = np.zeros(8, bool)
    crit[CUT] = True
    st_ = new_chatter_state(8, ChatterParams(3, 60, 60), crit)
    seq = [(CUT, r, t) for t, r in [(0, True), (1, False), (2, True), (3, False), (4, True)]]
    shown, recs = chatter_step(st_, _edges(seq))
    assert len(shown) == 5
    assert recs.rows() == [(CUT, True, 4.0, 3)]


# --- flood --------------------------------------------------------------------------------------

def test_flood_starts_above_ten_per_ten_minutes_and_ends_below_five():
    st_ = new_flood_state(2)
    times = [i * 30.0 for i in range(11)]  # 11 alarms in 300 s at position 1
    ev = flood_step(st_, [1] * 11, times)
    assert ev.rows() == [(1, True, 300.0, 11, 11)]  # the 11th alarm starts the flood
    assert len(flood_step(st_, [0] * 10, np.arange(10.0))) == 0  # 10 is not a flood
    # The count falls below 5 when the 5th most recent (at 180 s) leaves: 180 + 600 = 780.
    assert len(flood_sweep(st_, 779.0)) == 0
    assert window_count(st_, 779.0).tolist() == [0, 5]
    assert flood_sweep(st_, 900.0).rows() == [(1, False, 780.0, 11, 11)]
    assert not st_.flooding.any()


def test_flood_counts_alarms_during_the_episode_and_peak():
    st_ = new_flood_state(1)
    flood_step(st_, [0] * 12, np.arange(12.0))  # start at t=10 with 11 in window
    flood_step(st_, [0] * 3, [700.0, 701.0, 702.0])  # window (102, 702]: only these 3
    ev = flood_sweep(st_, 10_000.0)
    # At 700 the 5th most recent was t=7 → the flood had already ended at 607.
    assert ev.rows() == [] and not st_.flooding[0]
    st_ = new_flood_state(1)
    start = flood_step(st_, [0] * 11, np.arange(11.0))
    assert start.rows() == [(0, True, 10.0, 11, 11)]
    flood_step(st_, [0] * 4, [11.0, 12.0, 13.0, 14.0])
    end = flood_sweep(st_, 10_000.0)
    assert end.rows() == [(0, False, 610.0, 15, 15)]  # 5th most recent: 10 → 610


# --- the pipeline with an injectable clock ----------------------------------------------------

def test_noise_control_with_injected_clock():
    clock = FakeClock(100.0)
    nc = NoiseControl(3, NoiseParams(delays={"under_limit": DelayParams(10.0, 0.0)}),
                      position_of_slot=[0, 0, 1], clock=clock)
    out = nc.step([0, 1], [UNDER, CUT], [True, True])  # time from the clock: 100
    assert [(int(c), bool(r), float(a)) for c, r, a, _ in out.edges.rows()] == \
        [(nc.channel(1, CUT).item(), True, 100.0)]  # power cut: no delay
    clock.t = 105.0
    assert len(nc.sweep().edges) == 0
    clock.t = 111.0
    out = nc.sweep()
    slots, kinds = nc.split(out.edges.channels)
    assert (slots.tolist(), kinds.tolist(), out.edges.at.tolist()) == ([0], [UNDER], [110.0])


def test_positions_from_mine_by_area():
    mine = Mine.load()
    pos = positions_from_mine(mine, {"heading_2102": 1, "roadheader_2102": 1})
    ids = [p.id for p in mine.points]
    assert pos[ids.index("002A01")] == 1 and pos[ids.index("001A01")] == 0


# --- property: NoiseControl ≡ per-channel reference ---------------------------------------------

@st.composite
def histories(draw):
    n_slots = draw(st.integers(1, 3))
    delays = {k: DelayParams(draw(st.sampled_from([0.0, 0.0, 2.0, 5.0])) if k not in
                             ("power_cut_limit",) else 0.0,
                             draw(st.sampled_from([0.0, 0.0, 3.0])))
              for k in ALARM_KINDS}
    chatter = ChatterParams(draw(st.integers(2, 4)), draw(st.sampled_from([10.0, 30.0])),
                            draw(st.sampled_from([5.0, 20.0])))
    flood = FloodParams(window_s=draw(st.sampled_from([20.0, 60.0])),
                        start_above=draw(st.integers(2, 6)), end_below=draw(st.integers(1, 2)),
                        capacity=64)
    positions = draw(st.lists(st.integers(0, 1), min_size=n_slots, max_size=n_slots))
    t = 0.0
    batches = []
    for _ in range(draw(st.integers(1, 15))):
        rows = []
        for _ in range(draw(st.integers(0, 5))):
            t += draw(st.sampled_from([0.0, 0.5, 1.0, 4.0]))
            rows.append((draw(st.integers(0, n_slots - 1)),
                         draw(st.sampled_from([OVER, CUT, UNDER])), draw(st.booleans()), t))
        sweep = t + draw(st.sampled_from([0.0, 1.0, 3.0])) if draw(st.booleans()) else None
        if sweep is not None:
            t = sweep
        batches.append((rows, sweep))
    return n_slots, NoiseParams(delays, chatter, flood), positions, batches, t + 1000.0


@settings(max_examples=300, deadline=None)
@given(histories())
def test_noise_control_matches_reference(hist):
    n_slots, params, positions, batches, until = hist
    nc = NoiseControl(n_slots, params, position_of_slot=positions)
    edges, chatter, flood = [], [], []

    def collect(out):
        edges.extend(out.edges.rows())
        chatter.extend(out.chatter.rows())
        flood.extend(out.flood.rows())

    inputs: dict[int, list[tuple[float, bool]]] = {}
    for rows, sweep in batches:
        if rows:
            s, k, r, t = zip(*rows, strict=True)
            collect(nc.step(list(s), list(k), list(r), np.array(t)))
            for slot, kind, raised, at in rows:
                inputs.setdefault(int(nc.channel(slot, kind)), []).append((at, raised))
        if sweep is not None:
            collect(nc.sweep(sweep))
    collect(nc.sweep(until))

    want_edges, want_chatter, times = [], [], {}
    n_kinds = len(ALARM_KINDS)
    for ch, hist_ in inputs.items():
        kind = ALARM_KINDS[ch % n_kinds]
        d = params.delay(kind)
        delayed = ref_delay(hist_, d.on_delay_s, d.off_delay_s, until)
        shown, recs = ref_chatter(delayed, params.chatter.activations, params.chatter.window_s,
                                  params.chatter.stable_s, kind == "power_cut_limit", until)
        want_edges += [(ch, r, a, s) for a, r, s in shown]
        want_chatter += [(ch, started, a, c) for started, a, c in recs]
        pos = positions[ch // n_kinds]
        times.setdefault(pos, []).extend(a for a, r, _ in shown if r)
    want_flood = []
    for pos, ts in times.items():
        f = params.flood
        want_flood += [(pos, *row) for row in ref_flood(sorted(ts), f.window_s, f.start_above,
                                                         f.end_below, until)]
    assert sorted(edges) == sorted(want_edges)
    assert sorted(chatter) == sorted(want_chatter)
    assert sorted(flood) == sorted(want_flood)
