"""Regulators' statistics as pure functions: event merging, clipping, coverage, per point."""

from __future__ import annotations

import itertools

import pytest

from alarms.statistics import (
    EVENT_GAP_S,
    Event,
    aligned_cover,
    clipped_duration,
    cut_delays,
    events_in_period,
    merge_events,
    point_statistics,
    union_duration,
)
from minewatch.records import AlarmRecord, CommandRecord

T = 1_800_000_000.0  # an hour boundary (1_800_000_000 / 3600 = 500_000)


def alarm(id_, kind, start, end=None, point="001A02", drill=False) -> AlarmRecord:
    return AlarmRecord(id=id_, point_id=point, kind=kind, severity=2,
                       state="cleared" if end is not None else "unack_active", raised_at=start,
                       value=1.2, message="", cleared_at=end, drill=drill)


def cut(id_, alarm_id, issued, sent=None) -> CommandRecord:
    return CommandRecord(id=id_, action="cut", target="001C01", area="face_1101", reason="",
                         issued_by="engine", issued_at=issued, alarm_id=alarm_id,
                         sent_at=sent, result="sent" if sent else "pending")


# --- merge_events --------------------------------------------------------------------------
def test_gap_of_exactly_ten_minutes_merges_and_one_second_more_splits():
    assert EVENT_GAP_S == 600
    assert merge_events([(0, 60), (660, 700)]) == [Event(0, 700, 2)]
    assert merge_events([(0, 60), (661, 700)]) == [Event(0, 60, 1), Event(661, 700, 1)]


def test_chain_of_short_gaps_is_one_event_measured_from_the_event_end():
    # each gap ≤ 10 min from the *event's* end, though 1200 s from the first alarm's end
    assert merge_events([(0, 10), (600, 610), (1200, 1210)]) == [Event(0, 1210, 3)]


def test_overlapping_nested_and_unsorted_intervals():
    assert merge_events([(100, 200), (0, 1000), (50, 60)]) == [Event(0, 1000, 3)]
    assert merge_events([]) == []


def test_open_interval_keeps_the_event_open_and_absorbs_later_ones():
    assert merge_events([(0, 10), (100, None), (5000, 5100)]) == [Event(0, None, 3)]
    assert merge_events([(0, None)])[0].open


def test_open_event_after_a_long_gap_is_a_new_event():
    assert merge_events([(0, 10), (700, None)]) == [Event(0, 10, 1), Event(700, None, 1)]


def test_end_before_start_is_treated_as_zero_length():
    assert merge_events([(10, 5)]) == [Event(10, 10, 1)]


def test_zero_gap_merges_only_touching_or_overlapping():
    assert merge_events([(0, 10), (10, 20)], gap_s=0) == [Event(0, 20, 2)]
    assert len(merge_events([(0, 10), (10.5, 20)], gap_s=0)) == 2


# --- clipping ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("start", "end", "expected"), [
    (10, 20, 10),  # inside
    (-50, 20, 20),  # straddles the start
    (90, 150, 10),  # straddles the end
    (-10, 200, 100),  # covers the whole period
    (-20, -10, 0),  # before
    (150, 160, 0),  # after
    (50, None, 50),  # open: counted up to hi
    (-30, None, 100),  # open, straddling the start
])
def test_clipped_duration(start, end, expected):
    assert clipped_duration(start, end, 0, 100) == expected


def test_open_interval_counts_up_to_until_only():
    assert clipped_duration(50, None, 0, 100, until=70) == 20
    assert clipped_duration(80, None, 0, 100, until=70) == 0  # raised "after now" (skew)


def test_events_straddling_the_bounds_count_once_clipped():
    events = merge_events([(-300, 30), (3500, 3700), (5000, 5010)])
    found = events_in_period(events, 0, 3600)
    assert [(e.start, d) for e, d in found] == [(-300, 30), (3500, 100)]


def test_event_touching_a_bound_from_outside_is_not_in_the_period():
    events = [Event(-100, 0), Event(100, 100), Event(3600, 3700)]
    found = events_in_period(events, 0, 3600)
    assert [(e.start, d) for e, d in found] == [(100, 0)]  # zero-length inside counts


