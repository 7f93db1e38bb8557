"""Test helpers for MQTT: a service's broker credentials, a collecting subscriber, async HTTP.

Every wait is bounded and only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import httpx

from minewatch.procs import ServiceProcess, auth_headers, ws_url


@dataclass(frozen=True)
class BrokerAccess:
    host: str
    port: int
    credentials: dict[str, str]  # username → password


def embedded_broker(svc: ServiceProcess) -> BrokerAccess:
    """The service's embedded mosquitto: port from /api/v1/health, passwords from its file."""
    health = svc.get("/api/v1/health").json()
    assert health["broker"] and health["broker"]["embedded"], health.get("broker")
    creds = json.loads((svc.data_dir / "broker" / "credentials.json").read_text())
    return BrokerAccess("127.0.0.1", health["broker"]["port"], creds)


@dataclass
class Received:
    topic: str
    payload: Any  # decoded JSON (or the raw bytes when not JSON)
    retain: bool
    at: float


@dataclass
class Subscriber:
    """Collects every message on ``topics`` in a background task; reconnects (0.2 s) when
    the broker goes away. ``identifier`` + ``clean_session=False`` make it a persistent
    session, so messages published while it reconnects are queued for it by the broker."""

    broker: BrokerAccess
    user: str
    topics: list[str]
    identifier: str | None = None
    clean_session: bool = True
    messages: list[Received] = field(default_factory=list)
    connects: int = 0
    _task: asyncio.Task | None = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                        self.broker.host, self.broker.port, username=self.user,
                        password=self.broker.credentials[self.user],
                        identifier=self.identifier, clean_session=self.clean_session,
                        keepalive=5) as client:
                    for t in self.topics:
                        await client.subscribe(t, qos=1)
                    self.connects += 1
                    self._connected.set()
                    async for msg in client.messages:
                        raw = msg.payload if isinstance(msg.payload, bytes) else \
                            str(msg.payload).encode()
                        try:
                            payload = json.loads(raw)
                        except ValueError:
                            payload = raw
                        self.messages.append(Received(str(msg.topic), payload,
                                                      bool(msg.retain), time.time()))
            except aiomqtt.MqttError:
                pass
            self._connected.clear()
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_for(self, predicate: Callable[[Received], bool],
                       timeout: float) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages:
                if predicate(m):
                    return m
            await asyncio.sleep(0.05)
        seen = [(m.topic, m.payload.get("type"), m.payload.get("transition"))
                if isinstance(m.payload, dict) else (m.topic, m.payload[:80])
                for m in self.messages]
        raise AssertionError(f"no matching message within {timeout}s; got {seen[-30:]}")

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        return [m for m in self.messages if predicate(m)]


async def aget(url: str, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(timeout=10, headers=auth_headers(url)) as client:
        r = await client.get(url + path, params=params or None)
    r.raise_for_status()
    return r.json()


async def apost(url: str, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, headers=auth_headers(url)) as client:
        return await client.post(url + path, json=body)


async def await_true(predicate: Callable[[], Any], timeout: float, what: str,
                     interval: float = 0.1) -> Any:
    """Await an async predicate until truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last {last!r})")


async def cut_alarm_over_ws(url: str, point: str, timeout: float = 3.0) -> dict:
    """Connect to /ws/alarms, inject gas-overlimit on ``point``, return its cut alarm."""
    from websockets.asyncio.client import connect

    got = []
    async with connect(ws_url(url, "/ws/alarms")) as ws:
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert snapshot["type"] == "snapshot"
        r = await apost(url, "/api/v1/sim/scenarios", {"scenario": "gas-overlimit",
                                                        "point": point})
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = json.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
            got.append(msg)
            if msg["type"] == "alarm" and msg["alarm"]["kind"] == "power_cut_limit" \
                    and msg["alarm"]["point_id"] == point:
                return msg["alarm"]
    raise AssertionError(f"no power_cut_limit alarm for {point} within {timeout}s: {got}")
