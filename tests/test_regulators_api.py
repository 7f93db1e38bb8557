"""Regulators' REST API (/api/v1/history, records, statistics, journal) on a real service,
against both stores (embedded SQLite and PostgreSQL), driven by a real gas over-limit."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from minewatch.procs import ServiceProcess, start_service
from minewatch.store import GENESIS_HASH, journal_hash

POINT = "001A02"  # 1101 return corner methane: cut at 1.5 %
FACE_RELAYS = {"001C01", "001C02", "001C03"}
DAY = 86400


@pytest.fixture(params=["sqlite", "postgres"])
def regsvc(request, tmp_path: Path, monkeypatch) -> Iterator[ServiceProcess]:
    monkeypatch.setenv("MINEWATCH_ROLLUP_REFRESH_S", "1")  # PostgreSQL rollups refreshed fast
    if request.param == "sqlite":
        svc = start_service(tmp_path)
    else:
        svc = start_service(tmp_path, "--database-url", request.getfixturevalue("pg_url"))
    try:
        yield svc
    finally:
        svc.stop()


def _ok(svc: ServiceProcess, path: str, **params) -> dict:
    r = svc.get(path, params=params)
    assert r.status_code == 200, (path, params, r.status_code, r.text)
    return r.json()


def _overlimit_episode(svc: ServiceProcess) -> dict:
    """Gas over the cut limit on 001A02 → cut verified → acknowledged → cleared."""
    svc.inject("gas-overlimit", POINT)

    def verified():
        cmds = svc.get("/api/v1/commands").json()
        return {c["target"] for c in cmds if c["action"] == "cut" and c["verified_at"]} \
            >= FACE_RELAYS
    svc.wait_for(verified, timeout=10)
    cut_alarm = next(a for a in svc.get("/api/v1/alarms", params={"state": "active"}).json()
                     if a["point_id"] == POINT and a["kind"] == "power_cut_limit")
    r = svc.post(f"/api/v1/alarms/{cut_alarm['id']}/ack", json={"user": "调度员"})
    assert r.status_code == 200, r.text
    svc.inject("clear", POINT)
    svc.wait_for(lambda: svc.get(f"/api/v1/points/{POINT}").json()["state"] == "normal")

    def stored_cleared():
        recs = svc.get("/api/v1/records/alarms", params={"point": POINT}).json()["records"]
        return recs if recs and all(a["cleared_at"] for a in recs) else None
    svc.wait_for(stored_cleared, timeout=10)
    return cut_alarm


def test_regulators_api_on_real_data(regsvc: ServiceProcess):
    svc = regsvc
    t0 = time.time() - 1
    time.sleep(1.5)  # some normal readings first
    cut_alarm = _overlimit_episode(svc)
    time.sleep(1.0)  # normal readings after
    t1 = time.time()

    # --- history: raw pagination returns every row exactly once ----------------------------
    sel = {"points": f"{POINT},001A01", "from": str(t0), "to": str(t1)}
    full = _ok(svc, "/api/v1/history", **sel, limit=10_000)
    assert full["resolution"] == "raw" and full["next_cursor"] is None
    assert full["points"] == [POINT, "001A01"]
    rows = full["rows"]
    assert full["count"] == len(rows) > 10
    assert {r["point_id"] for r in rows} == {POINT, "001A01"}
    assert max(r["value"] for r in rows if r["point_id"] == POINT) >= 1.5
    assert all(r["quality"] == "ok" and r["drill"] is False for r in rows)
    keys = [(r["ts"], r["point_id"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)

    paged, cursor, pages = [], None, 0
    while True:
        params = {**sel, "limit": 7, **({"cursor": cursor} if cursor else {})}
        page = _ok(svc, "/api/v1/history", **params)
        pages += 1
        assert page["rows"], "no empty trailing page"
        paged += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert page["count"] == 7
    assert paged == rows
    assert pages == -(-len(rows) // 7)

    # --- CSV: same rows, header, attachment -------------------------------------------------
    r = svc.get("/api/v1/history", params={**sel, "limit": 10_000, "format": "csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment;")
    parsed = list(csv.DictReader(io.StringIO(r.text)))
    assert r.text.splitlines()[0] == "point_id,ts,value,quality,drill"
    assert [(c["point_id"], c["ts"], float(c["value"]), c["quality"]) for c in parsed] == \
        [(j["point_id"], j["ts"], j["value"], j["quality"]) for j in rows]
    r = svc.get("/api/v1/history", params={**sel, "limit": 5, "format": "csv"})
    assert len(list(csv.DictReader(io.StringIO(r.text)))) == 5
    assert r.headers["x-next-cursor"]

    # --- history by kind, rollups (PostgreSQL: refreshed by the service) --------------------
    def rollup_max():
        h = _ok(svc, "/api/v1/history", kind="ch4", resolution="1m", **{"from": str(t0)})
        mx = [b["max"] for b in h["rows"] if b["point_id"] == POINT]
        return h if mx and max(mx) >= 1.5 else None
    h = svc.wait_for(rollup_max, timeout=10)
    assert {b["point_id"] for b in h["rows"]} <= set(h["points"])
    ch4 = {p["id"] for p in svc.get("/api/v1/points").json() if p["kind"] == "ch4"}
    assert set(h["points"]) == ch4
    b = next(b for b in h["rows"] if b["point_id"] == POINT and b["max"] >= 1.5)
    assert b["min"] <= b["avg"] <= b["max"] and b["count"] > 0 and b["alarms"] >= 1
    area = _ok(svc, "/api/v1/history", area="face_1101", kind="ch4", **{"from": str(t0)},
               to=str(t1), limit=1)
    assert set(area["points"]) >= {"001A01", POINT} and area["count"] == 1
    rolled, cursor = [], None
    while True:
        page = _ok(svc, "/api/v1/history", kind="ch4", resolution="1m", limit=2,
                   **{"from": str(t0), "to": str(t1)}, **({"cursor": cursor} if cursor else {}))
        rolled += page["rows"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    whole = _ok(svc, "/api/v1/history", kind="ch4", resolution="1m",
                **{"from": str(t0), "to": str(t1)})
    assert [(x["bucket"], x["point_id"]) for x in rolled] == \
        [(x["bucket"], x["point_id"]) for x in whole["rows"]]

    # --- alarm records with durations -------------------------------------------------------
    recs = _ok(svc, "/api/v1/records/alarms", point=POINT, mine="demo")["records"]
    assert {a["kind"] for a in recs} == {"over_limit", "power_cut_limit"}
    cut_rec = next(a for a in recs if a["kind"] == "power_cut_limit")
    assert cut_rec["id"] == cut_alarm["id"] and cut_rec["drill"] is False
    d = cut_rec["durations"]
    assert 0 < d["to_power_verified_s"] < 5
    assert d["to_ack_s"] is not None and d["to_ack_s"] > 0
    assert d["to_clear_s"] > 0
    cmds = _ok(svc, "/api/v1/commands")
    assert set(cut_rec["commands"]) == {c["id"] for c in cmds if c["alarm_id"] == cut_rec["id"]}
    assert len(cut_rec["commands"]) == 3
    over = next(a for a in recs if a["kind"] == "over_limit")
    assert over["commands"] == [] and over["durations"]["to_power_verified_s"] is None
    only_cut = _ok(svc, "/api/v1/records/alarms", kind="power_cut_limit,fault")["records"]
    assert [a["id"] for a in only_cut] == [cut_rec["id"]]
    assert _ok(svc, "/api/v1/records/alarms", kind=["over_limit", "power_cut_limit"],
               area="face_1101")["count"] == 2
    assert _ok(svc, "/api/v1/records/alarms", drill="true")["count"] == 0
    assert _ok(svc, "/api/v1/records/alarms", drill="all", point=POINT)["count"] == 2
    assert _ok(svc, "/api/v1/records/alarms", area="heading_2102")["count"] == 0
    assert _ok(svc, "/api/v1/records/alarms", state="cleared", point=POINT)["count"] >= 1
    assert _ok(svc, "/api/v1/records/alarms", **{"from": str(t1)})["count"] == 0
    assert _ok(svc, "/api/v1/records/alarms", limit=1)["count"] == 1

    # --- power-cut records ----------------------------------------------------------------
    cuts = _ok(svc, "/api/v1/records/commands", action="cut")["records"]
    assert {c["target"] for c in cuts} == FACE_RELAYS
    for c in cuts:
        assert c["durations"]["to_sent_s"] < 2 and c["durations"]["to_verified_s"] < 5
    assert _ok(svc, "/api/v1/records/commands", result="verified")["count"] == 3
    assert _ok(svc, "/api/v1/records/commands", result="verified", limit=2)["count"] == 2
    assert _ok(svc, "/api/v1/records/commands", result="failed")["count"] == 0
    one = _ok(svc, "/api/v1/records/commands", relay="001C01,001C02", area="face_1101")
    assert [c["target"] for c in one["records"]] == ["001C01"]
    assert _ok(svc, "/api/v1/records/commands", area="return_1101")["count"] == 1
    assert _ok(svc, "/api/v1/records/commands", action="restore")["count"] == 0
    assert _ok(svc, "/api/v1/records/commands", area="main_intake")["count"] == 0

    # --- statistics ---------------------------------------------------------------------------
    def stats_ready():
        st = _ok(svc, "/api/v1/statistics", kind="ch4", mine="demo",
                 **{"from": str(t0 - 60), "to": str(time.time() + 60)})
        p = next(x for x in st["points"] if x["point_id"] == POINT)
        return st if p["max"] is not None and p["max"] >= 1.5 else None
    st = svc.wait_for(stats_ready, timeout=10)
    p = next(x for x in st["points"] if x["point_id"] == POINT)
    assert p["over_limit_events"] == 1 and p["open_events"] == 0
    assert p["over_limit_s"] > 0
    assert p["power_cuts"] >= 1
    assert 0 <= p["mean_time_to_power_cut_s"] < 2
    assert p["sensor_fault_hours"] == 0
    assert {x["kind"] for x in st["points"]} == {"ch4"}
    quiet = next(x for x in st["points"] if x["point_id"] == "001A01")
    assert quiet["over_limit_events"] == 0 and quiet["power_cuts"] == 0
    assert quiet["max"] is not None and quiet["max"] < 1.0
    tot = st["totals"]
    assert tot["over_limit_events"] == 1 and tot["power_cuts"] >= 1
    assert tot["mean_time_to_power_cut_s"] < 2 and tot["max_by_kind"]["ch4"] >= 1.5
    everything = _ok(svc, "/api/v1/statistics", **{"from": str(t0 - 60)})
    assert len(everything["points"]) == len(svc.get("/api/v1/points").json())
    before = _ok(svc, "/api/v1/statistics", **{"from": str(t0 - 3600), "to": str(t0 - 60)})
    assert before["totals"]["over_limit_events"] == 0 and before["totals"]["power_cuts"] == 0

    # --- journal export: an outsider re-computes every hash ---------------------------------
    exported, after = [], 0
    while True:
        page = _ok(svc, "/api/v1/journal", after_seq=after, limit=4)
        exported += page["rows"]
        if page["next_after_seq"] is None:
            break
        after = page["next_after_seq"]
    assert page["anchor"] == {"seq": 0, "hash": GENESIS_HASH}
    assert len(exported) >= 8  # 3 cuts sent + verified, 2 raised, ack, returned
    prev_seq, prev = 0, GENESIS_HASH
    for row in exported:
        assert row["seq"] == prev_seq + 1 and row["prev_hash"] == prev
        assert row["hash"] == journal_hash(row["seq"], row["at_epoch"], row["event"],
                                           row["subject"], row["data"], row["prev_hash"])
        assert row["at"].endswith("Z")
        prev_seq, prev = row["seq"], row["hash"]
    events = {r["event"] for r in exported}
    assert {"alarm_raised", "command_sent", "command_verified"} <= events
    v = _ok(svc, "/api/v1/journal/verify")
    assert v["ok"] is True and v["first_broken_seq"] is None and v["checked"] >= len(exported)


def _cursor(body) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


NOW = 1_795_000_000
BAD = [
    # history: selection
    ("/api/v1/history", {}, 422, "select points"),
    ("/api/v1/history", {"points": "XXX"}, 404, "unknown point"),
    ("/api/v1/history", {"points": "001A01,999Z99"}, 404, "999Z99"),
    ("/api/v1/history", {"points": " , "}, 422, "empty"),
    ("/api/v1/history", {"kind": "plutonium"}, 404, "unknown kind"),
    ("/api/v1/history", {"area": "nowhere"}, 404, "unknown area"),
    ("/api/v1/history", {"kind": "fan", "area": "face_1101"}, 404, "no points"),
    ("/api/v1/history", {"points": "001A01", "kind": "ch4"}, 422, "either"),
    ("/api/v1/history", {"points": ",".join(f"{i:03d}A01" for i in range(201))}, 422,
     "too many points"),
    ("/api/v1/history", {"points": "001A01", "mine": "other"}, 404, "unknown mine"),
    # history: time and bounds
    ("/api/v1/history", {"points": "001A01", "from": "yesterday"}, 422, "from"),
    ("/api/v1/history", {"points": "001A01", "to": "2026-13-45"}, 422, "to"),
    ("/api/v1/history", {"points": "001A01", "from": "nan"}, 422, "finite"),
    ("/api/v1/history", {"points": "001A01", "from": "1e300"}, 422, "out of range"),
    ("/api/v1/history", {"points": "001A01", "from": "-5"}, 422, "out of range"),
    ("/api/v1/history", {"points": "001A01", "from": "2026-01-02", "to": "2026-01-01"}, 422,
     "earlier"),
    ("/api/v1/history", {"points": "001A01", "from": "2026-01-01", "to": "2026-01-01"}, 422,
     "earlier"),
    ("/api/v1/history", {"points": "001A01", "from": NOW - 32 * DAY, "to": NOW}, 422,
     "too large"),
    ("/api/v1/history", {"points": "001A01", "from": NOW - 32 * DAY, "to": NOW,
                         "resolution": "1m"}, 422, "31 days"),
    ("/api/v1/history", {"points": "001A01", "from": NOW - 367 * DAY, "to": NOW,
                         "resolution": "5m"}, 422, "366 days"),
    ("/api/v1/history", {"points": "001A01", "from": NOW - 733 * DAY, "to": NOW,
                         "resolution": "1h"}, 422, "732 days"),
    ("/api/v1/history", {"points": "001A01", "resolution": "10s"}, 422, "resolution"),
    ("/api/v1/history", {"points": "001A01", "limit": "0"}, 422, "limit"),
    ("/api/v1/history", {"points": "001A01", "limit": "10001"}, 422, "limit"),
    ("/api/v1/history", {"points": "001A01", "limit": "many"}, 422, "limit"),
    ("/api/v1/history", {"points": "001A01", "format": "xml"}, 422, "format"),
    ("/api/v1/history", {"points": "001A01", "include_drill": "true", "resolution": "1h"},
     422, "include_drill"),
    ("/api/v1/history", {"points": "001A01", "include_drill": "perhaps"}, 422,
     "include_drill"),
    # history: cursors
    ("/api/v1/history", {"points": "001A01", "cursor": "!!!"}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "cursor": "bm90IGpzb24"}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "cursor": _cursor([1, 2])}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "cursor": _cursor({"r": "raw", "t": "x",
                                                                "p": "001A01"})}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "cursor": _cursor({"r": "raw", "t": 1e300,
                                                                "p": "001A01"})}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "cursor": _cursor({"r": "raw", "t": NOW,
                                                                "p": ""})}, 422, "cursor"),
    ("/api/v1/history", {"points": "001A01", "resolution": "1m",
                         "cursor": _cursor({"r": "raw", "t": NOW, "p": "001A01"})}, 422,
     "resolution"),
    ("/api/v1/history", {"points": "001A01", "cursor": "x" * 600}, 422, "cursor"),
    # alarm records
    ("/api/v1/records/alarms", {"mine": "other"}, 404, "unknown mine"),
    ("/api/v1/records/alarms", {"kind": "meteor"}, 422, "unknown alarm kind"),
    ("/api/v1/records/alarms", {"kind": "over_limit,meteor"}, 422, "meteor"),
    ("/api/v1/records/alarms", {"drill": "maybe"}, 422, "drill"),
    ("/api/v1/records/alarms", {"state": "bogus"}, 422, "state"),
    ("/api/v1/records/alarms", {"limit": "10001"}, 422, "limit"),
    ("/api/v1/records/alarms", {"point": "XXX"}, 404, "unknown point"),
    ("/api/v1/records/alarms", {"area": "nowhere"}, 404, "unknown area"),
    ("/api/v1/records/alarms", {"from": "2026-01-02", "to": "2026-01-01"}, 422, "earlier"),
    ("/api/v1/records/alarms", {"to": "soon"}, 422, "to"),
    # power-cut records
    ("/api/v1/records/commands", {"action": "explode"}, 422, "action"),
    ("/api/v1/records/commands", {"relay": "NOPE"}, 404, "unknown relay"),
    ("/api/v1/records/commands", {"area": "nowhere"}, 404, "unknown area"),
    ("/api/v1/records/commands", {"result": "great"}, 422, "result"),
    ("/api/v1/records/commands", {"limit": "0"}, 422, "limit"),
    ("/api/v1/records/commands", {"to": "not-a-time"}, 422, "to"),
    ("/api/v1/records/commands", {"mine": "other"}, 404, "unknown mine"),
    # statistics
    ("/api/v1/statistics", {"from": NOW - 367 * DAY, "to": NOW}, 422, "too large"),
    ("/api/v1/statistics", {"from": NOW, "to": NOW - 1}, 422, "earlier"),
    ("/api/v1/statistics", {"kind": "plutonium"}, 404, "unknown kind"),
    ("/api/v1/statistics", {"area": "nowhere"}, 404, "unknown area"),
    ("/api/v1/statistics", {"mine": "other"}, 404, "unknown mine"),
    ("/api/v1/statistics", {"from": "inf"}, 422, "finite"),
    # journal
    ("/api/v1/journal", {"after_seq": "-1"}, 422, "after_seq"),
    ("/api/v1/journal", {"after_seq": "abc"}, 422, "after_seq"),
    ("/api/v1/journal", {"after_seq": str(10**30)}, 422, "after_seq"),
    ("/api/v1/journal", {"limit": "10001"}, 422, "limit"),
    ("/api/v1/journal", {"mine": "other"}, 404, "unknown mine"),
    ("/api/v1/journal/verify", {"mine": "other"}, 404, "unknown mine"),
]

GOOD = [
    ("/api/v1/history", {"points": "001A01", "from": NOW - 700 * DAY, "to": NOW,
                         "resolution": "1h"}),
    ("/api/v1/history", {"points": "001A01", "from": NOW - 31 * DAY, "to": NOW}),
    ("/api/v1/history", {"kind": "ch4", "area": "face_1101", "format": "csv"}),
    ("/api/v1/history", {"points": "001A01", "include_drill": "true",
                         "from": "2026-11-01T00:00:00", "to": "2026-11-01T08:10:00+08:00"}),
    ("/api/v1/records/alarms", {"mine": "demo", "drill": "all", "kind": ["fault", "stale"]}),
    ("/api/v1/records/commands", {"result": "verified", "action": "cut"}),
    ("/api/v1/statistics", {"from": NOW - 366 * DAY, "to": NOW, "kind": "ch4"}),
    ("/api/v1/journal", {"after_seq": "999999"}),
]


def test_bad_parameters_get_a_clear_4xx(regsvc: ServiceProcess):
    failures = []
    for path, params, status, fragment in BAD:
        r = regsvc.get(path, params=params)
        if r.status_code != status or fragment not in r.text:
            failures.append((path, params, r.status_code, r.text[:300]))
        elif status == 422 and isinstance(r.json()["detail"], str):
            assert r.json()["detail"], (path, params)
    assert not failures, failures
    for path, params in GOOD:
        r = regsvc.get(path, params=params)
        assert r.status_code == 200, (path, params, r.text)
    empty = regsvc.get("/api/v1/history", params={"points": "001A01", "from": NOW - DAY,
                                                   "to": NOW}).json()
    assert empty["rows"] == [] and empty["next_cursor"] is None and empty["count"] == 0

    # OpenAPI documents every endpoint
    spec = regsvc.get("/openapi.json").json()
    for path in ("/api/v1/history", "/api/v1/records/alarms", "/api/v1/records/commands",
                 "/api/v1/statistics", "/api/v1/journal", "/api/v1/journal/verify"):
        op = spec["paths"][path]["get"]
        assert op["summary"] and op["description"], path
    assert "journal_hash" in spec["paths"]["/api/v1/journal"]["get"]["description"]
    assert "/api/v1/alarms" in spec["paths"]  # the existing endpoint is untouched
    names = {p["name"] for p in spec["paths"]["/api/v1/history"]["get"]["parameters"]}
    assert {"points", "kind", "area", "from", "to", "resolution", "limit", "cursor", "format",
            "include_drill"} <= names


class _FakeCommandStore:
    """Commands in the store's order (issued_at desc, id desc), filtered like the store."""

    def __init__(self, cmds):
        self.cmds = sorted(cmds, key=lambda c: (c.issued_at, c.id), reverse=True)
        self.calls = 0

    async def commands(self, q):
        self.calls += 1
        rows = [c for c in self.cmds if (q.t_from is None or c.issued_at >= q.t_from)
                and (q.t_to is None or c.issued_at < q.t_to)]
        return rows[:q.limit]


async def test_result_filter_pages_through_ties_without_losing_rows():
    from types import SimpleNamespace

    from api.regulators import _filtered_commands
    from minewatch.records import CommandRecord
    from minewatch.store import CommandQuery

    cmds = [CommandRecord(id=f"C{i:04d}", action="cut", target="001C01", area="a", reason="",
                          issued_by="engine", issued_at=float(1000 + i // 700),  # big ties
                          result="verified" if i % 3 == 0 else "failed")
            for i in range(3000)]
    store = _FakeCommandStore(cmds)
    svc = SimpleNamespace(store=store)
    want = [c.id for c in store.cmds if c.result == "verified"]
    got, complete = await _filtered_commands(svc, CommandQuery(limit=10), "verified", 10_000)
    assert complete and [c.id for c in got] == want
    got, complete = await _filtered_commands(svc, CommandQuery(limit=10), "verified", 5)
    assert [c.id for c in got] == want[:5]
    got, _ = await _filtered_commands(svc, CommandQuery(limit=10), "pending", 50)
    assert got == []
