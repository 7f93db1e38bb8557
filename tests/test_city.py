"""City command center (市煤矿安全应急指挥部): CityState rules with an injected clock, then the
app against a real mosquitto — retained alarms for a late subscriber, REST, the /ws/city
WebSocket, a quiet mine turning no_data, broker restart and the persistent session — and a real
mine service whose gas over-limit shows up at the city as an incident with its report chain,
and whose double-blind drill shows up in the city's drill list with its score.
The page itself in headless Chromium: tests/test_city_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from api.city import CityState
from api.city_app import create_city_app, parse_broker_url, parse_mine_urls
from ingest.sqlite_store import SqliteStore
from minewatch.auth import new_user
from minewatch.broker import CITY_USER, ENGINE_USER, BrokerProcess, write_config
from minewatch.events import HEARTBEAT_S, QUIET_AFTER_S, alarm_topic, event, events_topic
from minewatch.mine import Mine
from minewatch.procs import ADMIN_PASSWORD, ServiceProcess, free_port, login, start_service
from minewatch.readings import iso
from simulators.drill import Plan, commitment


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


CITY_SECRET = "city-test-secret-" + "x" * 32
NAMES = {"north": "北山煤矿", "south": "南岭煤矿", "west": "西沟煤矿"}


def ev(mine: str, kind: str, at: float | None = None, **body: Any) -> dict[str, Any]:
    e = event(mine, NAMES.get(mine, mine), kind, **body)
    if at is not None:
        e["at"] = at
    return e


def alarm(aid: str, state: str = "unack_active", kind: str = "over_limit", severity: int = 2,
          t: float = 1_800_000_000.0, updated: float | None = None,
          message: str = "瓦斯超限 1.10%") -> dict[str, Any]:
    return {"id": aid, "point_id": "001A02", "point_name": "1101回风隅角", "kind": kind,
            "severity": severity, "state": state, "raised_at": iso(t), "value": 1.1,
            "message": message, "cleared_at": None, "acked_at": None, "acked_by": None,
            "drill": False, "updated_at": iso(updated if updated is not None else t),
            "area": "1101"}


def summary(**kw: Any) -> dict[str, Any]:
    s = {"points": 47, "open_alarms": 0, "unacked_alarms": 0, "cut_relays": 0,
         "max_ch4": 0.31, "max_ch4_point": "001A01", "stale_points": 0,
         "substations_online": 3, "substations": 3}
    s.update(kw)
    return s


def tile(city: CityState, mine: str) -> dict[str, Any]:
    return next(t for t in city.tiles() if t["mine"] == mine)


# --- CityState ------------------------------------------------------------------------------

def test_status_precedence():
    clk = Clock()
    city = CityState(clock=clk)
    assert city.ingest(ev("north", "heartbeat", summary=summary()))
    assert tile(city, "north")["status"] == "normal"

    assert city.ingest(ev("north", "alarm", transition="raised", alarm=alarm("A1")))
    t = tile(city, "north")
    assert (t["status"], t["open_alarms"], t["unacked"]) == ("alarm", 1, 1)
    assert t["top_alarm"] == "瓦斯超限 1.10%"

    # A cut command between heartbeats already makes it a power cut …
    city.ingest(ev("north", "command", command={"id": "C1", "action": "cut",
                                                "target": "001C01", "result": "sent"}))
    assert tile(city, "north")["status"] == "power_cut"
    assert tile(city, "north")["cut_relays"] == 1
    # … and the next heartbeat carries the count.
    clk.t += 1
    city.ingest(ev("north", "heartbeat", summary=summary(cut_relays=3, max_ch4=1.62)))
    t = tile(city, "north")
    assert (t["status"], t["cut_relays"], t["max_ch4"]) == ("power_cut", 3, 1.62)

    # An open incident outranks the power cut; closing it goes back.
    city.ingest(ev("north", "incident", incident={"id": "I1", "state": "open"}))
    assert tile(city, "north")["status"] == "incident"
    city.ingest(ev("north", "incident", incident={"id": "I1", "state": "closed"}))
    assert tile(city, "north")["status"] == "power_cut"

    # Restored (heartbeat says no relay cut): back to alarm; alarm returned: flashing but grey.
    city.ingest(ev("north", "heartbeat", summary=summary(cut_relays=0)))
    assert tile(city, "north")["status"] == "alarm"
    city.ingest(ev("north", "alarm", transition="returned",
                   alarm=alarm("A1", "unack_rtn", updated=clk.t)))
    t = tile(city, "north")
    assert (t["status"], t["open_alarms"], t["unacked"]) == ("normal", 1, 1)

    # An active power_cut_limit alarm alone means power_cut.
    city.ingest(ev("north", "alarm", transition="raised",
                   alarm=alarm("A2", kind="power_cut_limit", severity=1)))
    assert tile(city, "north")["status"] == "power_cut"

    # No data outranks everything; the last known status stays visible.
    clk.t += QUIET_AFTER_S + 0.1
    t = tile(city, "north")
    assert (t["status"], t["last_known_status"]) == ("no_data", "power_cut")


def test_quiet_mine_turns_no_data_with_a_synthetic_alarm():
    clk = Clock()
    city = CityState(clock=clk, quiet_after_s=15)
    for mine in ("north", "south"):
        city.ingest(ev(mine, "heartbeat", summary=summary()))
    for _ in range(3):  # south keeps beating, north falls silent
        clk.t += 5
        city.ingest(ev("south", "heartbeat", summary=summary()))
    assert city.tick() is False  # exactly at the limit: not yet
    t = tile(city, "north")
    assert t["status"] == "normal" and t["age_s"] == 15.0

    clk.t += 0.5
    city.ingest(ev("south", "heartbeat", summary=summary()))
    assert city.tick() is True
    north = tile(city, "north")
    assert north["status"] == "no_data" and north["quiet"]
    assert north["unacked"] == 1 and north["open_alarms"] == 1
    assert tile(city, "south")["status"] == "normal"
    quiet = [a for a in city.open_alarms() if a["kind"] == "mine_quiet"]
    assert len(quiet) == 1
    assert quiet[0]["mine"] == "north" and quiet[0]["message"] == "矿井数据中断: 北山煤矿"
    newest = city.feed(1)[0]
    assert (newest["kind"], newest["mine"], newest["transition"]) == \
        ("mine_quiet", "north", "raised")
    assert city.tick() is False  # raised once, not every tick

    # Data returns: normal again, the synthetic alarm is cleared in the feed.
    clk.t += 10
    city.ingest(ev("north", "heartbeat", summary=summary()))
    assert tile(city, "north")["status"] == "normal"
    back = city.feed(1)[0]
    assert (back["kind"], back["mine"], back["state"]) == ("mine_quiet", "north", "cleared")
    assert back["message"] == "矿井数据恢复: 北山煤矿"
    assert not any(a["kind"] == "mine_quiet" and a["mine"] == "north"
                   for a in city.open_alarms())


def test_configured_mine_never_heard_from_goes_no_data():
    clk = Clock()
    city = CityState(clock=clk, quiet_after_s=10, mine_urls={"east": "http://10.0.0.9:8000/"})
    t = tile(city, "east")
    assert (t["status"], t["age_s"], t["last_seen"]) == ("normal", None, None)
    assert t["url"] == "http://10.0.0.9:8000/"
    clk.t += 10.5
    t = tile(city, "east")
    assert t["status"] == "no_data"
    assert city.open_alarms()[0]["message"] == "矿井数据中断: east"


def test_retained_alarms_do_not_count_as_life():
    clk = Clock()
    city = CityState(clock=clk, quiet_after_s=10)
    payload = json.dumps(ev("north", "alarm", at=clk.t - 3600, transition="raised",
                            alarm=alarm("A1", t=clk.t - 3600))).encode()
    assert city.ingest_message(alarm_topic("north", "A1"), payload, retained=True)
    t = tile(city, "north")
    assert t["status"] == "alarm" and t["last_seen"] is None and t["name"] == "北山煤矿"
    # The broker replays the same retained state on every resubscribe: one feed entry only.
    assert city.ingest_message(alarm_topic("north", "A1"), payload, retained=True)
    assert [e["id"] for e in city.feed()] == ["A1"]
    clk.t += 11
    assert tile(city, "north")["status"] == "no_data"


def test_cleared_alarms_are_dropped_and_not_resurrected():
    clk = Clock()
    city = CityState(clock=clk)
    t0 = clk.t
    city.ingest(ev("north", "alarm", transition="raised", alarm=alarm("A1", t=t0)))
    city.ingest(ev("north", "alarm", transition="acknowledged",
                   alarm=alarm("A1", "ack_active", t=t0, updated=t0 + 1)))
    assert tile(city, "north")["unacked"] == 0
    city.ingest(ev("north", "alarm", transition="returned",
                   alarm=alarm("A1", "cleared", t=t0, updated=t0 + 2)))
    assert city.open_alarms() == []
    assert tile(city, "north")["status"] == "normal"
    # A queued older state arriving late (after reconnect) must not bring it back.
    city.ingest(ev("north", "alarm", transition="raised", alarm=alarm("A1", t=t0)))
    assert city.open_alarms() == []
    assert [e["state"] for e in city.feed()] == ["cleared", "ack_active", "unack_active"]

    # Retained topic: a bare alarm object, then the retained message deleted (empty payload).
    topic = alarm_topic("north", "A9")
    assert city.ingest_message(topic, json.dumps(alarm("A9")).encode(), retained=True)
    assert [a["id"] for a in city.open_alarms()] == ["A9"]
    assert city.ingest_message(topic, b"", retained=False)
    assert city.open_alarms() == []
    # A retained cleared state for an alarm we never saw open: nothing shown.
    assert city.ingest_message(alarm_topic("north", "A7"),
                               json.dumps(alarm("A7", "cleared")).encode(), retained=True)
    assert city.open_alarms() == []


def test_malformed_events_are_counted_and_ignored():
    clk = Clock()
    city = CityState(clock=clk)
    good = ev("north", "heartbeat", summary=summary())
    bad_events: list[Any] = [
        [1, 2], "x", None,
        {**good, "v": 2}, {**good, "v": True}, {k: v for k, v in good.items() if k != "mine"},
        {**good, "mine": ""}, {**good, "mine": 7}, {**good, "at": "yesterday"},
        {**good, "at": math.nan}, {**good, "type": None},
        {**good, "summary": "fine"}, {**good, "summary": summary(max_ch4="high")},
        {**good, "summary": summary(cut_relays=-1)},
        ev("north", "alarm", alarm={"state": "unack_active"}),
        ev("north", "alarm", alarm={"id": "A1"}),
        ev("north", "alarm", alarm=[]), ev("north", "alarm", transition=5, alarm=alarm("A1")),
        ev("north", "alarm", alarm={**alarm("A1"), "severity": "high"}),
        ev("north", "command", command={"action": "cut"}),
        ev("north", "incident", incident={"state": "open"}),
    ]
    for b in bad_events:
        assert city.ingest(b) is False
    raw: list[tuple[str, Any]] = [
        (events_topic("north"), b"{not json"), (events_topic("north"), b"\xff\xfe"),
        (events_topic("north"), b""), (events_topic("south"), json.dumps(good).encode()),
        ("mw/north", json.dumps(good).encode()), ("other/north/events", b"{}"),
        ("mw/north/events/x", json.dumps(good).encode()),
        (alarm_topic("north", "A1"), json.dumps(alarm("A2")).encode()),
        (alarm_topic("north", "A1"), json.dumps(ev("north", "heartbeat")).encode()),
        (alarm_topic("north", "A1"), b"[]"), (events_topic("north"), 12345),
    ]
    for topic, payload in raw:
        assert city.ingest_message(topic, payload) is False
    n = len(bad_events) + len(raw)
    c = city.counters()
    assert c["malformed"] == n and c["messages"] == n and c["accepted"] == 0
    assert sum(c["malformed_reasons"].values()) == n
    assert c["malformed_reasons"]["version"] == 2 and c["malformed_reasons"]["json"] == 2
    assert city.mines == {} and city.feed() == []  # nothing half-applied

    assert city.ingest(good)
    unknown = ev("north", "newfangled", payload={"x": 1})
    assert city.ingest(unknown)  # a newer event type: counted, and the mine is alive
    c = city.counters()
    assert c["accepted"] == 2 and c["unknown_types"] == {"newfangled": 1}


def test_feed_is_merged_newest_first_and_bounded():
    clk = Clock()
    city = CityState(clock=clk, feed_size=5, commands_per_mine=3)
    for i in range(8):
        mine = "north" if i % 2 else "south"
        city.ingest(ev(mine, "alarm", transition="raised", alarm=alarm(f"A{i}")))
        city.ingest(ev(mine, "command", command={"id": f"C{i}", "action": "cut",
                                                 "target": f"R{i}", "result": "verified"}))
    feed = city.feed(100)
    assert [e["id"] for e in feed] == ["A7", "A6", "A5", "A4", "A3"]
    assert {e["mine"] for e in feed} == {"north", "south"}
    assert [e["id"] for e in city.feed(2)] == ["A7", "A6"]
    assert [e["id"] for e in city.feed(100, after_seq=feed[1]["seq"])] == ["A7"]
    detail = city.mine_detail("north")
    assert detail is not None
    assert [c["id"] for c in detail["commands"]] == ["C7", "C5", "C3"]
    assert len(detail["alarms"]) == 4


LEVELS = [("shift_leader", "带班领导", 120), ("dispatch", "矿调度", 300),
          ("mine_leader", "矿长/总工", 600), ("county", "县煤矿安全应急指挥部", 600),
          ("city", "市煤矿安全应急指挥部", 1800)]


def incident(iid: str = "demo-I1", states: tuple[str, ...] = ("active",) + ("pending",) * 4,
             t0: float = 1_800_000_000.0, updated: float | None = None, state: str = "open",
             drill: bool = False, **extra_of: dict[str, Any]) -> dict[str, Any]:
    """An incident as ``Service.incident_json`` publishes it (report steps by level)."""
    steps = [{"name": "power_cut", "title": "自动断电", "state": "done", "deadline": iso(t0),
              "started_at": iso(t0), "done_at": iso(t0 + 0.3), "by": None, "detail": "",
              "extra": {}, "remaining_s": None},
             {"name": "evacuate:face_1101", "title": "撤人确认: 1101采面", "state": "active",
              "deadline": iso(t0 + 900), "started_at": iso(t0), "done_at": None, "by": None,
              "detail": "", "extra": {"area": "face_1101", "people": 6}, "remaining_s": 900.0}]
    for (level, title, deadline_s), st in zip(LEVELS, states, strict=True):
        done = st == "done"
        steps.append({"name": f"report:{level}", "title": f"汇报: {title}", "state": st,
                      "deadline": iso(t0 + deadline_s),
                      "started_at": iso(t0) if st != "pending" else None,
                      "done_at": iso(t0 + 60) if done else None,
                      "by": "张建国" if done else None, "detail": "",
                      "extra": {"level": level, "to": "" if st == "pending" else f"{title}值班",
                                **extra_of.get(level, {})},
                      "remaining_s": deadline_s if st in ("active", "pending") else None})
    return {"id": iid, "kind": "gas_overlimit", "title": "瓦斯超限: 1101回风隅角", "state": state,
            "opened_at": iso(t0), "closed_at": iso(updated) if state == "closed" else None,
            "updated_at": iso(updated if updated is not None else t0), "drill": drill,
            "point_id": "001A02", "point_name": "1101回风隅角", "areas": ["face_1101"],
            "evac_areas": ["face_1101"], "area_names": {"face_1101": "1101采面"},
            "relays": ["R01"], "peak": {"point_id": "001A02", "value": 1.62, "at": iso(t0)},
            "alarms": ["A1"], "wider_relays": [], "steps": steps}


def chain_of(view: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["level"], r["state"]) for r in view["report_chain"]]


def test_incidents_with_their_report_chain():
    clk = Clock()
    t0 = clk.t
    city = CityState(clock=clk, mine_urls={"north": "http://127.0.0.1:9/"})
    city.ingest(ev("north", "heartbeat", summary=summary(cut_relays=1, max_ch4=1.62)))
    city.ingest(ev("south", "heartbeat", summary=summary()))
    assert city.ingest(ev("north", "incident", incident=incident(t0=t0)))

    t = tile(city, "north")
    assert (t["status"], t["incidents"], t["cut_relays"]) == ("incident", 1, 1)
    assert tile(city, "south")["open_incidents"] == []
    [view] = t["open_incidents"]
    assert (view["id"], view["mine"], view["mine_name"], view["state"], view["drill"]) == \
        ("demo-I1", "north", "北山煤矿", "open", False)
    assert view["url"] == "http://127.0.0.1:9/" and view["title"] == "瓦斯超限: 1101回风隅角"
    assert chain_of(view) == [("shift_leader", "active"), ("dispatch", "pending"),
                              ("mine_leader", "pending"), ("county", "pending"),
                              ("city", "pending")]
    first = view["report_chain"][0]
    assert (first["title"], first["to"], first["remaining_s"], first["overdue"]) == \
        ("带班领导", "带班领导值班", 120.0, False)
    assert view["report_chain"][1]["to"] is None  # not notified yet: nobody named
    assert view["report_chain"][4]["title"] == "市煤矿安全应急指挥部"
    assert (view["report_done"], view["report_overdue"]) == (0, 0)
    assert city.incidents() == [view] and city.incidents("south") == []
    assert city.counters()["open_incidents"] == 1
    opened = city.feed(1)[0]
    assert (opened["kind"], opened["transition"], opened["id"], opened["mine"]) == \
        ("incident", "incident_opened", "demo-I1", "north")

    # The city counts the time left down on its own clock, and sees a missed deadline at once.
    clk.t += 100
    first = city.incidents()[0]["report_chain"][0]
    assert (first["remaining_s"], first["overdue"]) == (20.0, False)
    clk.t += 30
    first = city.incidents()[0]["report_chain"][0]
    assert (first["state"], first["remaining_s"], first["overdue"]) == ("active", -10.0, True)

    # The mine marks it overdue and escalates: one feed entry for the overdue level.
    late = incident(t0=t0, updated=t0 + 121, states=("overdue", "active") + ("pending",) * 3,
                    shift_leader={"escalated_to": "dispatch"})
    city.ingest(ev("north", "incident", incident=late))
    city.ingest(ev("north", "incident", incident=late))  # the same state again: no new entry
    view = city.incidents()[0]
    assert chain_of(view)[:3] == [("shift_leader", "overdue"), ("dispatch", "active"),
                                  ("mine_leader", "pending")]
    assert view["report_chain"][0]["escalated_to"] == "dispatch"
    assert view["report_overdue"] == 1
    overdue = [e for e in city.feed() if e["transition"] == "report_overdue"]
    assert len(overdue) == 1 and "带班领导" in overdue[0]["message"]

    # Acknowledged (late): done, by whom. An older state delivered afterwards changes nothing.
    acked = incident(t0=t0, updated=t0 + 140, states=("done", "active") + ("pending",) * 3,
                     shift_leader={"late": True})
    city.ingest(ev("north", "incident", incident=acked))
    city.ingest(ev("north", "incident", incident=late))
    first = city.incidents()[0]["report_chain"][0]
    assert (first["state"], first["by"], first["late"], first["remaining_s"]) == \
        ("done", "张建国", True, None)

    # A second, drill incident at south; newest first across mines.
    city.ingest(ev("south", "incident", incident=incident("south-I1", t0=t0 + 50, drill=True)))
    assert [(v["mine"], v["drill"]) for v in city.incidents()] == \
        [("south", True), ("north", False)]
    assert tile(city, "south")["status"] == "incident"

    # Closed: it leaves the open list and a stale open state cannot bring it back.
    city.ingest(ev("north", "incident", incident=incident(t0=t0, updated=t0 + 900,
                                                          state="closed")))
    t = tile(city, "north")
    assert (t["status"], t["incidents"], t["open_incidents"]) == ("power_cut", 0, [])
    assert [e["transition"] for e in city.feed(2)] == ["incident_closed", "incident_opened"]
    city.ingest(ev("north", "incident", incident=acked))
    assert tile(city, "north")["incidents"] == 0
    assert [v["id"] for v in city.incidents()] == ["south-I1"]
    detail = city.mine_detail("south")
    assert detail is not None and [v["id"] for v in detail["open_incidents"]] == ["south-I1"]

    # A quiet mine keeps its incidents, marked stale (last known state).
    clk.t += QUIET_AFTER_S + 1
    city.ingest(ev("north", "heartbeat", summary=summary()))
    t = tile(city, "south")
    assert (t["status"], t["last_known_status"]) == ("no_data", "incident")
    assert t["open_incidents"][0]["stale"] is True


def test_malformed_incidents_are_counted_and_ignored():
    city = CityState(clock=Clock())
    good = incident()
    bad = [{**good, "id": ""}, {**good, "state": 1}, {**good, "title": ["x"]},
           {**good, "steps": "all done"}, {**good, "steps": [{"name": "report:city"}]},
           {**good, "steps": [{"name": "x", "state": "done", "extra": "y"}]}, [good]]
    for b in bad:
        assert city.ingest(ev("north", "incident", incident=b)) is False
    assert city.counters()["malformed"] == len(bad) and city.mines == {}
    assert city.ingest(ev("north", "incident", incident=good))
    assert tile(city, "north")["status"] == "incident"


COMMIT = "9f" * 32
MARKS = [{"step": "alarm:over_limit", "title": "报警 over_limit", "seconds": 6.2, "limit_s": 14.0,
          "passed": True},
         {"step": "alarm:power_cut_limit", "title": "报警 power_cut_limit", "seconds": None,
          "limit_s": 14.0, "passed": False}]


def drill(did: str = "D1", status: str = "finished", t0: float = 1_800_000_000.0,
          revealed: bool = False, mine: str = "north", **kw: Any) -> dict[str, Any]:
    """A drill as ``Drill.public()`` publishes it (epoch times; the plan once revealed)."""
    plan = {"mine": mine, "scenario": "return_overlimit", "point": "001A03",
            "start_at": t0 + 10, "drawn_at": t0 - 60, "window": [t0, t0 + 60],
            "candidates": 12, "nonce": "5a" * 32}
    d = {"id": did, "plan": plan if revealed else None, "commitment": COMMIT,
         "status": status, "armed_at": t0, "armed_by": "市应急局",
         "started_at": t0 + 10 if status != "armed" else None,
         "ended_at": t0 + 40 if status in ("aborted", "finished") else None,
         "ended_by": "市应急局" if status in ("aborted", "finished") else None,
         "abort_reason": "", "revealed": revealed,
         "points": ["001A03", "001A04"] if revealed else [], "incident": None}
    d.update(kw)
    return d


def drill_ev(d: dict[str, Any], at: float, passed: bool = False,
             marks: list[dict[str, Any]] | None = None, mine: str = "north") -> dict[str, Any]:
    return ev(mine, "drill", at=at, drill=d, passed=passed, scenario_name="回风巷瓦斯超限",
              marks=MARKS if marks is None else marks)


def test_drills_are_listed_newest_first_upserted_and_bounded():
    clk = Clock()
    t0 = clk.t
    city = CityState(clock=clk, drills_size=3, mine_urls={"north": "http://127.0.0.1:9/"})
    assert city.ingest(ev("north", "heartbeat", summary=summary()))
    assert city.drills() == []
    v0 = city.drills_version

    # Finished (not yet revealed): score and commitment shown, the site not.
    assert city.ingest(drill_ev(drill("D1", t0=t0), at=t0 + 41))
    [d] = city.drills()
    assert city.drills_version > v0
    assert (d["id"], d["mine"], d["mine_name"], d["status"], d["ended"]) == \
        ("D1", "north", "北山煤矿", "finished", True)
    assert (d["scenario_name"], d["passed"], d["marks_passed"]) == ("回风巷瓦斯超限", False, 1)
    assert d["marks"] == MARKS
    assert (d["commitment"], d["commitment_short"]) == (COMMIT, COMMIT[:12])
    assert (d["revealed"], d["point"], d["plan"], d["scenario"], d["points"]) == \
        (False, None, None, None, [])
    assert (d["started_at"], d["ended_at"], d["duration_s"]) == \
        (iso(t0 + 10), iso(t0 + 40), 30.0)
    assert d["url"] == "http://127.0.0.1:9/" and d["armed_by"] == "市应急局"
    assert tile(city, "north")["status"] == "normal"  # a drill result is no alarm

    # Revealed: the same drill updated in place (not a second entry), the site now shown.
    assert city.ingest(drill_ev(drill("D1", t0=t0, revealed=True), at=t0 + 100))
    [d] = city.drills()
    assert (d["revealed"], d["point"], d["scenario"]) == (True, "001A03", "return_overlimit")
    assert d["plan"]["nonce"] == "5a" * 32 and d["points"] == ["001A03", "001A04"]
    # A late copy of the earlier, unrevealed state cannot hide it again; nor can a stale
    # "running" state with a newer time bring the finished drill back.
    version = city.drills_version
    assert city.ingest(drill_ev(drill("D1", t0=t0), at=t0 + 41))
    assert city.ingest(drill_ev(drill("D1", status="running", t0=t0, revealed=True),
                                at=t0 + 200))
    [d] = city.drills()
    assert (d["status"], d["revealed"]) == ("finished", True)
    assert city.drills_version == version

    # Another mine's drill, aborted by a real alarm before it was scored: newest first.
    aborted = drill("D2", status="aborted", t0=t0 + 500, mine="south",
                    ended_by="system", abort_reason="真实报警 002A01 over_limit，演练自动中止")
    assert city.ingest(drill_ev(aborted, at=t0 + 541, mine="south", marks=[]))
    assert [(x["mine"], x["id"], x["status"]) for x in city.drills()] == \
        [("south", "D2", "aborted"), ("north", "D1", "finished")]
    assert [x["id"] for x in city.drills("north")] == ["D1"]
    assert [x["id"] for x in city.drills(limit=1)] == ["D2"]
    d2 = city.drills("south")[0]
    assert (d2["passed"], d2["marks"], d2["abort_reason"]) == \
        (False, [], "真实报警 002A01 over_limit，演练自动中止")
    # The same drill id at two mines is two drills.
    assert city.ingest(drill_ev(drill("D2", t0=t0 + 300), at=t0 + 341))
    assert [(x["mine"], x["id"]) for x in city.drills()] == \
        [("south", "D2"), ("north", "D2"), ("north", "D1")]

    # Bounded: the oldest drill (by when it was armed) goes first.
    assert city.ingest(drill_ev(drill("D4", t0=t0 + 900), at=t0 + 941, passed=True))
    assert [x["id"] for x in city.drills()] == ["D4", "D2", "D2"]
    assert [x["mine"] for x in city.drills()] == ["north", "south", "north"]
    assert city.drills()[0]["passed"] is True
    assert city.counters()["drills"] == 3
    assert [x["id"] for x in city.mine_detail("north")["drills"]] == ["D4", "D2"]

    # Malformed drill events are counted and change nothing.
    before, version = city.drills(), city.drills_version
    bad = [ev("north", "drill", drill="D5"), ev("north", "drill", drill=drill(""), marks=[]),
           drill_ev(drill("D5", status="exploded"), at=t0 + 999),
           drill_ev(drill("D5", started_at="soon"), at=t0 + 999),
           drill_ev(drill("D5", revealed="yes"), at=t0 + 999),
           drill_ev(drill("D5", commitment=123), at=t0 + 999),
           drill_ev(drill("D5", plan=["001A03"], revealed=True), at=t0 + 999),
           drill_ev(drill("D5", points="001A03"), at=t0 + 999),
           {**drill_ev(drill("D5"), at=t0 + 999), "passed": "yes"},
           {**drill_ev(drill("D5"), at=t0 + 999), "marks": "all good"},
           drill_ev(drill("D5"), at=t0 + 999, marks=[{"step": "x", "seconds": "fast",
                                                      "limit_s": 1.0, "passed": True}]),
           drill_ev(drill("D5"), at=t0 + 999, marks=[{"title": "x", "passed": True}]),
           {**drill_ev(drill("D5"), at=t0 + 999), "v": 99}]
    for b in bad:
        assert city.ingest(b) is False
    assert city.drills() == before and city.drills_version == version
    c = city.counters()
    assert c["malformed"] == len(bad)
    assert c["malformed_reasons"]["drill_marks"] == 3 and c["unknown_types"] == {}


def test_cli_helpers():
    assert parse_broker_url("mqtt://127.0.0.1:1884") == ("127.0.0.1", 1884, None, None)
    assert parse_broker_url("mqtt://city:p%40ss@broker") == ("broker", 1883, "city", "p@ss")
    with pytest.raises(ValueError):
        parse_broker_url("http://x")
    assert parse_mine_urls(["demo=http://10.0.0.5:8000/"]) == {"demo": "http://10.0.0.5:8000/"}
    for bad in (["demo"], ["demo=javascript:alert(1)"], ["=http://x/"]):
        with pytest.raises(ValueError):
            parse_mine_urls(bad)


# --- the app against a real mosquitto -------------------------------------------------------

@contextlib.contextmanager
def running_broker() -> Iterator[BrokerProcess]:
    """A private mosquitto on a free loopback port with the demo mine's accounts and ACLs."""
    directory = Path(tempfile.mkdtemp(prefix="minewatch-mqtt-"))
    proc = BrokerProcess(write_config(directory, [Mine.load()], free_port()))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def broker():
    with running_broker() as proc:
        yield proc


