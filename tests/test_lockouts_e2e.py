"""Interlocks on the running service: 风电闭锁 when the heading's local fan stops, 故障闭锁 when
a guarding methane sensor fails (automatic unlock), and restore refused while unsafe."""

from __future__ import annotations

from tests.conftest import RunningService

HEADING_RELAYS = {"002C01", "002C02"}
SIGNED = {"user": "带班领导", "reason": "局扇已恢复，甲烷低于复电浓度"}  # a restore needs both


def _relays(svc: RunningService) -> dict[str, dict]:
    return {r["relay"]: r for r in svc.get("/api/v1/sim").json()["relays"]}


def _lockout_alarms(svc: RunningService) -> set[str]:
    alarms = svc.get("/api/v1/alarms", params={"state": "active"}).json()
    return {a["point_id"] for a in alarms if a["kind"] == "lockout"}


def test_fan_stop_locks_the_heading_until_the_fan_runs(service: RunningService):
    service.inject("fan-stop", "002D01")  # main local fan stops; the standby is not running
    service.wait_for(lambda: all(_relays(service)[r]["open"] for r in HEADING_RELAYS),
                     timeout=3, interval=0.05)
    service.wait_for(lambda: _lockout_alarms(service) >= HEADING_RELAYS, timeout=3)
    alarm = next(a for a in service.get("/api/v1/alarms", params={"state": "active"}).json()
                 if a["kind"] == "lockout")
    assert "风电闭锁" in alarm["message"] and alarm["severity"] == 1
    assert not _relays(service)["001C01"]["open"]  # other areas keep power
    r = service.post("/api/v1/relays/002C01/restore", json=SIGNED)
    assert r.status_code == 409 and "局部通风机" in r.json()["detail"]
    service.inject("clear", "002D01")  # the fan runs again
    service.wait_for(lambda: service.get("/api/v1/points/002D01").json()["value"] == 1.0)
    # Power stays off until a person restores it (风电闭锁 is not lifted automatically).
    assert all(_relays(service)[r]["open"] for r in HEADING_RELAYS)
    for relay in sorted(HEADING_RELAYS):
        r = service.post(f"/api/v1/relays/{relay}/restore", json=SIGNED)
        assert r.status_code == 200, r.text
    service.wait_for(lambda: not any(_relays(service)[r]["open"] for r in HEADING_RELAYS))
    service.wait_for(lambda: not (HEADING_RELAYS & _lockout_alarms(service)))


def test_faulty_methane_sensor_cuts_its_range_and_unlocks_by_itself(service: RunningService):
    service.inject("sensor-fault", "003A01")  # district return methane → relay 003C01
    service.wait_for(lambda: _relays(service)["003C01"]["open"], timeout=3, interval=0.05)
    assert "003C01" in _lockout_alarms(service)
    service.inject("clear", "003A01")
    # 故障闭锁 unlocks automatically once the sensor is normal again, and power returns.
    service.wait_for(lambda: not _relays(service)["003C01"]["open"], timeout=5)
    service.wait_for(lambda: "003C01" not in _lockout_alarms(service))
    cmds = service.get("/api/v1/commands").json()
    restore = next(c for c in cmds if c["action"] == "restore" and c["target"] == "003C01")
    assert restore["issued_by"] == "engine" and "故障闭锁" in restore["reason"]
