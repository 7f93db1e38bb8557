"""Alarm lifecycle over REST: shelve (refused for safety-critical alarms), unshelve, comment,
out of service, interlock state and KPIs — each change journaled."""

from __future__ import annotations

import time

from tests.conftest import RunningService


def _active(svc: RunningService, kind: str, point: str) -> dict:
    return svc.wait_for(lambda: next(
        (a for a in svc.get("/api/v1/alarms", params={"state": "active"}).json()
         if a["kind"] == kind and a["point_id"] == point), None), timeout=5)


def test_shelve_comment_and_out_of_service(shared_service: RunningService):
    s = shared_service
    s.inject("gas-alarm", "001A06")  # shearer methane between alarm 1.0 and cut 1.5
    alarm = _active(s, "over_limit", "001A06")
    r = s.post(f"/api/v1/alarms/{alarm['id']}/shelve",
               json={"user": "调度员", "reason": "传感器检修", "minutes": 30})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shelved"] is True and body["annunciated"] is False
    assert body["shelved_until"].endswith("Z")
    assert s.post(f"/api/v1/alarms/{alarm['id']}/shelve",
                  json={"user": "调度员", "reason": "x", "minutes": 30}).status_code == 409
    r = s.post(f"/api/v1/alarms/{alarm['id']}/comments",
               json={"user": "通风副总", "text": "已安排检查"})
    assert r.status_code == 200 and r.json()["comments"][-1]["text"] == "已安排检查"
    r = s.post(f"/api/v1/alarms/{alarm['id']}/unshelve", json={"user": "调度员"})
    assert r.status_code == 200 and r.json()["shelved"] is False
    s.inject("clear", "001A06")

    # Safety-critical: a power-cut alarm cannot be shelved.
    s.inject("gas-overlimit", "002A01")
    cut = _active(s, "power_cut_limit", "002A01")
    r = s.post(f"/api/v1/alarms/{cut['id']}/shelve",
               json={"user": "调度员", "reason": "x", "minutes": 10})
    assert r.status_code == 403 and "不能搁置" in r.json()["detail"]
    locks = {x["relay"]: x for x in s.get("/api/v1/lockouts").json()}
    assert "methane" in locks["002C01"]["locks"] and not locks["002C01"]["restore_allowed"]
    s.inject("clear", "002A01")

    r = s.post("/api/v1/points/001A07/out-of-service",
               json={"user": "仪表工", "reason": "更换传感器", "hours": 2})
    assert r.status_code == 200, r.text
    assert s.post("/api/v1/points/001A07/out-of-service",
                  json={"user": "仪表工", "reason": "again"}).status_code == 409
    r = s.delete("/api/v1/points/001A07/out-of-service", params={"user": "仪表工"})
    assert r.status_code == 200, r.text
    assert s.delete("/api/v1/points/001A07/out-of-service",
                    params={"user": "仪表工"}).status_code in (404, 409)
    journal = s.get("/api/v1/journal", params={"limit": 10_000}).json()["rows"]
    events = {row["event"] for row in journal}
    assert {"alarm_shelved", "alarm_commented", "alarm_unshelved"} <= events
    assert {"point_out_of_service", "point_in_service"} <= events

    kpi = s.get("/api/v1/kpi", params={"from": "2020-01-01T00:00:00Z"})
    assert kpi.status_code == 422  # period too long
    r = s.get("/api/v1/kpi", params={"from": str(time.time() - 3600)})
    assert r.status_code == 200, r.text
    report = r.json()
    # Raised this hour: 001A06 over-limit (while shelved it stays raised, not re-raised),
    # 002A01 over-limit and power-cut, and the 002 heading's lockout alarms.
    assert report["annunciated"] + report["not_annunciated"] >= 3
    assert "1" in report["priority"] and report["shelved_s"] > 0


def test_lifecycle_bad_requests(shared_service: RunningService):
    s = shared_service
    assert s.post("/api/v1/alarms/nope/shelve",
                  json={"user": "a", "reason": "b", "minutes": 5}).status_code == 404
    assert s.post("/api/v1/alarms/nope/shelve",
                  json={"user": "a", "reason": "b", "minutes": 9999}).status_code == 422
    assert s.post("/api/v1/points/XXX/out-of-service",
                  json={"user": "a", "reason": "b"}).status_code == 404
    assert s.get("/api/v1/kpi", params={"from": "bad"}).status_code == 422