class AppServer:
    """The city app under uvicorn in a background thread on a free loopback port."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AppServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "city app did not start"
            time.sleep(0.02)
        self.token = login(self.url, "admin", ADMIN_PASSWORD)
        self.headers = {"Authorization": f"Bearer {self.token}"}
        return self

    def ws(self, path: str, token: str | None = None) -> str:
        """The WebSocket URL of ``path`` with the admin's (or the given) token."""
        return f"{self.url.replace('http', 'ws')}{path}?token={token or self.token}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive()


def city_app(cfg, client_id: str | None = None, users: SqliteStore | None = None, **kw):
    """The city app with its own throwaway user store (admin: procs.ADMIN_PASSWORD)."""
    if users is None:
        users = SqliteStore(Path(tempfile.mkdtemp(prefix="minewatch-city-")) / "users.db")
    return create_city_app("127.0.0.1", cfg.port, CITY_USER, cfg.password(CITY_USER),
                           client_id=client_id or f"city-test-{uuid.uuid4().hex[:8]}",
                           users=users, secret=CITY_SECRET, admin_password=ADMIN_PASSWORD, **kw)


def engine(cfg) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", cfg.port, username=ENGINE_USER,
                          password=cfg.password(ENGINE_USER))


async def publish(client: aiomqtt.Client, e: dict[str, Any], retain_alarm: bool = False):
    await client.publish(events_topic(e["mine"]), json.dumps(e).encode(), qos=1)
    if retain_alarm:
        await client.publish(alarm_topic(e["mine"], e["alarm"]["id"]), json.dumps(e).encode(),
                             qos=1, retain=True)


