"""Alarm-system KPIs (ISA-18.2) with concrete numbers over a one-hour period."""

from __future__ import annotations

import pytest

from alarms.kpi import KpiParams, alarm_kpis
from minewatch.records import AlarmRecord, OutOfService
from minewatch.store import JournalRow

T0, T1 = 0.0, 3600.0
HEADING = {"002A01": "heading", "002A02": "heading", "002A03": "heading", "002A05": "heading"}


def raised(at, point, kind, severity=2, **flags):
    data = {"id": f"A-{point}-{at}", "point_id": point, "kind": kind, "severity": severity,
            "state": "unack_active", "raised_at": at, "value": 1.0, "message": "m"}
    data.update(flags)
    return {"at": at, "event": "alarm_raised", "subject": data["id"], "data": data}


def journal():
    rows = []
    rows += [raised(t, "001A01", "over_limit") for t in (0.0, 60.0, 120.0)]
    rows += [raised(t, "003A01", "fault") for t in (1000.0, 1010.0, 1020.0)]
    rows.append(raised(3000.0, "001A02", "power_cut_limit", severity=1))
    rows.append(raised(3100.0, "001A03", "over_limit", shelved=True))  # not annunciated
    rows.append(raised(3200.0, "001A04", "over_limit", drill=True))  # drill: left out
    rows.append(raised(3700.0, "001A01", "over_limit"))  # after the period
    rows += [raised(1800.0 + 10 * i, "002A01" if i % 2 == 0 else "002A02", "over_limit")
             for i in range(12)]  # a burst of 12 in 110 s at the heading desk
    # Shelving: one during the period (still shelved at its end), one begun before it.
    rows.append({"at": 3050.0, "event": "alarm_shelved", "subject": "x", "data": {
        "point_id": "001A03", "kind": "over_limit", "shelved_by": "王工",
        "shelved_until": 3050.0 + 7200}})
    rows.append({"at": -600.0, "event": "alarm_shelved", "subject": "y", "data": {
        "point_id": "003A01", "kind": "fault", "shelved_by": "李工", "shelved_until": 6600.0}})
    rows.append({"at": 600.0, "event": "alarm_unshelved", "subject": "y", "data": {
        "point_id": "003A01", "kind": "fault"}})
    # Out of service: 002A03 for 20 minutes, 003A05 from 3000 to beyond the period.
    rows.append({"at": 1200.0, "event": "point_out_of_service", "subject": "002A03",
                 "data": OutOfService("002A03", "张工", "更换传感器", 1200.0).to_dict()})
    rows.append({"at": 2400.0, "event": "point_in_service", "subject": "002A03",
                 "data": OutOfService("002A03", "张工", "更换传感器", 1200.0,
                                      ended_at=2400.0, ended_by="张工").to_dict()})
    rows.append({"at": 3000.0, "event": "point_out_of_service", "subject": "003A05",
                 "data": OutOfService("003A05", "张工", "检修", 3000.0).to_dict()})
    return rows


def rec(id_, raised_at, state="cleared", cleared_at=None, acked_at=None, drill=False):
    return AlarmRecord(id_, "001A01", "over_limit", 2, state, raised_at, 1.0, "m",
                       cleared_at=cleared_at, acked_at=acked_at, drill=drill)


def records():
    return [
        rec("S1", -90000.0, state="ack_active", acked_at=-89000.0),  # active 26 h at the end
        rec("S2", -3600.0, cleared_at=1800.0),  # 1.5 h: not stale
        rec("S3", -100000.0, cleared_at=-10000.0),  # stale, but before the period
        rec("K1", 0.0, cleared_at=100.0, acked_at=30.0),
        rec("K2", 60.0, cleared_at=200.0, acked_at=150.0),
        rec("K3", 120.0, cleared_at=300.0, acked_at=130.0),
        rec("U1", 3000.0, state="unack_active"),
        rec("D1", 3200.0, state="unack_active", drill=True),
    ]


@pytest.fixture(scope="module")
def report():
    return alarm_kpis(records(), journal(), T0, T1, position_of=HEADING)