def test_merge_across_the_period_start_counts_one_event():
    # before the period: 0..10; inside: 300..400 (gap 290 s ≤ 600) → one event
    found = events_in_period(merge_events([(0, 10), (300, 400)]), 100, 1000)
    assert len(found) == 1 and found[0][1] == 300


def test_union_duration_counts_overlaps_once():
    assert union_duration([(0, 50), (40, 60), (80, 90)], 0, 100) == 70
    assert union_duration([(90, None)], 0, 100, until=95) == 5
    assert union_duration([], 0, 100) == 0


# --- aligned_cover ------------------------------------------------------------------------------
def test_aligned_cover_uses_whole_hours_minutes_then_raw():
    lo, hi = T - 90.5, T + 7200 + 61.25
    segs = aligned_cover(lo, hi)
    assert segs == [(0, lo, T - 60), (60, T - 60, T), (3600, T, T + 7200),
                    (60, T + 7200, T + 7260), (0, T + 7260, hi)]


@pytest.mark.parametrize(("lo", "hi"), [(T + 1, T + 2), (T + 10, T + 3000), (T, T + 3600),
                                        (T - 1, T + 1), (T + 0.5, T + 86400 * 3 + 0.25)])
def test_aligned_cover_is_exact_disjoint_and_ordered(lo, hi):
    segs = aligned_cover(lo, hi)
    assert segs[0][1] == lo and segs[-1][2] == hi
    for (_, _, b), (_, a, _) in itertools.pairwise(segs):
        assert b == a
    for w, a, b in segs:
        assert a < b
        if w:
            assert a % w == 0 and b % w == 0
    assert aligned_cover(5, 5) == []


# --- per point -------------------------------------------------------------------------------
def test_point_statistics_events_cuts_faults_and_drills():
    lo, hi = T, T + 3600
    alarms = [
        alarm("a1", "over_limit", T + 100, T + 400),
        alarm("a2", "power_cut_limit", T + 110, T + 300),  # inside a1: same event
        alarm("a3", "over_limit", T + 1000, T + 1100),  # gap 600 s: still the same event
        alarm("a4", "over_limit", T + 2000, None),  # gap 900 s: new, open event
        alarm("d1", "over_limit", T + 50, T + 3000, drill=True),  # drills never count
        alarm("f1", "fault", T - 600, T + 600),
        alarm("f2", "stale", T + 500, T + 900),  # overlaps f1: counted once
        alarm("o1", "over_limit", T + 10, T + 20, point="001A01"),
    ]
    commands = [cut("c1", "a2", T + 110.2, T + 110.7), cut("c2", "a2", T + 110.2, T + 110.9),
                cut("c3", "zz", T + 5, T + 6),  # unknown alarm: no point
                cut("c4", "a2", T - 10, T - 9)]  # issued before the period
    stats = point_statistics(["001A02", "001A01", "001A03"], alarms, commands, lo, hi,
                             until=T + 3000)
    s = stats["001A02"]
    assert s.over_limit_events == 2 and s.open_events == 1
    assert s.over_limit_s == pytest.approx((1100 - 100) + (3000 - 2000))
    assert s.power_cuts == 2
    assert s.mean_time_to_power_cut_s == pytest.approx(0.8)
    assert s.max_time_to_power_cut_s == pytest.approx(0.9)
    assert s.fault_s == 900 and s.sensor_fault_hours == pytest.approx(0.25)
    assert stats["001A01"].over_limit_events == 1 and stats["001A01"].over_limit_s == 10
    assert stats["001A03"].over_limit_events == 0 and stats["001A03"].mean_time_to_power_cut_s \
        is None
    assert sorted(cut_delays(alarms, commands, lo, hi)) == pytest.approx([0.7, 0.9])


def test_open_event_without_until_runs_to_the_period_end():
    stats = point_statistics(["001A02"], [alarm("a", "power_cut_limit", T + 3000)], [], T,
                             T + 3600)
    assert stats["001A02"].over_limit_s == 600 and stats["001A02"].open_events == 1