async def until(check: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Poll an async check until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


async def test_city_feed_over_a_real_broker(broker):
    cfg = broker.config
    now = time.time()
    # Before the city exists: an open alarm at north, retained by the broker.
    async with engine(cfg) as eng:
        await publish(eng, ev("north", "alarm", transition="raised",
                              alarm=alarm("N-1", t=now - 60, message="1101回风隅角 瓦斯报警")),
                      retain_alarm=True)
        # … and one that was raised and then cleared (its retained copy is deleted).
        await eng.publish(alarm_topic("north", "N-0"), b"", qos=1, retain=True)

    app = city_app(cfg, mine_urls={"north": "http://127.0.0.1:9/"}, quiet_after_s=2.0)
    with AppServer(app) as srv:
        async with (httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as http,
                    engine(cfg) as eng):
            async def connected():
                h = (await http.get("/api/v1/health")).json()
                return h["broker"]["connected"] and h
            health = await until(connected, what="broker connection")
            assert health["status"] == "ok" and health["role"] == "city"

            await publish(eng, ev("north", "heartbeat", summary=summary(max_ch4=0.42)))
            await publish(eng, ev("south", "heartbeat",
                                  summary=summary(cut_relays=3, max_ch4=1.62,
                                                  max_ch4_point="001A02")))
            await publish(eng, ev("south", "alarm", transition="raised",
                                  alarm=alarm("S-1", kind="power_cut_limit", severity=1,
                                              message="瓦斯超限断电 1.62%")), retain_alarm=True)
            await publish(eng, ev("south", "command", command={
                "id": "SC-1", "action": "cut", "target": "001C01", "target_name": "1101 采面",
                "result": "verified"}))

            async def both_tiles():
                tiles = {t["mine"]: t for t in (await http.get("/api/v1/city/mines")).json()}
                ok = (tiles.get("north", {}).get("status") == "alarm"
                      and tiles.get("south", {}).get("status") == "power_cut"
                      and tiles["south"]["open_alarms"] == 1)
                if ok:
                    detail = (await http.get("/api/v1/city/mines/south")).json()
                    ok = [c["id"] for c in detail["commands"]] == ["SC-1"]
                return ok and tiles
            tiles = await until(both_tiles, what="two mines' tiles")
            north, south = tiles["north"], tiles["south"]
            assert north["name"] == "北山煤矿" and south["name"] == "南岭煤矿"
            assert (north["open_alarms"], north["unacked"], north["max_ch4"]) == (1, 1, 0.42)
            assert north["url"] == "http://127.0.0.1:9/" and south["url"] is None
            assert north["top_alarm"] == "1101回风隅角 瓦斯报警"
            assert (south["cut_relays"], south["max_ch4"], south["open_alarms"]) == (3, 1.62, 1)
            assert south["age_s"] is not None and south["age_s"] < 2
            assert south["last_seen"].endswith("Z")

            feed = (await http.get("/api/v1/city/alarms", params={"limit": 10})).json()
            assert [e["id"] for e in feed] == ["S-1", "N-1"]  # newest first, across mines
            assert feed[1]["mine_name"] == "北山煤矿"
            assert len((await http.get("/api/v1/city/alarms", params={"limit": 1})).json()) == 1
            assert (await http.get("/api/v1/city/alarms", params={"limit": 0})).status_code == 422
            detail = (await http.get("/api/v1/city/mines/south")).json()
            assert detail["commands"][0]["id"] == "SC-1"
            assert (await http.get("/api/v1/city/mines/nowhere")).status_code == 404
            assert (await http.get("/", follow_redirects=False)).headers["location"] == "/city"
            page = await http.get("/city")
            assert page.status_code == 200 and "市煤矿安全应急指挥部" in page.text
            for asset in ("/dashboard/city.js", "/dashboard/city.css", "/dashboard/wall.css"):
                assert (await http.get(asset)).status_code == 200

            # Garbage on a mine's topic is counted; the feed goes on.
            await eng.publish(events_topic("south"), b"{garbage", qos=1)

            # The WebSocket: a snapshot, then updates (on change, and at least once a second).
            ws_url = srv.ws("/ws/city")
            async with ws_connect(ws_url, open_timeout=5) as ws:
                snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert snap["type"] == "snapshot" and snap["broker_connected"]
                assert {t["mine"] for t in snap["mines"]} == {"north", "south"}
                assert {e["id"] for e in snap["alarms"]} == {"S-1", "N-1"}

                await publish(eng, ev("north", "alarm", transition="raised",
                                      alarm=alarm("N-2", kind="fault", severity=3,
                                                  message="CO 传感器故障")), retain_alarm=True)
                t0 = time.monotonic()
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    if any(e["id"] == "N-2" for e in msg["alarms"]):
                        break
                    assert time.monotonic() - t0 < 3, "alarm did not reach the WebSocket"
                assert msg["type"] == "update"
                assert time.monotonic() - t0 < 1.5
                north = next(t for t in msg["mines"] if t["mine"] == "north")
                assert north["open_alarms"] == 2

                # North clears N-1 (event + retained copy deleted), then falls silent; south
                # keeps beating. North must turn no_data with the synthetic city alarm.
                await publish(eng, ev("north", "alarm", transition="returned", alarm=alarm(
                    "N-1", "cleared", t=now - 60, updated=time.time())))
                await eng.publish(alarm_topic("north", "N-1"), b"", qos=1, retain=True)

                quiet_tile = None
                deadline = time.monotonic() + 8
                next_beat = 0.0
                while quiet_tile is None:
                    assert time.monotonic() < deadline, "north never turned no_data"
                    if time.monotonic() >= next_beat:
                        await publish(eng, ev("south", "heartbeat",
                                              summary=summary(cut_relays=3, max_ch4=1.5)))
                        next_beat = time.monotonic() + 0.4
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 2))
                    tiles = {t["mine"]: t for t in msg["mines"]}
                    if tiles["north"]["status"] == "no_data":
                        quiet_tile = tiles["north"]
                assert tiles["south"]["status"] == "power_cut"
                assert quiet_tile["last_known_status"] == "alarm"  # N-2 still open
                assert quiet_tile["open_alarms"] == 2  # N-2 + the synthetic alarm


            open_now = (await http.get("/api/v1/city/alarms", params={"open": "true"})).json()
            quiet = [a for a in open_now if a["kind"] == "mine_quiet"]
            assert [(a["mine"], a["message"]) for a in quiet] == \
                [("north", "矿井数据中断: 北山煤矿")]
            assert "N-1" not in {a["id"] for a in open_now}
            assert {"N-2", "S-1"} <= {a["id"] for a in open_now}
            feed = (await http.get("/api/v1/city/alarms")).json()
            assert feed[0]["kind"] == "mine_quiet" or any(
                e["kind"] == "mine_quiet" and e["transition"] == "raised" for e in feed)
            health = (await http.get("/api/v1/health")).json()
            assert health["malformed"] == 1 and health["malformed_reasons"] == {"json": 1}
            assert health["quiet_mines"] == 1

            # North comes back.
            await publish(eng, ev("north", "heartbeat", summary=summary()))
            async def north_back():
                t = (await http.get("/api/v1/city/mines/north")).json()
                return t["status"] != "no_data" and t
            assert (await until(north_back, what="north back"))["status"] == "alarm"


