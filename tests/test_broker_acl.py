"""The shipped broker configuration: a gateway publishes only its own substation's topics."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import aiomqtt
import pytest

from minewatch.broker import (
    CITY_USER,
    ENGINE_USER,
    BrokerProcess,
    gateway_user,
    write_config,
)
from minewatch.mine import Mine
from minewatch.procs import free_port


@pytest.fixture(scope="module")
def broker():
    mine = Mine.load()
    other = mine.model_copy(update={"mine": mine.mine.model_copy(update={"id": "other"})})
    directory = Path(tempfile.mkdtemp(prefix="minewatch-mqtt-"))
    proc = BrokerProcess(write_config(directory, [mine, other], free_port()))
    proc.start()
    try:
        yield proc.config
    finally:
        proc.stop()


def _client(cfg, user: str, password: str | None = None, **kw) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", cfg.port, username=user,
                          password=password if password is not None else cfg.password(user),
                          **kw)


async def _received(cfg, topic: str, publisher: str, pub_topic: str, wait: float = 0.7):
    """Subscribe as the engine, publish as ``publisher``: what did the engine get?"""
    got = []
    async with _client(cfg, ENGINE_USER) as sub:
        await sub.subscribe(topic, qos=1)
        async with _client(cfg, publisher) as pub:
            await pub.publish(pub_topic, b'{"x": 1}', qos=1)

        async def collect():
            async for msg in sub.messages:
                got.append(str(msg.topic))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), wait)
    return got


async def test_gateway_publishes_its_own_data(broker):
    got = await _received(broker, "mw/#", gateway_user("demo", "S01"), "mw/demo/S01/data")
    assert got == ["mw/demo/S01/data"]


async def test_gateway_cannot_publish_as_another_substation_or_mine(broker):
    user = gateway_user("demo", "S01")
    assert await _received(broker, "mw/#", user, "mw/other/S01/data") == []
    assert await _received(broker, "mw/#", user, "mw/demo/S02/data") == []
    assert await _received(broker, "mw/#", user, "mw/demo/events") == []


async def test_wrong_password_and_anonymous_are_refused(broker):
    with pytest.raises(aiomqtt.MqttError):
        async with _client(broker, gateway_user("demo", "S01"), password="wrong"):
            pass
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", broker.port):
            pass


async def test_city_reads_events_but_not_raw_data(broker):
    got = []
    async with _client(broker, CITY_USER) as city:
        await city.subscribe("mw/#", qos=1)
        async with _client(broker, ENGINE_USER) as engine:
            await engine.publish("mw/demo/events", b"{}", qos=1)
        async with _client(broker, gateway_user("demo", "S01")) as gw:
            await gw.publish("mw/demo/S01/data", b"{}", qos=1)

        async def collect():
            async for msg in city.messages:
                got.append(str(msg.topic))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), 0.7)
    assert got == ["mw/demo/events"]
