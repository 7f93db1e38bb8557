"""No reading or event lost, none doubled — across a real broker restart and a real database
outage.

- Broker: the service runs against a mosquitto the test owns (``MINEWATCH_BROKER_URL`` and
  ``MINEWATCH_BROKER_CREDENTIALS``, so the simulated MQTT gateway S04 uses it too). The test
  stops the broker for ~2 s: the gateway buffers its readings (store-and-forward), the
  engine's persistent session resumes, and events raised meanwhile (a Modbus over-limit) are
  spooled and reach the city once the broker is back — once, and retained.
- Database: the service runs on a PostgreSQL cluster of its own that the test stops for
  60 s. Monitoring goes on (an over-limit during the outage still alarms and cuts power, a
  dispatcher acknowledges it with the token they hold); the durable spool fills and is
  written out after recovery, each reading and record once.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from minewatch.broker import CITY_USER, ENGINE_USER, BrokerProcess, write_config
from minewatch.mine import Mine
from minewatch.pgcluster import start_cluster
from minewatch.procs import ServiceProcess, free_port, start_service
from minewatch.readings import parse_time
from tests.mqtt_util import BrokerAccess, Subscriber, aget, apost, await_true, cut_alarm_over_ws

POLL_S = 0.5  # the sample mine's poll period
MAX_GAP_S = 2 * POLL_S + 0.1  # "no gap larger than ~2 poll periods"
POINT = "001A02"  # Modbus (S01): 1101 return corner methane, cut 1.5 %
FACE_RELAYS = {"001C01", "001C02", "001C03"}
MINE = Mine.load()
MODBUS_POINTS = sorted(p.id for p in MINE.points if next(
    s for s in MINE.substations if s.id == p.substation).protocol == "modbus")
S04_POINTS = sorted(p.id for p in MINE.points if p.substation == "S04")


def _gaps(ts: list[float]) -> float:
    ts = sorted(ts)
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


async def _point_ts(url: str, point: str) -> float:
    p = await aget(url, f"/api/v1/points/{point}")
    return parse_time(p["ts"]) if p["ts"] else 0.0


async def _open_cut_alarm(url: str, point: str, after: float) -> dict | None:
    for a in await aget(url, "/api/v1/alarms", state="open"):
        if a["point_id"] == point and a["kind"] == "power_cut_limit" \
                and parse_time(a["raised_at"]) >= after:
            return a
    return None


# --- broker restart ----------------------------------------------------------------------------

@pytest.fixture
def own_broker():
    directory = Path(tempfile.mkdtemp(prefix="minewatch-mqtt-"))
    broker = BrokerProcess(write_config(directory, [MINE], free_port()))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def _broker_restart(svc: ServiceProcess, broker: BrokerProcess) -> None:
    url = svc.url
    cfg = broker.config
    access = BrokerAccess("127.0.0.1", cfg.port, cfg.credentials)
    health = await aget(url, "/api/v1/health")
    assert health["broker"] == {"embedded": False, "pid": None, "host": "127.0.0.1",
                                "port": cfg.port}
    assert health["mqtt"]["connected"] and health["mqtt"]["connects"] == 1
    # A persistent city session: what is published while it reconnects is queued for it.
    async with Subscriber(access, CITY_USER, ["mw/demo/events", "mw/demo/alarms/#"],
                          identifier="test-city-outage", clean_session=False) as city:
        t0 = time.time()
        await asyncio.sleep(2.0)

        await asyncio.to_thread(broker.stop)
        t_down = time.time()
        await await_true(lambda: _disconnected(url), 5, "engine sees the broker gone")
        # A Modbus over-limit while the broker is down: cut at once, event spooled.
        r = await apost(url, "/api/v1/sim/scenarios", {"scenario": "gas-overlimit",
                                                        "point": POINT})
        assert r.status_code == 200, r.text
        alarm = await await_true(lambda: _open_cut_alarm(url, POINT, t_down), 3,
                                 "cut alarm raised during the broker outage")
        await asyncio.sleep(max(0.0, t_down + 2.0 - time.time()))
        await asyncio.to_thread(broker.start)
        t_up = time.time()
        assert not (await aget(url, "/api/v1/health"))["mqtt"]["connected"]
        assert t_up - t_down >= 2.0

        def is_raised(m) -> bool:
            return m.topic == "mw/demo/events" and m.payload.get("type") == "alarm" \
                and m.payload["alarm"]["id"] == alarm["id"] \
                and m.payload["transition"] == "raised"
        got = await city.wait_for(is_raised, 15)
        assert got.at >= t_up
        health = await await_true(lambda: _reconnected(url), 10, "engine session resumed")
        assert health["mqtt"]["connects"] == 2
        # S04 flows again and its buffered readings arrived; then let duplicates show up.
        t_end = t_up + 2.0
        for p in S04_POINTS:
            await await_true(lambda p=p: _point_ts_after(url, p, t_end + 0.5), 15,
                             f"{p} flowing after the restart")
        await await_true(lambda: _caught_up(url), 15, "store writer caught up")
        await asyncio.sleep(1.0)
        raised = city.matching(is_raised)
        assert len(raised) == 1, [m.payload for m in raised]
        cmds = city.matching(lambda m: m.topic == "mw/demo/events"
                             and m.payload.get("type") == "command"
                             and m.payload["command"]["alarm_id"] == alarm["id"]
                             and m.payload["command"]["action"] == "cut")
        # One event per command state change (issued, verified), none doubled.
        states = [(m.payload["command"]["id"], m.payload["command"]["result"]) for m in cmds]
        assert len(states) == len(set(states)), states
        verified = {m.payload["command"]["target"] for m in cmds
                    if m.payload["command"]["result"] == "verified"}
        assert verified == FACE_RELAYS, states

    # The retained topic holds the alarm for a late joiner.
    async with Subscriber(access, CITY_USER, [f"mw/demo/alarms/{alarm['id']}"]) as late:
        ret = await late.wait_for(lambda m: True, 3)
        assert ret.retain and ret.payload["alarm"]["id"] == alarm["id"]
        assert ret.payload["transition"] == "raised"

    # Every S04 reading over the whole window is stored once, with no gap across the outage.
    for p in S04_POINTS:
        rows = (await aget(url, f"/api/v1/points/{p}/readings",
                           **{"from": t0, "to": t_end}))["readings"]
        ts = [parse_time(r["ts"]) for r in rows]
        assert len(ts) == len(set(ts)), f"{p}: duplicate readings"
        assert min(ts) - t0 <= MAX_GAP_S and t_end - max(ts) <= MAX_GAP_S, (p, t0, ts[:3])
        assert _gaps(ts) <= MAX_GAP_S, f"{p}: gap {_gaps(ts):.2f}s over {t0}…{t_end}"
        outage = [t for t in ts if t_down < t < t_up]
        assert len(outage) >= (t_up - t_down) / POLL_S - 2, f"{p}: outage not buffered"
        assert len(ts) >= (t_end - t0) / POLL_S - 2, (p, len(ts))


async def _disconnected(url: str) -> bool:
    return not (await aget(url, "/api/v1/health"))["mqtt"]["connected"]


async def _reconnected(url: str) -> dict | None:
    h = await aget(url, "/api/v1/health")
    return h if h["mqtt"]["connected"] else None


async def _point_ts_after(url: str, point: str, t: float) -> bool:
    return await _point_ts(url, point) > t


async def _caught_up(url: str) -> bool:
    h = await aget(url, "/api/v1/health")
    return h["store_backlog_ops"] <= 2


def test_broker_restart_loses_no_reading_and_no_event(tmp_path: Path, own_broker):
    cfg = own_broker.config
    env = {"MINEWATCH_BROKER_URL":
           f"mqtt://{ENGINE_USER}:{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}",
           "MINEWATCH_BROKER_CREDENTIALS": str(cfg.directory / "credentials.json")}
    svc = start_service(tmp_path, env=env)  # healthy = every substation online, S04 too
    try:
        asyncio.run(_broker_restart(svc, own_broker))
    finally:
        svc.stop()
    log = svc.log.read_text()
    assert "embedded mosquitto" not in log


# --- database outage -----------------------------------------------------------------------

@pytest.fixture
def own_cluster():
    directory = Path(tempfile.mkdtemp(prefix="minewatch-pg-"))
    cluster = start_cluster(directory, free_port())
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


OUTAGE_S = 60.0  # the database is down this long (issue 9: 60 s during ingest)
ACK_USER = "停库值班员"


async def _db_outage(svc: ServiceProcess, cluster) -> tuple[float, float, float, float, str]:
    url = svc.url
    h = await aget(url, "/api/v1/health")
    assert h["store"] == "postgres-native" and h["store_errors"] == 0
    t0 = time.time()
    await asyncio.sleep(2.0)

    await asyncio.to_thread(cluster.stop)
    t_down = time.time()
    # Safety first: the over-limit alarms and cuts power while the database is down.
    alarm = await cut_alarm_over_ws(url, POINT, 3.0)

    async def cut_and_dead() -> bool:
        relays = {r["relay"]: r for r in (await aget(url, "/api/v1/sim"))["relays"]}
        return all(relays[r]["open"] and relays[r]["feed_powered"] is False
                   for r in FACE_RELAYS)
    await await_true(cut_and_dead, 3, "face relays open and feeds dead during the outage")
    assert (await aget(url, f"/api/v1/points/{POINT}"))["state"] == "cut"

    async def writer_failing() -> bool:
        return (await aget(url, "/api/v1/health"))["store_errors"] > 0
    await await_true(writer_failing, 5, "the writer notices the outage")
    readings_down = (await aget(url, "/api/v1/health"))["readings"]
    # Half-way: the dispatcher acknowledges the alarm (their token stands in for the user
    # record); a new login gets a clear 503, not a crash.
    await asyncio.sleep(max(0.0, t_down + OUTAGE_S / 2 - time.time()))
    ack = await apost(url, f"/api/v1/alarms/{alarm['id']}/ack",
                      {"user": ACK_USER, "comment": "数据库中断期间确认"})
    assert ack.status_code == 200, ack.text
    async with httpx.AsyncClient(timeout=10) as anon:
        r = await anon.post(url + "/api/v1/auth/token",
                            data={"username": "admin", "password": "whatever-pass"})
    assert r.status_code == 503, (r.status_code, r.text)
    await asyncio.sleep(max(1.5, t_down + OUTAGE_S - time.time()))
    h = await aget(url, "/api/v1/health")
    assert h["readings"] > readings_down  # collectors kept polling
    assert all(s["online"] for s in h["substations"])
    assert h["store_backlog_ops"] > 0  # spooled, waiting for the database
    await asyncio.to_thread(cluster.start)
    t_up = time.time()
    assert t_up - t_down >= OUTAGE_S

    t_end = t_up + 2.0

    async def caught_up() -> dict | None:
        if time.time() < t_end + 1.0:
            return None
        h = await aget(url, "/api/v1/health")
        ok = h["store_backlog_ops"] <= 2 and h["store_last_error_at"] is not None \
            and h["store_applied_ops"] > 0 and h["stored"] > 0
        return h if ok and _stored_beyond(cluster.url, t_end) else None
    await await_true(caught_up, 60, "store writer caught up after the outage", interval=0.25)
    return t0, t_down, t_up, t_end, alarm["id"]


def _stored_beyond(db_url: str, t: float) -> bool:
    """Every Modbus point has a stored reading after ``t`` (the writer applies in order)."""
    with psycopg.connect(db_url, connect_timeout=5) as conn:
        n = conn.execute("SELECT count(DISTINCT point_id) FROM readings "
                         "WHERE point_id = ANY(%s) AND ts > to_timestamp(%s)",
                         (MODBUS_POINTS, t)).fetchone()[0]
    return n == len(MODBUS_POINTS)


def test_database_outage_loses_no_reading_and_doubles_nothing(tmp_path: Path, own_cluster):
    svc = start_service(tmp_path, "--database-url", own_cluster.url)
    try:
        t0, t_down, t_up, t_end, alarm_id = asyncio.run(_db_outage(svc, own_cluster))
        health = svc.get("/api/v1/health").json()
    finally:
        svc.stop()
    assert health["spool_errors"] == 0 and health["spool_append_errors"] == 0

    with psycopg.connect(own_cluster.url, connect_timeout=5) as conn:
        window = (MODBUS_POINTS, t0, t_end)
        total, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (point_id, ts)) FROM readings "
            "WHERE point_id = ANY(%s) AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            window).fetchone()
        assert total == distinct
        per_point = conn.execute(
            "SELECT point_id, count(*), extract(epoch FROM min(ts)), extract(epoch FROM max(ts)),"
            " extract(epoch FROM max(gap)) FROM ("
            "  SELECT point_id, ts, ts - lag(ts) OVER (PARTITION BY point_id ORDER BY ts) gap"
            "  FROM readings WHERE point_id = ANY(%s)"
            "  AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)) g GROUP BY point_id",
            window).fetchall()
        assert sorted(r[0] for r in per_point) == MODBUS_POINTS
        for pid, n, lo, hi, gap in per_point:
            assert float(lo) - t0 <= MAX_GAP_S and t_end - float(hi) <= MAX_GAP_S, pid
            assert float(gap) <= MAX_GAP_S, f"{pid}: gap {float(gap):.2f}s"
            assert n >= (t_end - t0) / POLL_S - 2, (pid, n)
        outage = conn.execute(
            "SELECT count(*) FROM readings WHERE point_id = ANY(%s) "
            "AND ts BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            (MODBUS_POINTS, t_down, t_up)).fetchone()[0]
        assert outage >= len(MODBUS_POINTS) * ((t_up - t_down) / POLL_S - 2)

        alarms = conn.execute(
            "SELECT id, record->>'acked_by' FROM alarms WHERE point_id = %s "
            "AND kind = 'power_cut_limit' AND raised_at >= %s", (POINT, t_down)).fetchall()
        assert alarms == [(alarm_id, ACK_USER)]  # the acknowledgement during the outage
        cmds = conn.execute(
            "SELECT target, record->>'result', id FROM commands WHERE alarm_id = %s "
            "AND action = 'cut' ORDER BY target", (alarm_id,)).fetchall()
        assert [c[0] for c in cmds] == sorted(FACE_RELAYS)
        assert all(c[1] == "verified" for c in cmds), cmds
        # The journal holds each transition once (spooled ops are keyed, replays not doubled).
        journal = conn.execute(
            "SELECT subject, event, count(*) FROM journal WHERE subject = ANY(%s) "
            "GROUP BY subject, event", ([alarm_id] + [c[2] for c in cmds],)).fetchall()
        assert all(n == 1 for _, _, n in journal), journal
        events = {(subject, event) for subject, event, _ in journal}
        assert (alarm_id, "alarm_raised") in events
        assert (alarm_id, "alarm_acknowledged") in events
        assert all((c[2], "command_verified") in events for c in cmds), events