async def test_city_needs_a_login_and_shows_each_user_only_their_mines(broker, tmp_path):
    """No token: 401 on every route but health, and the WebSocket is closed with 4401. A
    regulator whose jurisdiction is north sees north's tile, alarms and feed only, and gets
    403 asking for south; the admin sees both."""
    cfg = broker.config
    users = SqliteStore(tmp_path / "users.db")
    await users.open()
    await users.save_user(new_user("north-reg", "regulator", "north-pass-1", ["north"]))
    await users.close()
    users = SqliteStore(tmp_path / "users.db")  # the app opens its own
    async with engine(cfg) as eng:
        for mine in ("north", "south"):
            await publish(eng, ev(mine, "alarm", transition="raised",
                                  alarm=alarm(f"{mine}-1", message=f"{NAMES[mine]} 瓦斯报警")),
                          retain_alarm=True)
    with AppServer(city_app(cfg, users=users)) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5) as anon:
            assert (await anon.get("/api/v1/health")).status_code == 200
            for path in ("/api/v1/city/mines", "/api/v1/city/alarms", "/api/v1/city/incidents",
                         "/api/v1/city/drills", "/api/v1/city/mines/north"):
                r = await anon.get(path)
                assert r.status_code == 401, (path, r.status_code)
            bad = await anon.post("/api/v1/auth/token",
                                  data={"username": "north-reg", "password": "wrong-pass"})
            assert bad.status_code == 401
            assert (await anon.get("/city")).headers["content-security-policy"]
        with pytest.raises(ConnectionClosed) as closed:
            async with ws_connect(srv.ws("/ws/city", "not-a-token"), open_timeout=5) as ws:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4401

        token = login(srv.url, "north-reg", "north-pass-1")
        reg = {"Authorization": f"Bearer {token}"}
        async with (httpx.AsyncClient(base_url=srv.url, timeout=5, headers=reg) as http,
                    httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as adm):
            async def admin_sees_both():
                tiles = (await adm.get("/api/v1/city/mines")).json()
                return sorted(t["mine"] for t in tiles) == ["north", "south"] and tiles
            await until(admin_sees_both, what="both mines at the admin")
            assert [t["mine"] for t in (await http.get("/api/v1/city/mines")).json()] == ["north"]
            assert {e["mine"] for e in (await http.get("/api/v1/city/alarms")).json()} == {"north"}
            assert {a["mine"] for a in (await http.get(
                "/api/v1/city/alarms", params={"open": "true"})).json()} == {"north"}
            assert (await adm.get("/api/v1/city/alarms", params={"open": "true"})).json()
            assert (await http.get("/api/v1/city/mines/north")).status_code == 200
            for path, params in (("/api/v1/city/mines/south", {}),
                                 ("/api/v1/city/incidents", {"mine": "south"}),
                                 ("/api/v1/city/drills", {"mine": "south"})):
                r = await http.get(path, params=params)
                assert r.status_code == 403, (path, r.status_code)
            me = (await http.get("/api/v1/auth/me")).json()
            assert (me["role"], me["mines"]) == ("regulator", ["north"])
        async with ws_connect(srv.ws("/ws/city", token), open_timeout=5) as ws:
            snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert [t["mine"] for t in snap["mines"]] == ["north"]
        assert {e["mine"] for e in snap["alarms"]} == {"north"}


