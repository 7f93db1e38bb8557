"""A simulated MQTT field gateway: one substation's channels published as JSON batches.

It publishes a batch every poll period and at once when a scenario changes a value
(publish-on-change), executes relay commands from ``mw/{mine}/{sub}/cmd`` and acknowledges
them on ``…/ack``. While the broker is unreachable it keeps building batches into an ordered,
bounded backlog and replays it on reconnect (store-and-forward at the edge), so a broker
restart loses no reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque

import aiomqtt

from minewatch.broker import NODELAY
from simulators.substation import SimulatedSubstation

log = logging.getLogger("minewatch.simulator.mqtt")
QUALITY_LABEL = {(False, False): "ok", (True, False): "fault", (False, True): "calibrating",
                 (True, True): "fault"}


class MqttGateway:
    def __init__(self, model: SimulatedSubstation, mine_id: str, host: str, port: int,
                 username: str, password: str, backlog_max: int = 100_000) -> None:
        self.model = model
        self.mine_id = mine_id
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.base = f"mw/{mine_id}/{model.sub.id}"
        self.period = model.sub.poll_ms / 1000.0
        self.backlog: deque[bytes] = deque()
        self.backlog_max = backlog_max
        self.dropped = 0
        self.published = 0
        self.seq = 0
        self.connected = False
        self.enabled = True  # substation-offline scenario: the gateway goes silent
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        model.on_change = self._changed.set

    def batch(self, now: float) -> bytes:
        readings = []
        for ch in self.model.channels.values():
            ov = ch.override
            value = self.model.value_of(ch, now)
            readings.append({
                "point": ch.point.id, "ts": now,
                "value": round(value, 4) if math.isfinite(value) else None,
                "quality": QUALITY_LABEL[(bool(ov and ov.fault), bool(ov and ov.calibrating))],
                "unit": ch.unit})
        self.seq += 1
        return json.dumps({"mine": self.mine_id, "substation": self.model.sub.id,
                           "seq": self.seq, "sent_at": now, "readings": readings}).encode()

    def _enqueue(self, payload: bytes) -> None:
        if len(self.backlog) >= self.backlog_max:
            self.backlog.popleft()
            self.dropped += 1
        self.backlog.append(payload)

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            while self.backlog:
                await client.publish(f"{self.base}/data", self.backlog[0], qos=1)
                self.backlog.popleft()
                self.published += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self.period)
            self._changed.clear()
            if self.enabled:
                self._enqueue(self.batch(time.time()))

    async def _commands(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            try:
                cmd = json.loads(msg.payload)
                coils = [int(c) for c in cmd["coils"]]
                cut = bool(cmd["cut"])
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("gateway %s: bad command %r: %s", self.base, msg.payload, exc)
                continue
            applied = self.model.set_coils(coils, cut)
            ack = {"id": cmd.get("id"), "ok": True, "applied": applied, "at": time.time()}
            await client.publish(f"{self.base}/ack", json.dumps(ack), qos=1)
            self._changed.set()  # publish the feed sensors' new state at once

    async def run(self) -> None:
        """Publish while connected; keep batching while not; reconnect with backoff."""
        backoff = 0.2
        while True:
            if not self.enabled:
                await asyncio.sleep(self.period)
                continue
            try:
                async with aiomqtt.Client(self.host, self.port, username=self.username,
                                          password=self.password, identifier=self.username,
                                          clean_session=False, keepalive=10,
                                          socket_options=NODELAY,
                                          max_inflight_messages=100) as client:
                    self.connected = True
                    backoff = 0.2
                    await client.subscribe(f"{self.base}/cmd", qos=1)
                    pub = asyncio.create_task(self._publisher(client))
                    cmds = asyncio.create_task(self._commands(client))
                    try:
                        while self.enabled and not pub.done() and not cmds.done():
                            await asyncio.sleep(0.1)
                        for t in (pub, cmds):
                            if t.done() and t.exception():
                                raise t.exception()
                    finally:
                        pub.cancel()
                        cmds.cancel()
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("gateway %s: broker lost (%s), buffering", self.base, exc)
            self.connected = False
            # Keep sampling into the backlog while the broker is away.
            deadline = time.monotonic() + backoff
            while time.monotonic() < deadline:
                if self.enabled:
                    self._enqueue(self.batch(time.time()))
                await asyncio.sleep(min(self.period, backoff))
            backoff = min(backoff * 2, 2.0)

    def start(self) -> asyncio.Task:
        self._task = asyncio.create_task(self.run(), name=f"gateway-{self.base}")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