def test_counts_only_annunciated_non_drill_alarms_in_the_period(report):
    assert report.annunciated == 19  # 7 at dispatch + 12 at the heading desk
    assert report.not_annunciated == 1


def test_rate_per_position_per_ten_minutes(report):
    assert report.rate["dispatch"] == {"alarms": 7, "avg_per_10min": 1.167,
                                       "max_per_10min": 3, "pct_10min_over_flood": 0.0}
    assert report.rate["heading"] == {"alarms": 12, "avg_per_10min": 2.0,
                                      "max_per_10min": 12, "pct_10min_over_flood": 16.67}


def test_flood_episode_start_above_ten_end_below_five(report):
    # The 11th alarm (t=1900) starts it; it ends when the 5th most recent (t=1870) is 10
    # minutes old: 2470.
    assert report.floods == [{"position": "heading", "start": 1900.0, "end": 2470.0,
                              "alarms": 12, "peak_per_10min": 12, "duration_s": 570.0}]
    assert report.flood_time_s == 570.0
    assert report.flood_time_pct == 15.83


def test_top_ten_most_frequent(report):
    assert [(t["point_id"], t["kind"], t["count"]) for t in report.top] == [
        ("002A01", "over_limit", 6), ("002A02", "over_limit", 6), ("001A01", "over_limit", 3),
        ("003A01", "fault", 3), ("001A02", "power_cut_limit", 1)]
    assert report.top[0]["pct"] == 31.58


def test_chattering_alarms(report):
    assert report.chattering == [
        {"point_id": "002A01", "kind": "over_limit", "activations": 6, "max_in_window": 4},
        {"point_id": "002A02", "kind": "over_limit", "activations": 6, "max_in_window": 4},
        {"point_id": "003A01", "kind": "fault", "activations": 3, "max_in_window": 3},
    ]  # 001A01 (0, 60, 120 s): at most 2 in any minute, not chattering


def test_stale_alarms_active_more_than_a_day(report):
    assert report.stale == [{"id": "S1", "point_id": "001A01", "kind": "over_limit",
                             "raised_at": -90000.0, "active_s": 93600.0}]


def test_priority_mix(report):
    assert report.priority == {1: {"name": "紧急 critical", "count": 1, "pct": 5.26},
                               2: {"name": "高 high", "count": 18, "pct": 94.74}}


def test_shelved_and_out_of_service_time(report):
    assert report.shelved == [
        {"point_id": "003A01", "kind": "fault", "seconds": 600.0, "by": ["李工"]},
        {"point_id": "001A03", "kind": "over_limit", "seconds": 550.0, "by": ["王工"]}]
    assert report.shelved_s == 1150.0
    assert report.out_of_service == [{"point_id": "002A03", "seconds": 1200.0},
                                     {"point_id": "003A05", "seconds": 600.0}]
    assert report.out_of_service_s == 1800.0


def test_acknowledgement_times(report):
    assert report.ack == {"acknowledged": 3, "unacknowledged": 1, "median_s": 30.0,
                          "p90_s": 78.0}


def test_report_serialises_and_journal_rows_work_too(report):
    d = report.to_dict()
    assert d["priority"]["1"]["count"] == 1 and d["rate"]["heading"]["alarms"] == 12
    rows = [JournalRow(i, r["at"], r["event"], r["subject"], r["data"], "", "")
            for i, r in enumerate(journal())]
    again = alarm_kpis(records(), rows, T0, T1,
                       position_of=lambda point: HEADING.get(point, "dispatch"))
    assert again.to_dict() == d


def test_drills_included_on_request_and_empty_period():
    rep = alarm_kpis([], journal(), T0, T1, params=KpiParams(include_drill=True))
    assert rep.annunciated == 20  # one position, drill counted
    assert rep.rate["dispatch"]["alarms"] == 20
    empty = alarm_kpis([], [], T0, T1)
    assert empty.annunciated == 0 and empty.rate == {} and empty.floods == []
    assert empty.ack["median_s"] is None
    with pytest.raises(ValueError):
        alarm_kpis([], [], T1, T0)