async def test_city_reconnects_and_keeps_its_session(broker):
    """Broker restart: the city reconnects by itself. City restart with the same session id:
    QoS 1 events published while it was away are delivered (persistent session)."""
    cfg = broker.config
    client_id = f"city-test-{uuid.uuid4().hex[:8]}"

    async def mines(http):
        return {t["mine"]: t for t in (await http.get("/api/v1/city/mines")).json()}

    with AppServer(city_app(cfg, client_id)) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as http:
            async def connected():
                return (await http.get("/api/v1/health")).json()["broker"]["connected"]
            await until(connected, what="first connection")
            async with engine(cfg) as eng:
                await publish(eng, ev("north", "heartbeat", summary=summary()))
            await until(lambda: _has(http, "north"), what="north")

            # No changes at all for a while: the WebSocket still sends at least once a second.
            async with ws_connect(srv.ws("/ws/city")) as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "snapshot"
                stamps = []
                t0 = time.monotonic()
                while time.monotonic() - t0 < 2.5:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 1.5))
                    assert msg["type"] == "update" and msg["alarms"] == []
                    stamps.append(time.monotonic())
                gaps = [b - a for a, b in zip([t0, *stamps], stamps, strict=False)]
                assert max(gaps) < 1.3 and len(stamps) >= 2

            await asyncio.to_thread(broker.stop)
            async def down():
                h = (await http.get("/api/v1/health")).json()
                return not h["broker"]["connected"] and h
            h = await until(down, what="disconnect noticed")
            assert h["status"] == "degraded" and h["broker"]["last_error"]
            await asyncio.to_thread(broker.start)
            h = await until(connected, timeout=15, what="reconnect")
            async with engine(cfg) as eng:
                await publish(eng, ev("south", "heartbeat", summary=summary(max_ch4=0.77)))
            await until(lambda: _has(http, "south"), what="events after reconnect")
            assert (await http.get("/api/v1/health")).json()["broker"]["connects"] >= 2

    # The city is down: a mine raises an alarm (not retained, QoS 1).
    async with engine(cfg) as eng:
        await publish(eng, ev("south", "alarm", transition="raised",
                              alarm=alarm("S-9", message="停电期间的报警")))
    with AppServer(city_app(cfg, client_id)) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as http:
            async def got_it():
                feed = (await http.get("/api/v1/city/alarms")).json()
                return any(e["id"] == "S-9" for e in feed)
            await until(got_it, what="the queued event of the persistent session")
            assert (await mines(http))["south"]["open_alarms"] == 1


