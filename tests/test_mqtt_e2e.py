"""MQTT substation S04 end to end, on both backends, with the service's embedded mosquitto:

- a methane over-limit on the MQTT gateway cuts its relay over cmd/ack, the feed sensor
  confirms, and power is restored by hand like a Modbus relay;
- hostile input on the gateway's own data topic lands in the dead letters with its reason,
  the good reading of a mixed message is stored, and the gateway's data keeps flowing;
- events go out to the city: alarm and command events, heartbeats, retained alarm states.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import aiomqtt

from minewatch.broker import CITY_USER, gateway_user
from minewatch.events import HEARTBEAT_S
from tests.conftest import RunningService
from tests.mqtt_util import Subscriber, aget, apost, await_true, cut_alarm_over_ws, embedded_broker

POINT = "004A01"  # trolley loading point methane: alarm = cut = restore = 0.5 %
RELAY = "004C01"
FEED = "004D02"
DATA_TOPIC = "mw/demo/S04/data"


def test_mqtt_gateway_overlimit_cuts_relay_over_cmd_ack_and_restores(service: RunningService):
    alarm = asyncio.run(cut_alarm_over_ws(service.url, POINT))
    assert alarm["state"] == "unack_active" and alarm["value"] >= 0.5
    assert "瓦斯超限断电" in alarm["message"]

    def verified():
        cmds = service.get("/api/v1/commands").json()
        return [c for c in cmds if c["action"] == "cut" and c["target"] == RELAY
                and c["verified_at"]]
    (cmd,) = service.wait_for(verified, timeout=5)
    assert cmd["result"] == "verified" and cmd["alarm_id"] == alarm["id"]
    assert cmd["issued_at"] <= cmd["sent_at"] <= cmd["verified_at"]
    assert service.get(f"/api/v1/points/{FEED}").json()["value"] == 0.0
    relays = {r["relay"]: r for r in service.get("/api/v1/sim").json()["relays"]}
    assert relays[RELAY]["open"] is True and relays[RELAY]["feed_powered"] is False
    assert relays["001C01"]["open"] is False  # other areas keep power
    assert service.get(f"/api/v1/points/{POINT}").json()["state"] == "cut"

    # Manual restore: refused while methane is high, done once it is below the restore limit.
    r = service.post(f"/api/v1/relays/{RELAY}/restore", json={"user": "带班领导", "reason": "t"})
    assert r.status_code == 409 and "拒绝复电" in r.json()["detail"]
    service.inject("clear", POINT)
    service.wait_for(lambda: service.get(f"/api/v1/points/{POINT}").json()["state"] == "normal")
    r = service.post(f"/api/v1/relays/{RELAY}/restore",
                     json={"user": "带班领导", "reason": "已排放"})
    assert r.status_code == 200, r.text
    assert r.json()["action"] == "restore"
    service.wait_for(lambda: not {x["relay"]: x for x in service.get("/api/v1/sim").json()[
        "relays"]}[RELAY]["open"])
    service.wait_for(lambda: any(c["action"] == "restore" and c["target"] == RELAY
                                 and c["result"] == "verified"
                                 for c in service.get("/api/v1/commands").json()))
    service.wait_for(lambda: service.get(f"/api/v1/points/{FEED}").json()["value"] == 1.0)

    alarms = service.get("/api/v1/alarms", params={"state": "unack_rtn"}).json()
    assert any(a["id"] == alarm["id"] for a in alarms), alarms
    r = service.post(f"/api/v1/alarms/{alarm['id']}/ack", json={"user": "调度员"})
    assert r.status_code == 200 and r.json()["state"] == "cleared"


def _message(readings: list[dict], substation: str = "S04", seq: int = 1) -> bytes:
    return json.dumps({"mine": "demo", "substation": substation, "seq": seq,
                       "sent_at": time.time(), "readings": readings}).encode()


async def _hostile(service: RunningService) -> None:
    broker = embedded_broker(service)
    url = service.url
    assert (await aget(url, "/api/v1/dead-letters"))["counts"] == {}  # the gateway is polite
    before = await aget(url, f"/api/v1/points/{POINT}")
    now = time.time()
    good = {"point": POINT, "ts": now - 1.5, "value": 0.0123, "quality": "ok", "unit": "%"}
    mixed = [good,
             {"point": "XXX999", "ts": now, "value": 1.0},
             {"point": "001A02", "ts": now, "value": 0.2, "unit": "%"},  # S01's point
             {"point": POINT, "ts": now, "value": 8000, "unit": "ppm"},  # a % point
             {"point": "004A03", "ts": now + 3600, "value": 18.0}]  # clock 1 h ahead
    nan = (b'{"mine": "demo", "substation": "S04", "seq": 2, "sent_at": 1, "readings": '
           b'[{"point": "004A01", "ts": 1, "value": NaN}]}')
    payloads = [b'{"mine": "demo", "substation": ',  # not JSON
                nan,
                b'{"pad": "' + b"x" * (300 * 1024) + b'"}',  # > 256 KiB
                _message([{"point": "001A01", "ts": now, "value": 0.1}], substation="S01"),
                _message(mixed)]
    user = gateway_user("demo", "S04")
    # Its own client id: the simulated gateway (client id = user name) stays connected.
    async with aiomqtt.Client(broker.host, broker.port, username=user,
                              password=broker.credentials[user],
                              identifier="hostile-test-client") as client:
        for p in payloads:
            await client.publish(DATA_TOPIC, p, qos=1)
    sent_at = time.time()

    dl = await await_true(lambda: _dead_letters_if(url, 8), 10, "dead letters stored")
    rows = dl["rows"]
    assert len(rows) == 8
    assert all(r["source"] == DATA_TOPIC and r["detail"] for r in rows)
    by = {r["reason"]: r for r in rows}
    by_point = {json.loads(r["payload"])["point"]: r for r in rows
                if r["reason"] not in ("json", "oversized", "topic")}
    # 001A02 belongs to S01 (a Modbus substation): another substation's point.
    assert by_point["001A02"]["reason"] == "foreign_point"
    expected = {"json": 2, "oversized": 1, "topic": 1, "unknown_point": 1, "foreign_point": 1,
                "unit": 1, "timestamp": 1}
    assert dl["counts"] == expected
    assert Counter(r["reason"] for r in rows) == expected
    assert any("NaN" in r["detail"] for r in rows if r["reason"] == "json")
    assert len(by["oversized"]["payload"]) <= 4096
    assert "S01" in by["topic"]["detail"]
    assert by_point["XXX999"]["reason"] == "unknown_point"
    assert json.loads(by["unit"]["payload"])["unit"] == "ppm"
    assert "'%'" in by["unit"]["detail"] and "'ppm'" in by["unit"]["detail"]
    assert by_point["004A03"]["reason"] == "timestamp"
    assert all(r["at"].endswith("Z") for r in rows)
    # Time filter and parameter checks.
    assert (await aget(url, "/api/v1/dead-letters", limit=3))["rows"] == rows[:3]
    assert (await aget(url, "/api/v1/dead-letters", **{"from": sent_at + 5}))["rows"] == []

    health = await aget(url, "/api/v1/health")
    assert health["dead_letters"] == expected
    assert health["mqtt"]["connected"] is True
    assert health["mqtt"]["rejected_messages"] == 4  # json ×2, oversized, topic
    assert health["mqtt"]["rejected_readings"] == 4  # the mixed message's bad readings

    # The good reading of the mixed message is stored.
    async def stored_good():
        got = await aget(url, f"/api/v1/points/{POINT}/readings", **{
            "from": good["ts"] - 1, "to": good["ts"] + 1})
        return [r for r in got["readings"] if r["value"] == 0.0123]
    (row,) = await await_true(stored_good, 10, "the good reading stored")
    assert row["quality"] == "ok"

    # The collector never stopped: S04's points keep advancing and it stays online.
    before_ts = before["ts"]

    async def advancing():
        p = await aget(url, f"/api/v1/points/{POINT}")
        subs = {s["id"]: s for s in await aget(url, "/api/v1/substations")}
        return p["ts"] > before_ts and p["ts"] >= _iso_after(sent_at + 1) and \
            subs["S04"]["online"]
    await await_true(advancing, 10, "S04 still flowing")


def _iso_after(t: float) -> str:
    from minewatch.readings import iso

    return iso(t)


async def _dead_letters_if(url: str, n: int) -> dict | None:
    dl = await aget(url, "/api/v1/dead-letters")
    return dl if len(dl["rows"]) >= n else None


def test_hostile_gateway_input_is_dead_lettered_and_ingest_goes_on(service: RunningService):
    asyncio.run(_hostile(service))


def test_point_of_a_modbus_substation_is_a_foreign_point(tmp_path):
    from ingest.mqtt_payload import parse_data
    from minewatch.service import Service
    from minewatch.settings import Settings

    points = Service(Settings(data_dir=tmp_path, simulate=False))._mqtt_points()
    parsed = parse_data(DATA_TOPIC, _message([{"point": "001A02", "ts": time.time(),
                                                "value": 0.2}]), points, "demo", time.time())
    assert [r.reason for r in parsed.rejects] == ["foreign_point"]


def test_dead_letters_bad_parameters_are_422(service: RunningService):
    for params in ({"limit": 0}, {"limit": 10_001}, {"from": "yesterday"},
                   {"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
                   {"to": "nan"}):
        r = service.get("/api/v1/dead-letters", params=params)
        assert r.status_code == 422, (params, r.text)
    body = service.get("/api/v1/dead-letters", params={"limit": 10_000}).json()
    assert body == {"counts": {}, "rows": []}


async def _events_out(service: RunningService) -> None:
    broker = embedded_broker(service)
    url = service.url
    async with Subscriber(broker, CITY_USER, ["mw/demo/events", "mw/demo/alarms/#"]) as city:
        t0 = time.time()
        heartbeat = await city.wait_for(
            lambda m: m.topic == "mw/demo/events" and m.payload["type"] == "heartbeat",
            HEARTBEAT_S + 1.5)
        hb = heartbeat.payload
        assert hb["v"] == 1 and hb["mine"] == "demo" and hb["mine_name"]
        assert hb["summary"]["points"] == len(await aget(url, "/api/v1/points"))
        assert hb["summary"]["substations"] == len(await aget(url, "/api/v1/substations"))
        assert heartbeat.at - t0 <= HEARTBEAT_S + 1.5

        r = await apost(url, "/api/v1/sim/scenarios", {"scenario": "gas-overlimit",
                                                        "point": POINT})
        assert r.status_code == 200, r.text
        raised = await city.wait_for(
            lambda m: m.topic == "mw/demo/events" and m.payload["type"] == "alarm"
            and m.payload["transition"] == "raised"
            and m.payload["alarm"]["kind"] == "power_cut_limit", 5)
        alarm = raised.payload["alarm"]
        assert alarm["point_id"] == POINT and alarm["state"] == "unack_active"
        command = await city.wait_for(
            lambda m: m.topic == "mw/demo/events" and m.payload["type"] == "command"
            and m.payload["command"]["target"] == RELAY, 5)
        assert command.payload["command"]["action"] == "cut"
        assert command.payload["command"]["alarm_id"] == alarm["id"]
        live = await city.wait_for(lambda m: m.topic == f"mw/demo/alarms/{alarm['id']}", 5)
        assert live.payload["alarm"]["id"] == alarm["id"]
        # Heartbeats keep coming, now counting the cut relay.
        t1 = time.time()
        hb2 = await city.wait_for(
            lambda m: m.payload["type"] == "heartbeat" and m.at > t1, HEARTBEAT_S + 1.5)
        assert hb2.payload["summary"]["cut_relays"] == 1
        assert hb2.payload["summary"]["open_alarms"] >= 1

    # A city view that connects late gets the retained state of the open alarm.
    async with Subscriber(broker, CITY_USER, ["mw/demo/alarms/#"]) as late:
        retained = await late.wait_for(lambda m: m.topic == f"mw/demo/alarms/{alarm['id']}",
                                       3)
        assert retained.retain is True
        assert retained.payload["type"] == "alarm"
        assert retained.payload["alarm"]["id"] == alarm["id"]
        assert retained.payload["transition"] == "raised"


def test_events_heartbeats_and_retained_alarms_reach_the_city(service: RunningService):
    asyncio.run(_events_out(service))
