"""Alarm state survives a restart: open alarms (records), and from the journal the interlock
latches, shelves whose alarm has cleared, out-of-service entries and calibration windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from minewatch.procs import start_service
from tests.conftest import RunningService

HEADING_RELAY = "002C01"
SIGNED = {"user": "带班领导", "reason": "局扇已恢复，甲烷低于复电浓度"}  # a restore needs both


def _lockout(svc: RunningService, relay: str) -> dict:
    return next(r for r in svc.get("/api/v1/lockouts").json() if r["relay"] == relay)


def _alarm(svc: RunningService, kind: str, point: str) -> dict | None:
    return next((a for a in svc.get("/api/v1/alarms", params={"state": "open"}).json()
                 if a["kind"] == kind and a["point_id"] == point), None)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_latches_shelves_and_calibrations_survive_a_restart(tmp_path: Path, backend: str,
                                                            request):
    extra = ("--database-url", request.getfixturevalue("pg_url")) if backend == "postgres" \
        else ()
    data_dir = tmp_path / "data"
    svc = start_service(tmp_path, *extra, data_dir=data_dir)
    try:
        # 风电闭锁: the heading's fan stops, the relay is cut and latched.
        svc.inject("fan-stop", "002D01")
        svc.wait_for(lambda: "fan" in _lockout(svc, HEADING_RELAY)["locks"], timeout=5)
        # A shelved CO fault alarm (shelving is per point + kind and outlives the alarm).
        svc.inject("sensor-fault", "002A04")
        alarm = svc.wait_for(lambda: _alarm(svc, "fault", "002A04"), timeout=5)
        r = svc.post(f"/api/v1/alarms/{alarm['id']}/shelve",
                     json={"user": "调度员", "reason": "传感器待更换", "minutes": 60})
        assert r.status_code == 200, r.text
        # Out of service and a declared calibration.
        assert svc.post("/api/v1/points/003A03/out-of-service",
                        json={"user": "维修工", "reason": "检修"}).status_code == 200
        assert svc.post("/api/v1/points/001A04/calibration",
                        json={"user": "监测工", "minutes": 30}).status_code == 200
        calibration = svc.get("/api/v1/points/001A04").json()["calibration"]
        # Wait until the journal holds what was done (the store writer is asynchronous).
        svc.wait_for(lambda: len(svc.get("/api/v1/journal", params={
            "event": ["calibration_declared", "lockout_changed", "alarm_shelved",
                      "point_out_of_service"]}).json()["rows"]) >= 4, timeout=10)
    finally:
        svc.stop()

    svc = start_service(tmp_path, *extra, data_dir=data_dir)
    try:
        # The restarted simulator's fan runs again, yet the latch holds: manual restore only.
        lock = svc.wait_for(lambda: _lockout(svc, HEADING_RELAY), timeout=5)
        assert "fan" in lock["locks"] and lock["cut"] is True
        assert _alarm(svc, "lockout", HEADING_RELAY) is not None
        assert svc.get("/api/v1/points/001A04").json()["calibration"] == calibration
        # The sensor fault is gone after the restart (a new simulator) but the shelf is kept:
        # the same fault raised again is recorded, not annunciated.
        svc.inject("sensor-fault", "002A04")
        again = svc.wait_for(lambda: _alarm(svc, "fault", "002A04"), timeout=5)
        assert again["shelved"] is True and again["annunciated"] is False
        svc.inject("sensor-fault", "003A03")
        oos = svc.wait_for(lambda: _alarm(svc, "fault", "003A03"), timeout=5)
        assert oos["out_of_service"] is True and oos["annunciated"] is False
        # Manual restore works once the interlocks are evaluated on fresh readings (and is
        # refused before: "系统启动中").
        r = svc.wait_for(lambda: (x := svc.post(f"/api/v1/relays/{HEADING_RELAY}/restore",
                                                json=SIGNED)).status_code == 200
                         and x, timeout=10, interval=0.3)
        svc.wait_for(lambda: not _lockout(svc, HEADING_RELAY)["locks"], timeout=5)
    finally:
        svc.stop()


def test_an_open_incident_survives_a_restart(tmp_path: Path):
    data_dir = tmp_path / "data"
    svc = start_service(tmp_path, data_dir=data_dir)
    try:
        svc.inject("gas-overlimit", "001A02")
        inc = svc.wait_for(lambda: next(iter(svc.get(
            "/api/v1/incidents", params={"state": "open"}).json()), None), timeout=10)
        r = svc.post(f"/api/v1/incidents/{inc['id']}/steps/report:shift_leader/ack",
                     json={"user": "张建国"})
        assert r.status_code == 200, r.text
        # Stored (the writer is asynchronous): the acknowledgement is in the journal.
        svc.wait_for(lambda: svc.get("/api/v1/journal", params={
            "event": "incident_step_done"}).json()["rows"], timeout=10)
    finally:
        svc.stop()
    svc = start_service(tmp_path, data_dir=data_dir)
    try:
        again = svc.get(f"/api/v1/incidents/{inc['id']}").json()
        assert again["state"] == "open"
        steps = {s["name"]: s for s in again["steps"]}
        assert steps["report:shift_leader"]["state"] == "done"
        assert steps["report:shift_leader"]["by"] == "张建国"
        assert steps["report:dispatch"]["state"] == "active"  # the chain goes on
        # It is still the live incident: acknowledging works after the restart.
        r = svc.post(f"/api/v1/incidents/{inc['id']}/steps/report:dispatch/ack",
                     json={"user": "李明"})
        assert r.status_code == 200, r.text
    finally:
        svc.stop()