async def _has(http: httpx.AsyncClient, mine: str) -> bool:
    return any(t["mine"] == mine for t in (await http.get("/api/v1/city/mines")).json())


# --- a real mine service publishing through the broker --------------------------------------

POINT = "001A02"  # the demo mine's 1101 return corner: cut at 1.5 %
STEP = "report:shift_leader"
ACK_USER = "张建国"


@contextlib.contextmanager
def mine_on_broker(broker: BrokerProcess, workdir: Path) -> Iterator[ServiceProcess]:
    """``minewatch run`` (the simulated demo mine) publishing its events to ``broker``."""
    cfg = broker.config
    env = {"MINEWATCH_BROKER_URL":
           f"mqtt://{ENGINE_USER}:{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}",
           "MINEWATCH_BROKER_CREDENTIALS": str(cfg.directory / "credentials.json")}
    svc = start_service(workdir, env=env)
    try:
        health = svc.get("/api/v1/health").json()
        assert health["broker"]["embedded"] is False and health["broker"]["port"] == cfg.port
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def demo_mine(broker, tmp_path) -> Iterator[ServiceProcess]:
    with mine_on_broker(broker, tmp_path) as svc:
        yield svc


def report_chain(tile_: dict[str, Any]) -> list[dict[str, Any]]:
    [inc] = tile_["open_incidents"]
    return inc["report_chain"]


