"""Trend early warning on the running service: methane rising towards its alarm limit raises a
`trend` alarm with a time-to-limit forecast before the limit is reached."""

from __future__ import annotations

from tests.conftest import RunningService

POINT = "001A03"  # 1101 face return methane: alarm 1.0 %, baseline ≈ 0.3 %


def test_rising_methane_raises_a_trend_alarm_with_a_forecast(shared_service: RunningService):
    s = shared_service
    # Rise from ~0.3 % towards 0.95 % over 40 s (≈ 1 %/min): below the alarm limit throughout.
    s.inject("gas-alarm", POINT, value=0.95, ramp_s=40)

    def trend_alarm():
        alarms = s.get("/api/v1/alarms", params={"state": "active"}).json()
        return next((a for a in alarms if a["kind"] == "trend" and a["point_id"] == POINT),
                    None)
    alarm = s.wait_for(trend_alarm, timeout=25, interval=0.2)
    assert "趋势预警" in alarm["message"] and "预计" in alarm["message"]
    assert "1.00%" in alarm["message"] and alarm["value"] < 1.0
    point = s.get(f"/api/v1/points/{POINT}").json()
    assert point["trend"]["active"] is True
    assert point["trend"]["slope_per_min"] > 0.1
    assert point["trend"]["forecast_s"] is not None and "预计" in point["trend"]["forecast_text"]
    assert point["state"] == "normal"  # an early warning, not an over-limit
    other = s.get("/api/v1/points/001A01").json()["trend"]
    assert other["active"] is False
    s.inject("clear", POINT)
    # Back at baseline the rise is over: the trend alarm returns to normal.
    s.wait_for(lambda: trend_alarm() is None, timeout=40, interval=0.5)
