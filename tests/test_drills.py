"""Double-blind drills: the draw and its commitment, every library scenario through the real
pipeline (simulated Modbus/MQTT substations → engine → workflow), the drill flag kept out of the
regulators' statistics, a real alarm aborting the drill, and the score following late
acknowledgements."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from minewatch.mine import SAMPLE_MINE, Mine
from minewatch.procs import ROOT, start_service
from simulators.drill import Plan, commitment, drives, load_library, sites, verify
from tests.conftest import RunningService

LIBRARY = load_library()
MINE = Mine.load(SAMPLE_MINE)
# The site each scenario is staged at in these tests (the first candidate in the sample mine).
SITE = {sc.id: sites(MINE, sc)[0] for sc in LIBRARY.values()}


def _plan(scenario: str, point: str, delay: float = 0.5) -> Plan:
    now = time.time()
    return Plan(mine="demo", scenario=scenario, point=point, start_at=now + delay,
                drawn_at=now, window=(now, now + 60), candidates=1, nonce="5a" * 32)


def _arm(svc: RunningService, plan: Plan) -> dict:
    r = svc.post("/api/v1/drills", json={"plan": plan.model_dump(mode="json"),
                                         "commitment": commitment(plan), "user": "市应急局"})
    assert r.status_code == 200, r.text
    return r.json()


def _alarms(svc: RunningService) -> list[dict]:
    return svc.get("/api/v1/alarms", params={"state": "open"}).json()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minewatch.cli", "drill", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_plan_commitment_verifies_and_an_altered_plan_fails(tmp_path: Path):
    plan_file = tmp_path / "plan.json"
    out = _cli("plan", "--out", str(plan_file), "--window-min", "30")
    assert out.returncode == 0, out.stderr
    digest = out.stdout.strip().splitlines()[-1]
    assert len(digest) == 64 and int(digest, 16) >= 0
    plan = Plan.model_validate_json(plan_file.read_text())
    assert plan.scenario in LIBRARY and plan.point in {p.id for p in MINE.points}
    assert plan.window[0] <= plan.start_at <= plan.window[1] and len(plan.nonce) == 64
    assert _cli("verify", "--commitment", digest, str(plan_file)).returncode == 0
    # Any change — the site, the time, the nonce — breaks the commitment.
    for field, value in (("point", "001A05" if plan.point != "001A05" else "001A04"),
                         ("start_at", plan.start_at + 1), ("nonce", "00" * 32)):
        forged = tmp_path / f"forged-{field}.json"
        forged.write_text(plan.model_copy(update={field: value}).model_dump_json())
        bad = _cli("verify", "--commitment", digest, str(forged))
        assert bad.returncode == 1 and "MISMATCH" in bad.stderr
    assert not verify("not json", digest)


def test_library_scenarios_are_valid_and_staged_plausibly():
    assert {"return_overlimit", "outburst", "fan_stop", "sensor_failure",
            "corner_accumulation", "co_rise", "comm_loss"} <= set(LIBRARY)
    for sc in LIBRARY.values():
        assert sites(MINE, sc), sc.id
    # An outburst at the face travels down the return: downstream sensors follow with the
    # air travel lag, diluted.
    d = {x.point: x.curve for x in drives(MINE, LIBRARY["outburst"].model_copy(
        update={"noise": 0.0}), "001A01", lambda _p: 0.3)}
    assert {"001A01", "001A02", "001A03", "001A04", "001A05"} <= set(d)
    assert d["001A01"](10) == pytest.approx(4.0)
    assert d["001A03"](3) == pytest.approx(0.3)  # lag 2 + 5 s: not there yet
    assert 0.3 < d["001A03"](12) < d["001A02"](12) <= d["001A01"](12)


@pytest.mark.parametrize("scenario", sorted(LIBRARY))
def test_each_scenario_runs_through_the_real_pipeline(scenario: str, tmp_path: Path):
    sc = LIBRARY[scenario]
    svc = start_service(tmp_path)
    try:
        drill = _arm(svc, _plan(scenario, SITE[scenario]))
        assert drill["plan"] is None  # nobody sees the plan before it is revealed

        def produced() -> set[str] | None:
            kinds = {a["kind"] for a in _alarms(svc) if a["drill"]}
            return kinds if set(sc.expect) <= kinds else None
        kinds = svc.wait_for(produced, timeout=45, interval=0.5)
        assert set(sc.expect) <= kinds
        # Every point and relay alarm the drill caused carries the flag. (The system's own
        # alarm-flood alarm is about the operator's load, real even in a drill: not flagged.)
        for a in _alarms(svc):
            if a["point_id"] != "FLOOD":
                assert a["drill"], (a["kind"], a["point_id"], a["message"])
        status = {d["id"]: d for d in svc.get("/api/v1/drills").json()}[drill["id"]]["status"]
        assert status == "running"
        r = svc.post(f"/api/v1/drills/{drill['id']}/finish", json={"user": "市应急局"})
        assert r.status_code == 200 and r.json()["status"] == "finished"
    finally:
        svc.stop()


def test_drill_is_flagged_everywhere_and_left_out_of_statistics(
        shared_service: RunningService):
    s, point = shared_service, "001A03"
    start = time.time()
    drill = _arm(s, _plan("return_overlimit", point))
    inc = s.wait_for(lambda: next((i for i in s.get("/api/v1/incidents").json()
                                   if i["point_id"] == point), None), timeout=30)
    assert inc["drill"] is True
    assert all(a["drill"] for a in _alarms(s) if a["point_id"] == point)
    # Reveal only after the drill.
    assert s.post(f"/api/v1/drills/{drill['id']}/reveal",
                  json={"user": "市应急局"}).status_code == 409
    s.post(f"/api/v1/drills/{drill['id']}/finish", json={"user": "市应急局"})
    revealed = s.post(f"/api/v1/drills/{drill['id']}/reveal", json={"user": "市应急局"}).json()
    assert revealed["plan"]["point"] == point
    assert verify(Plan.model_validate(revealed["plan"]).model_dump_json(), drill["commitment"])
    time.sleep(2)  # the store writer is asynchronous
    stats = s.get("/api/v1/statistics", params={"from": start - 60, "kind": "ch4"}).json()
    row = next(r for r in stats["points"] if r["point_id"] == point)
    assert row["over_limit_events"] == 0 and row["power_cuts"] == 0
    assert row["max"] is None or row["max"] < 1.0  # drill readings (1.6 %) not counted
    records = s.get("/api/v1/records/alarms", params={"from": start - 60, "point": point,
                                                      "drill": "true"}).json()
    rows = records["records"]
    assert rows and all(r["drill"] for r in rows)
    s.inject("clear", point)


def test_a_real_alarm_aborts_the_drill(service: RunningService):
    s = service
    drill = _arm(s, _plan("return_overlimit", "001A03"))
    s.wait_for(lambda: any(d["status"] == "running" for d in s.get("/api/v1/drills").json()),
               timeout=5)
    s.inject("gas-overlimit", "002A01")  # a real over-limit in the heading
    d = s.wait_for(lambda: next((x for x in s.get("/api/v1/drills").json()
                                 if x["id"] == drill["id"] and x["status"] == "aborted"), None),
                   timeout=10)
    assert "002A01" in d["abort_reason"]
    real = [a for a in _alarms(s) if a["point_id"] == "002A01"]
    assert real and not any(a["drill"] for a in real)
    s.inject("clear", "002A01")


def test_score_reflects_late_acknowledgement(tmp_path: Path):
    config = (ROOT / "minewatch" / "emergency.toml").read_text(encoding="utf-8")
    config = config.replace('title = "带班领导"\ndeadline_s = 120.0',
                            'title = "带班领导"\ndeadline_s = 3.0')
    assert "deadline_s = 3.0" in config
    (tmp_path / "emergency.toml").write_text(config, encoding="utf-8")
    svc = start_service(tmp_path, env={"MINEWATCH_EMERGENCY": str(tmp_path / "emergency.toml")})
    try:
        drill = _arm(svc, _plan("outburst", "001A01"))
        inc = svc.wait_for(lambda: next(iter(svc.get("/api/v1/incidents").json()), None),
                           timeout=20)
        # The shift leader answers after 5 s (deadline 3 s); dispatch, notified on the
        # escalation, answers at once.
        time.sleep(5)
        for step in ("report:shift_leader", "report:dispatch"):
            r = svc.post(f"/api/v1/incidents/{inc['id']}/steps/{step}/ack",
                         json={"user": "值班员"})
            assert r.status_code == 200, r.text
        rep = svc.get(f"/api/v1/drills/{drill['id']}/report").json()
        marks = {m["step"]: m for m in rep["marks"]}
        assert marks["report:shift_leader"]["passed"] is False
        assert marks["report:shift_leader"]["seconds"] >= 5
        assert marks["report:dispatch"]["passed"] is True
        assert marks["power_cut"]["passed"] and marks["power_cut"]["seconds"] < 2
        assert marks["detected"]["passed"]
        assert rep["passed"] is False
        page = svc.get(f"/api/v1/drills/{drill['id']}/report", params={"format": "html"})
        assert "不合格" in page.text and "<svg" in page.text
    finally:
        svc.stop()
