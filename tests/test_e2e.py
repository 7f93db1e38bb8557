"""End to end on real components: simulated Modbus substations → collector → engine →
power-cut coil write → feed verification → store → REST and WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from websockets.asyncio.client import connect

from minewatch.procs import auth_headers, ws_url
from tests.conftest import ROOT, RunningService

POINT = "001A02"  # 1101 return corner methane: alarm 1.0 %, cut 1.5 %, restore < 1.0 %
FACE_RELAYS = {"001C01", "001C02", "001C03"}


async def _collect_alarms(url: str, until_kind: str, timeout: float) -> list[dict]:
    got: list[dict] = []
    async with connect(ws_url(url, "/ws/alarms")) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert snapshot["type"] == "snapshot"
        subprocess.run([sys.executable, "-m", "minewatch.cli", "simulate", "gas-overlimit",
                        "--point", POINT, "--api", url], check=True, cwd=ROOT, timeout=20,
                       env={**os.environ, "MINEWATCH_TOKEN": auth_headers(url)[
                           "Authorization"].split()[1]})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            got.append(msg)
            if msg["type"] == "alarm" and msg["alarm"]["kind"] == until_kind:
                return got
    raise AssertionError(f"no {until_kind} alarm within {timeout}s: {got}")


def test_gas_overlimit_cuts_power_verifies_feed_and_is_queryable(service: RunningService):
    msgs = asyncio.run(_collect_alarms(service.url, "power_cut_limit", timeout=3.0))
    cut_alarm = next(m["alarm"] for m in msgs if m["type"] == "alarm"
                 and m["alarm"]["kind"] == "power_cut_limit")
    assert cut_alarm["point_id"] == POINT
    assert cut_alarm["state"] == "unack_active"
    assert cut_alarm["value"] >= 1.5
    assert "瓦斯超限" in cut_alarm["message"]

    # The cut commands are recorded and verified by the feed sensors.
    def verified():
        cmds = service.get("/api/v1/commands").json()
        done = {c["target"] for c in cmds if c["action"] == "cut" and c["verified_at"]}
        return cmds if done >= FACE_RELAYS else None
    cmds = service.wait_for(verified, timeout=5)
    for c in cmds:
        assert c["result"] == "verified"
        assert c["alarm_id"] == cut_alarm["id"]
        assert c["issued_at"] <= c["sent_at"] <= c["verified_at"]

    # The simulator's relay coils are open and its feed sensors read no power.
    relays = {r["relay"]: r for r in service.get("/api/v1/sim").json()["relays"]}
    for rid in FACE_RELAYS:
        assert relays[rid]["open"] is True
        assert relays[rid]["feed_powered"] is False
    assert relays["002C01"]["open"] is False  # other areas keep power

    # Points and readings over REST.
    point = service.get(f"/api/v1/points/{POINT}").json()
    assert point["state"] == "cut" and point["value"] >= 1.5
    feed = service.get("/api/v1/points/001D02").json()
    assert feed["value"] == 0.0

    def stored_high():
        rows = service.get(f"/api/v1/points/{POINT}/readings").json()["readings"]
        return rows if any(r["value"] and r["value"] >= 1.5 for r in rows) else None
    rows = service.wait_for(stored_high, timeout=5)
    assert all(r["quality"] == "ok" for r in rows)

    # Restoring is refused while methane is high, and allowed (by hand) once it falls.
    r = service.post("/api/v1/relays/001C01/restore", json={"user": "带班领导", "reason": "test"})
    assert r.status_code == 409 and "拒绝复电" in r.json()["detail"]
    service.inject("clear", POINT)
    service.wait_for(lambda: service.get(f"/api/v1/points/{POINT}").json()["state"] == "normal")
    r = service.post("/api/v1/relays/001C01/restore", json={"user": "带班领导", "reason": "已排放"})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "restore"
    service.wait_for(lambda: not {x["relay"]: x for x in service.get("/api/v1/sim").json()[
        "relays"]}["001C01"]["open"])
    service.wait_for(lambda: any(c["action"] == "restore" and c["result"] == "verified"
                                 for c in service.get("/api/v1/commands").json()))

    # The alarm returned to normal and can be acknowledged → cleared.
    alarms = service.get("/api/v1/alarms", params={"state": "unack_rtn"}).json()
    cut = [a for a in alarms if a["id"] == cut_alarm["id"]]
    assert cut, alarms
    r = service.post(f"/api/v1/alarms/{cut_alarm['id']}/ack", json={"user": "调度员"})
    assert r.status_code == 200 and r.json()["state"] == "cleared"