def is_incident_with_cut(tile_: dict[str, Any] | None) -> bool:
    """The mine's tile shows the incident and the power cut, the chain's first level notified."""
    return bool(tile_ and tile_["status"] == "incident" and tile_["cut_relays"] >= 1
                and len(tile_["open_incidents"]) == 1
                and [r["state"] for r in report_chain(tile_)][:2] == ["active", "pending"])


async def test_mine_incident_and_report_chain_reach_the_city(broker, demo_mine):
    """Over-limit injected at a real mine → the city shows it as an incident with the power cut,
    the incident and its report chain; a report acknowledged at the mine shows up as done."""
    cfg, svc = broker.config, demo_mine
    app = city_app(cfg, mine_urls={"demo": svc.url})
    with AppServer(app) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as http:
            async def demo_tile(status: str | None = None):
                tiles = {t["mine"]: t for t in (await http.get("/api/v1/city/mines")).json()}
                t = tiles.get("demo")
                return t if t and (status is None or t["status"] == status) else None
            async def heartbeat_seen():
                t = await demo_tile("normal")
                return t and t["summary"] is not None and t
            t = await until(heartbeat_seen, timeout=HEARTBEAT_S + 3,
                            what="the demo mine's heartbeat")
            assert t["name"] == "示范煤矿" and t["url"] == svc.url and t["open_incidents"] == []
            assert t["max_ch4"] is not None and t["max_ch4"] < 1.0

            await asyncio.to_thread(svc.inject, "gas-overlimit", POINT)

            async def incident_shown():
                t = await demo_tile()
                return is_incident_with_cut(t) and t
            t = await until(incident_shown, timeout=5, what="incident at the city")
            [inc] = t["open_incidents"]
            chain = inc["report_chain"]
            assert [r["level"] for r in chain] == \
                ["shift_leader", "dispatch", "mine_leader", "county", "city"]
            assert [r["state"] for r in chain] == ["active"] + ["pending"] * 4
            assert chain[0]["name"] == STEP and chain[0]["title"] == "带班领导"
            assert chain[0]["to"]  # who is on duty now was notified
            assert 0 < chain[0]["remaining_s"] <= 120 and not chain[0]["overdue"]
            assert all(r["to"] is None and r["done_at"] is None for r in chain[1:])
            assert chain[4]["title"] == "市煤矿安全应急指挥部"
            assert inc["drill"] is False and inc["state"] == "open"
            assert inc["point_id"] == POINT and inc["title"].startswith("瓦斯超限")
            # The mine's own view of the same incident.
            [mine_inc] = svc.get("/api/v1/incidents", params={"state": "open"}).json()
            assert mine_inc["id"] == inc["id"]
            mine_step = next(s for s in mine_inc["steps"] if s["name"] == STEP)
            assert mine_step["extra"]["to"] == chain[0]["to"]

            # The alarm feed across mines has the cut alarm and the incident's opening.
            feed = (await http.get("/api/v1/city/alarms")).json()
            assert any(e["mine"] == "demo" and e["kind"] == "power_cut_limit"
                       and e["point_id"] == POINT for e in feed)
            assert any(e["kind"] == "incident" and e["transition"] == "incident_opened"
                       and e["id"] == inc["id"] for e in feed)
            assert [i["id"] for i in (await http.get("/api/v1/city/incidents")).json()] == \
                [inc["id"]]
            assert (await http.get("/api/v1/city/incidents",
                                   params={"mine": "demo"})).json()[0]["id"] == inc["id"]
            assert (await http.get("/api/v1/city/incidents",
                                   params={"mine": "nowhere"})).status_code == 404
            assert (await http.get("/api/v1/health")).json()["open_incidents"] == 1

            # The max methane of the mine comes with its next heartbeat.
            async def ch4_high():
                t = await demo_tile()
                return t and t["max_ch4"] is not None and t["max_ch4"] >= 1.5 and t
            t = await until(ch4_high, timeout=HEARTBEAT_S + 3, what="max methane ≥ 1.5 %")
            assert t["max_ch4_point"] == POINT and t["status"] == "incident"

            # The shift leader acknowledges at the mine (REST): done at the city, the next
            # level notified.
            r = await asyncio.to_thread(svc.post, f"/api/v1/incidents/{inc['id']}/steps/"
                                        f"{STEP}/ack", json={"user": ACK_USER})
            assert r.status_code == 200, r.text

            async def acked():
                t = await demo_tile()
                return t and t["open_incidents"] and \
                    report_chain(t)[0]["state"] == "done" and t
            t = await until(acked, timeout=3, what="the acknowledgement at the city")
            chain = report_chain(t)
            assert (chain[0]["by"], chain[0]["late"], chain[0]["remaining_s"]) == \
                (ACK_USER, False, None)
            assert chain[0]["done_at"]
            assert [r["state"] for r in chain] == ["done", "active"] + ["pending"] * 3
            assert chain[1]["to"]
            assert t["open_incidents"][0]["report_done"] == 1

            # The WebSocket snapshot carries the same incidents.
            ws_url = srv.ws("/ws/city")
            async with ws_connect(ws_url, open_timeout=5) as ws:
                snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
            [demo] = [m for m in snap["mines"] if m["mine"] == "demo"]
            assert demo["status"] == "incident"
            assert [r["state"] for r in report_chain(demo)][:2] == ["done", "active"]


