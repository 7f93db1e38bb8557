"""Incident workflows on the running service with its simulated mine: 瓦斯超限 from detection to
close, a premature restore refused, and a stuck relay (cut not confirmed → retry → 断电失败)."""

from __future__ import annotations

from tests.conftest import RunningService

POINT = "001A02"  # 1101 return corner: cut 1.5 %, range face / shearer / return gate


def _incident(svc: RunningService) -> dict | None:
    return next(iter(svc.get("/api/v1/incidents", params={"state": "open"}).json()), None)


def _step(inc: dict, name: str) -> dict:
    return next(s for s in inc["steps"] if s["name"] == name)


def test_gas_overlimit_workflow_runs_to_completion(service: RunningService):
    s = service
    s.inject("gas-overlimit", POINT)
    inc = s.wait_for(lambda: (i := _incident(s)) and _step(i, "power_verified")["state"]
                     == "done" and i, timeout=10, interval=0.2)
    assert {"id", "state", "opened_at", "drill", "steps"} <= set(inc)
    assert inc["state"] == "open" and inc["drill"] is False
    for st in inc["steps"]:
        assert {"name", "state", "deadline", "done_at"} <= set(st)
    assert _step(inc, "power_cut")["state"] == "done"
    assert _step(inc, "evacuation_order")["state"] == "done"
    assert "district_return" in inc["evac_areas"]  # downwind on the same return air
    iid = inc["id"]
    notes = s.get("/api/v1/notifications", params={"incident": iid}).json()
    assert any(n["target"] == "area:face_1101" and "撤人" in n["message"] for n in notes)
    assert any(n["target"] == "level:shift_leader" for n in notes)
    # People walk out (simulated personnel positioning: 8 in the face, 0.5 per second).
    face = _step(inc, "evacuate:face_1101")
    assert face["extra"]["people"] is not None and face["extra"]["people"] <= 8
    # The report chain, level by level.
    levels = [st["name"] for st in inc["steps"] if st["name"].startswith("report:")]
    for name in levels:
        r = s.post(f"/api/v1/incidents/{iid}/steps/{name}/ack", json={"user": "值班员"})
        assert r.status_code == 200, r.text
    for area in inc["evac_areas"]:
        r = s.post(f"/api/v1/incidents/{iid}/steps/evacuate:{area}/ack",
                   json={"user": "调度员", "note": "已清点"})
        assert r.status_code == 200, r.text
    r = s.post(f"/api/v1/incidents/{iid}/tasks/R05",
               json={"status": "done", "team": "救护一队", "user": "调度员"})
    assert r.status_code == 200, r.text
    # Restore while methane is still high: refused with the reason; close refused too.
    r = s.post(f"/api/v1/incidents/{iid}/restore", json={"user": "带班领导", "reason": "已排放"})
    assert r.status_code == 409 and "拒绝复电" in r.json()["detail"]
    r = s.post(f"/api/v1/incidents/{iid}/close", json={"user": "矿长"})
    assert r.status_code == 409 and "尚未复电" in r.json()["detail"]
    s.inject("clear", POINT)
    s.wait_for(lambda: s.get(f"/api/v1/points/{POINT}").json()["state"] == "normal")
    r = s.wait_for(lambda: (x := s.post(f"/api/v1/incidents/{iid}/restore",
                                        json={"user": "带班领导", "reason": "甲烷已降至1.0%以下"}))
                   .status_code == 200 and x, timeout=10, interval=0.3)
    assert {c["action"] for c in r.json()["commands"]} == {"restore"}
    s.wait_for(lambda: _step(s.get(f"/api/v1/incidents/{iid}").json(), "restore")["state"]
               == "done", timeout=5)
    r = s.post(f"/api/v1/incidents/{iid}/close", json={"user": "矿长"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "closed"
    report = s.get(f"/api/v1/incidents/{iid}/report")
    assert report.status_code == 200 and "text/html" in report.headers["content-type"]
    text = report.text
    for needle in ("检测到超限", "断电指令下发", "断电馈电确认", "下达撤人指令", "撤人确认",
                   "汇报: 带班领导", "汇报: 市煤矿安全应急指挥部", "复电指令下发", "关闭事件",
                   "<svg"):
        assert needle in text, needle
    # Every step and acknowledgement is in the journal.
    rows = s.get("/api/v1/journal", params={"event": ["incident_opened", "incident_step_done",
                                                      "incident_closed"]}).json()["rows"]
    assert {r["event"] for r in rows} == {"incident_opened", "incident_step_done",
                                          "incident_closed"}
    assert s.get("/api/v1/incidents", params={"state": "closed"}).json()[0]["id"] == iid


def test_stuck_relay_is_retried_then_escalated_as_cut_failure(service: RunningService):
    s = service
    s.inject("relay-stuck", POINT)  # the face's relays ignore commands
    s.inject("gas-overlimit", POINT)
    inc = s.wait_for(lambda: (i := _incident(s)) and _step(i, "power_verified")["state"]
                     == "failed" and i, timeout=20, interval=0.3)
    step = _step(inc, "power_verified")
    assert "断电失败" in step["detail"] and inc["wider_relays"]
    assert all(n >= 1 for n in inc["retries"].values()) and inc["retries"]
    retries = s.get("/api/v1/journal", params={"event": "incident_cut_retry"}).json()["rows"]
    assert retries
    alarms = s.get("/api/v1/alarms", params={"state": "active"}).json()
    assert any(a["kind"] == "cut_unverified" for a in alarms)
    r = s.post(f"/api/v1/incidents/{inc['id']}/wider-cut", json={"user": "调度员"})
    assert r.status_code == 200, r.text
    wider = set(inc["wider_relays"])
    s.wait_for(lambda: wider <= {r["relay"] for r in s.get("/api/v1/sim").json()["relays"]
                                 if r["open"]}, timeout=5)
    s.inject("clear", POINT)


def test_each_step_is_pushed_over_the_websocket(shared_service: RunningService):
    import asyncio
    import json
    import time

    from websockets.asyncio.client import connect

    s = shared_service

    async def run() -> list[dict]:
        got: list[dict] = []
        async with connect(s.ws("/ws/alarms")) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["type"] == "snapshot" and "incidents" in first
            await asyncio.to_thread(s.inject, "gas-overlimit", "002A01")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
                if msg["type"] == "incident":
                    got.append(msg["incident"])
                    if _step(msg["incident"], "power_verified")["state"] == "done":
                        return got
        raise AssertionError(f"no verified incident pushed: {got}")

    pushed = asyncio.run(run())
    assert pushed[0]["point_id"] == "002A01"
    states = [_step(i, "power_cut")["state"] for i in pushed]
    assert states[-1] == "done"
    s.inject("clear", "002A01")
