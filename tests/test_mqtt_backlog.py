"""A SIGKILL while the engine works through an MQTT backlog loses no reading.

The service acknowledges a data message only after its readings are in the durable spool
(ingest/mqtt.py), so what the killed process had received but not spooled is redelivered by
the broker to the restarted one. Set-up: the service's persistent session exists (a first
start), the service is stopped, a gateway publishes a backlog the broker queues, the service
starts, is SIGKILLed half-way through the backlog, and starts again: every reading of the
backlog is stored exactly once (the store's key is (point, ts)).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiomqtt
import pytest

from minewatch.broker import ENGINE_USER, BrokerProcess, gateway_user
from minewatch.procs import ServiceProcess, start_service
from tests.test_city import running_broker

POINT = "004A01"  # the sample mine's MQTT gateway S04: trolley methane
MESSAGES = 6000
BASE_TS = time.time() - 3600  # an hour ago: inside the accepted past window, before live data


@pytest.fixture
def broker():
    with running_broker() as proc:
        yield proc


async def publish_backlog(broker: BrokerProcess) -> None:
    cfg, user = broker.config, gateway_user("demo", "S04")
    async with aiomqtt.Client("127.0.0.1", cfg.port, username=user,
                              password=cfg.password(user), identifier="backlog-test",
                              max_inflight_messages=100) as c:
        for seq in range(MESSAGES):
            ts = BASE_TS + seq * 0.01
            await c.publish("mw/demo/S04/data", json.dumps({
                "mine": "demo", "substation": "S04", "seq": seq, "sent_at": ts,
                "readings": [{"point": POINT, "ts": ts, "value": 0.2, "quality": "ok",
                              "unit": "%"}]}), qos=1)


def stored(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "minewatch.db", timeout=10) as db:
        return db.execute("SELECT count(*) FROM readings WHERE point_id = ? AND ts BETWEEN ? "
                          "AND ?", (POINT, BASE_TS - 0.001,
                                    BASE_TS + MESSAGES * 0.01)).fetchone()[0]


def test_sigkill_during_an_mqtt_backlog_loses_no_reading(tmp_path: Path, broker):
    cfg = broker.config
    env = {"MINEWATCH_BROKER_URL":
           f"mqtt://{ENGINE_USER}:{cfg.password(ENGINE_USER)}@127.0.0.1:{cfg.port}",
           "MINEWATCH_BROKER_CREDENTIALS": str(cfg.directory / "credentials.json")}
    data = tmp_path / "data"
    first = start_service(tmp_path, env=env, data_dir=data)  # creates the persistent session
    first.stop()
    asyncio.run(publish_backlog(broker))  # queued by the broker for the stopped engine

    svc: ServiceProcess = start_service(tmp_path, env=env, data_dir=data)
    deadline = time.monotonic() + 60
    while True:  # kill once it is part-way through the backlog
        taken = svc.get("/api/v1/health").json()["mqtt"]["messages"]
        if taken >= MESSAGES // 10:
            break
        assert time.monotonic() < deadline, f"backlog not being taken ({taken} messages)"
        time.sleep(0.02)
    svc.proc.kill()
    svc.proc.wait(10)
    assert taken < MESSAGES, "the backlog was done before the kill: nothing was tested"

    again = start_service(tmp_path, env=env, data_dir=data)
    try:
        deadline = time.monotonic() + 90
        while (n := stored(data)) < MESSAGES:
            assert time.monotonic() < deadline, f"{MESSAGES - n} of {MESSAGES} readings lost"
            time.sleep(0.5)
        assert n == MESSAGES
    finally:
        again.stop()
