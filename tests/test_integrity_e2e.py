"""Sensor integrity, calibration declarations and alarm noise control on the running service.

Numbers from thresholds.toml: methane fresh-air level 0.03 %, "high" 0.30 %, alarm 1.0 %;
calibration readings outside a declared window are suspect; chattering = 3 activations of one
alarm within 60 s; flood = more than 10 annunciated alarms within 10 minutes.
"""

from __future__ import annotations

from tests.conftest import RunningService


def _active(svc: RunningService, kind: str, point: str | None = None) -> dict | None:
    alarms = svc.get("/api/v1/alarms", params={"state": "active"}).json()
    return next((a for a in alarms if a["kind"] == kind
                 and (point is None or a["point_id"] == point)), None)


def _journal(svc: RunningService, event: str) -> list[dict]:
    rows = svc.get("/api/v1/journal", params={"limit": 10_000, "event": event}).json()["rows"]
    assert all(r["event"] == event for r in rows)
    return rows


def test_undeclared_calibration_is_suspect_and_raises_no_gas_alarm(
        shared_service: RunningService):
    s = shared_service
    s.inject("calibrate", "001A05", value=1.2)  # standard gas 1.2 % > alarm 1.0 %, no declaration
    alarm = s.wait_for(lambda: _active(s, "suspect", "001A05"), timeout=10, interval=0.2)
    assert "未申报标校" in alarm["message"]
    point = s.get("/api/v1/points/001A05").json()
    assert point["state"] == "calibrating" and "calibration_undeclared" in point["integrity"]
    assert _active(s, "over_limit", "001A05") is None  # calibration gas is not a gas alarm
    s.inject("clear", "001A05")
    s.wait_for(lambda: _active(s, "suspect", "001A05") is None, timeout=10, interval=0.2)


def test_declared_calibration_flags_readings_and_raises_nothing(shared_service: RunningService):
    s = shared_service
    r = s.post("/api/v1/points/001A04/calibration",
               json={"user": "监测工", "reason": "月度标校", "minutes": 10})
    assert r.status_code == 200, r.text
    assert r.json()["start"] and r.json()["end"]
    # The substation does not flag these readings: inside the declared window they are
    # calibrating all the same, so 1.2 % raises no over-limit alarm and cuts nothing.
    s.inject("gas-alarm", "001A04", value=1.2)
    s.wait_for(lambda: s.get("/api/v1/points/001A04").json()["value"] >= 1.15, timeout=10)
    point = s.get("/api/v1/points/001A04").json()
    assert point["state"] == "calibrating" and point["calibration"]["end"]
    assert point["quality"] == "calibrating"
    assert _active(s, "over_limit", "001A04") is None
    assert _active(s, "suspect", "001A04") is None
    assert _journal(s, "calibration_declared")[-1]["subject"] == "001A04"
    s.inject("clear", "001A04")
    r = s.delete("/api/v1/points/001A04/calibration", params={"user": "监测工"})
    assert r.status_code == 200, r.text
    assert s.delete("/api/v1/points/001A04/calibration",
                    params={"user": "监测工"}).status_code == 409
    assert s.post("/api/v1/points/XXX/calibration",
                  json={"user": "a", "minutes": 1}).status_code == 404
    assert s.post("/api/v1/points/001A04/calibration",
                  json={"user": "a", "minutes": 0}).status_code == 422


def test_covered_sensor_drops_to_zero_while_its_upstream_neighbour_is_high(
        shared_service: RunningService):
    s = shared_service
    # 001A02 (return corner) is upstream of 001A03 (return gate) on the same air.
    s.inject("gas-alarm", "001A02", value=0.6)
    s.inject("gas-alarm", "001A03", value=0.6)
    s.wait_for(lambda: s.get("/api/v1/points/001A03").json()["value"] >= 0.55, timeout=10)
    s.inject("sensor-cover", "001A03")
    alarm = s.wait_for(lambda: _active(s, "suspect", "001A03"), timeout=10, interval=0.2)
    assert "骤降" in alarm["message"]
    assert "drop_to_fresh_air" in s.get("/api/v1/points/001A03").json()["integrity"]
    for p in ("001A02", "001A03"):
        s.inject("clear", p)


def test_chattering_alarm_is_recorded_and_latched(service: RunningService):
    s, point = service, "001A01"
    for _ in range(3):  # over the alarm limit and back, three times within a minute
        s.inject("gas-alarm", point, value=1.2)
        s.wait_for(lambda: _active(s, "over_limit", point), timeout=10, interval=0.1)
        s.inject("clear", point)
        s.wait_for(lambda: s.get(f"/api/v1/points/{point}").json()["value"] < 0.9, timeout=10)
        if _journal(s, "alarm_chattering"):
            break
        s.wait_for(lambda: _active(s, "over_limit", point) is None, timeout=10, interval=0.1)
    rows = s.wait_for(lambda: _journal(s, "alarm_chattering"), timeout=10)
    assert rows[-1]["data"]["point_id"] == point and rows[-1]["data"]["kind"] == "over_limit"
    # Below the limit again, the chattering alarm stays on the screen until stable (60 s).
    alarm = _active(s, "over_limit", point)
    assert alarm is not None and "抖动" in alarm["message"]


def test_alarm_flood_raises_a_system_alarm(service: RunningService):
    s = service
    points = [p["id"] for p in s.get("/api/v1/points").json()
              if p["kind"] in ("ch4", "co", "temp")][:11]
    assert len(points) == 11
    for p in points:  # eleven sensor faults within seconds: more than 10 per 10 minutes
        s.inject("sensor-fault", p)
    alarm = s.wait_for(lambda: _active(s, "alarm_flood"), timeout=15, interval=0.2)
    assert "报警泛滥" in alarm["message"] and alarm["point_id"] == "FLOOD"
    assert _journal(s, "alarm_flood_started")