DRILL_USER = "市应急局"
DRILL_POINT = "001A03"  # a face return of the demo mine: return_overlimit can be staged there


def arm_drill(svc: ServiceProcess) -> tuple[str, str]:
    """Arm a committed return_overlimit drill at the demo mine (REST) starting in 0.5 s, wait
    (bounded) until it runs; its id and commitment."""
    t = time.time()
    plan = Plan(mine="demo", scenario="return_overlimit", point=DRILL_POINT, start_at=t + 0.5,
                drawn_at=t, window=(t, t + 60), candidates=1, nonce="5a" * 32)
    commit = commitment(plan)
    r = svc.post("/api/v1/drills", json={"plan": plan.model_dump(mode="json"),
                                         "commitment": commit, "user": DRILL_USER})
    assert r.status_code == 200, r.text
    armed = r.json()
    assert armed["status"] == "armed" and armed["plan"] is None
    svc.wait_for(lambda: any(d["id"] == armed["id"] and d["status"] == "running"
                             for d in svc.get("/api/v1/drills").json()), timeout=5)
    return armed["id"], commit


async def test_mine_drill_result_reaches_the_city(broker, demo_mine):
    """A double-blind drill armed, run and finished at a real mine (its REST API) is listed at
    the city with its score and commitment; revealing the plan updates the same entry."""
    cfg, svc = broker.config, demo_mine
    app = city_app(cfg, mine_urls={"demo": svc.url})
    with AppServer(app) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=5, headers=srv.headers) as http:
            async def connected():
                return (await http.get("/api/v1/health")).json()["broker"]["connected"]
            await until(connected, what="broker connection")
            assert (await http.get("/api/v1/city/drills")).json() == []

            drill_id, commit = await asyncio.to_thread(arm_drill, svc)
            await asyncio.sleep(1.0)  # let the drill drive its signal for a moment
            r = await asyncio.to_thread(svc.post, f"/api/v1/drills/{drill_id}/finish",
                                        json={"user": DRILL_USER})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "finished"

            async def listed():
                ds = (await http.get("/api/v1/city/drills", params={"mine": "demo"})).json()
                return ds and ds
            [d] = await until(listed, timeout=5, what="the drill at the city")
            assert (d["id"], d["mine"], d["mine_name"], d["status"]) == \
                (drill_id, "demo", "示范煤矿", "finished")
            assert (d["commitment"], d["commitment_short"]) == (commit, commit[:12])
            assert (d["revealed"], d["point"], d["plan"]) == (False, None, None)
            assert d["scenario_name"] == "回风巷瓦斯超限" and d["armed_by"] == DRILL_USER
            assert d["started_at"] and d["ended_at"] and d["ended_by"] == DRILL_USER
            assert isinstance(d["passed"], bool) and d["url"] == svc.url
            # The marks are the mine's score of the drill: each step against its limit.
            report = (await asyncio.to_thread(
                svc.get, f"/api/v1/drills/{drill_id}/report")).json()
            assert [(m["step"], m["limit_s"]) for m in d["marks"]] == \
                [(m["step"], m["limit_s"]) for m in report["marks"]]
            steps = [m["step"] for m in d["marks"]]
            assert steps[:2] == ["alarm:over_limit", "alarm:power_cut_limit"]
            for m in d["marks"]:
                assert set(m) == {"step", "title", "seconds", "limit_s", "passed"}
                assert m["title"] and m["limit_s"] > 0
                assert m["passed"] == (m["seconds"] is not None
                                       and m["seconds"] <= m["limit_s"])
            assert d["passed"] == (bool(d["marks"]) and all(m["passed"] for m in d["marks"]))
            assert (await http.get("/api/v1/city/drills",
                                   params={"mine": "nowhere"})).status_code == 404
            assert [x["id"] for x in (await http.get("/api/v1/city/drills")).json()] == \
                [drill_id]
            detail = (await http.get("/api/v1/city/mines/demo")).json()
            assert [x["id"] for x in detail["drills"]] == [drill_id]

            # Revealed at the mine: the same entry now names the site.
            r = await asyncio.to_thread(svc.post, f"/api/v1/drills/{drill_id}/reveal",
                                        json={"user": DRILL_USER})
            assert r.status_code == 200, r.text

            async def revealed():
                ds = (await http.get("/api/v1/city/drills")).json()
                return len(ds) == 1 and ds[0]["revealed"] and ds
            [d] = await until(revealed, timeout=5, what="the revealed plan at the city")
            assert (d["id"], d["point"], d["scenario"]) == \
                (drill_id, DRILL_POINT, "return_overlimit")
            assert d["plan"]["nonce"] == "5a" * 32 and DRILL_POINT in d["points"]
            assert d["commitment"] == commit and d["status"] == "finished"

            # The WebSocket snapshot carries the drill list.
            async with ws_connect(srv.ws("/ws/city"),
                                  open_timeout=5) as ws:
                snap = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert [(x["id"], x["point"]) for x in snap["drills"]] == \
                    [(drill_id, DRILL_POINT)]
                update = json.loads(await asyncio.wait_for(ws.recv(), 3))
                assert update["type"] == "update" and "drills" not in update  # unchanged
            assert (await http.get("/api/v1/health")).json()["malformed"] == 0


def test_city_app_rejects_bad_mine_urls():
    with pytest.raises(ValueError):
        create_city_app("127.0.0.1", 1883, "city", "x", {"demo": "javascript:alert(1)"},
                        users=SqliteStore(Path("unused.db")), secret=CITY_SECRET)
