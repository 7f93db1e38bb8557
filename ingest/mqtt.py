"""MQTT link of one mine's engine: data in, relay commands out, events out.

- Data: subscribes ``mw/{mine}/+/data`` with QoS 1 on a persistent session (fixed client id,
  clean_session off), so the broker queues readings published while the service is down or
  reconnecting; each message is validated (ingest/mqtt_payload.py) and its good readings go
  to the engine as one batch; rejected messages or readings go to the dead-letter handler.
  A data message is acknowledged (PUBACK, manual) only once the engine has taken it — its
  readings are in the durable spool — so a crash with a backlog loses nothing (the broker
  redelivers; stored readings are idempotent), and the backlog waits at the broker, bounded
  by its in-flight window, instead of growing in this process's memory.
- Commands: a relay write publishes ``{"id", "coils", "cut"}`` on ``mw/{mine}/{sub}/cmd`` and
  waits for the gateway's ack on ``…/ack``; no ack in time is a failed write (fail safe: the
  workflow records it and alarms).
- Events: alarm transitions, commands and workflow steps go out on ``mw/{mine}/events`` (QoS 1)
  and each alarm's last state retained on ``mw/{mine}/alarms/{id}``. While the broker is away
  events are appended to a local spool file and sent in order on reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from ingest.mqtt_payload import Parsed, PointInfo, Reject, parse_data
from minewatch.broker import NODELAY
from minewatch.readings import Batch

log = logging.getLogger("minewatch.ingest.mqtt")

BatchHandler = Callable[[Batch], Awaitable[None]]
RejectHandler = Callable[[str, Reject, bytes], None]


def _puback(client: aiomqtt.Client, msg: aiomqtt.Message) -> None:
    if msg.qos > 0:
        client._client.ack(msg.mid, msg.qos)


class CommandFailed(RuntimeError):
    """A relay command was not acknowledged by the gateway in time."""


@dataclass
class MqttStats:
    messages: int = 0
    readings: int = 0
    rejected_messages: int = 0
    rejected_readings: int = 0
    connects: int = 0
    events_sent: int = 0
    events_spooled: int = 0
    last_error: str = ""


class EventSpool:
    """Append-only JSON-lines file of events not yet sent, with a sent-offset file."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "events.jsonl"
        self.offset_path = directory / "events.offset"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def append(self, topic: str, payload: dict, retain: bool) -> None:
        line = json.dumps({"topic": topic, "payload": payload, "retain": retain},
                          ensure_ascii=False) + "\n"
        os.write(self._fd, line.encode())

    def pending(self) -> list[tuple[int, dict]]:
        offset = int(self.offset_path.read_text()) if self.offset_path.exists() else 0
        out = []
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn tail
                offset += len(line)
                with contextlib.suppress(ValueError):
                    out.append((offset, json.loads(line)))
        return out

    def commit(self, offset: int) -> None:
        tmp = self.offset_path.with_suffix(".tmp")
        tmp.write_text(str(offset))
        os.replace(tmp, self.offset_path)
        if offset == self.path.stat().st_size:  # everything sent: start a fresh file
            os.ftruncate(self._fd, 0)
            tmp.write_text("0")
            os.replace(tmp, self.offset_path)

    def close(self) -> None:
        os.close(self._fd)


class MqttLink:
    def __init__(self, mine_id: str, points: dict[str, PointInfo], host: str, port: int,
                 username: str, password: str, on_batch: BatchHandler,
                 on_reject: RejectHandler, spool_dir: Path, *, ack_timeout: float = 1.0,
                 client_id: str | None = None) -> None:
        self.mine_id = mine_id
        self.points = points
        self.host, self.port = host, port
        self.username, self.password = username, password
        self.client_id = client_id or f"minewatch-{mine_id}"
        self.on_batch = on_batch
        self.on_reject = on_reject
        self.ack_timeout = ack_timeout
        self.stats = MqttStats()
        self.last_seen: dict[str, float] = {}  # substation → last data message (server time)
        self.client: aiomqtt.Client | None = None
        self._acks: dict[str, asyncio.Future] = {}
        self._events = EventSpool(spool_dir)
        self._wake = asyncio.Event()
        # (the connection it came on, the message): acknowledged on that connection only.
        self._inbox: asyncio.Queue[tuple[aiomqtt.Client, aiomqtt.Message]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    @property
    def connected(self) -> bool:
        return self.client is not None

    # --- inbound -----------------------------------------------------------------------------
    async def _data_worker(self) -> None:
        """Data messages in arrival order, off the receive loop: a cut waiting for its ack
        must not block the loop that delivers the ack."""
        while True:
            client, msg = await self._inbox.get()
            try:
                await self._handle(msg)
            except Exception:  # one bad message never stops ingest
                log.exception("MQTT message handling failed")
            if client is self.client:  # else the broker redelivers it on the new session
                _puback(client, msg)
            # Queue.get does not suspend while messages wait: yield once per message, or a
            # backlog would starve the Modbus polls, the WebSockets and the API on this loop.
            await asyncio.sleep(0)

    async def _handle(self, msg: aiomqtt.Message) -> None:
        topic = str(msg.topic)
        payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
        received_at, received_perf = time.time(), time.perf_counter()
        parsed: Parsed = parse_data(topic, payload, self.points, self.mine_id, received_at)
        self.stats.messages += 1
        if parsed.rejects:
            whole = not parsed.slots and parsed.substation is None
            self.stats.rejected_messages += int(whole)
            self.stats.rejected_readings += 0 if whole else len(parsed.rejects)
            for rej in parsed.rejects:
                self.on_reject(topic, rej, payload)
        if parsed.substation is not None:
            self.last_seen[parsed.substation] = received_at
        if parsed.slots:
            slots, ts, values, quality = parsed.arrays()
            self.stats.readings += len(slots)
            await self.on_batch(Batch(slots, ts, values, quality, received_at, received_perf))

    def _ack(self, payload: bytes) -> None:
        try:
            ack = json.loads(payload)
            fut = self._acks.pop(str(ack["id"]), None)
        except (ValueError, KeyError, TypeError):
            log.warning("bad ack %r", payload[:200])
            return
        if fut is not None and not fut.done():
            fut.set_result(ack)

    async def write_coils(self, substation: str, coils: list[int], cut: bool) -> dict:
        client = self.client
        if client is None:
            raise CommandFailed("broker not connected")
        cmd_id = uuid.uuid4().hex
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._acks[cmd_id] = fut
        try:
            await client.publish(f"mw/{self.mine_id}/{substation}/cmd",
                                 json.dumps({"id": cmd_id, "coils": coils, "cut": cut}), qos=1)
            ack = await asyncio.wait_for(fut, self.ack_timeout)
        except (TimeoutError, aiomqtt.MqttError) as exc:
            raise CommandFailed(f"no ack from {substation} within {self.ack_timeout}s: "
                                f"{exc!r}") from exc
        finally:
            self._acks.pop(cmd_id, None)
        if not ack.get("ok"):
            raise CommandFailed(f"{substation} refused the command: {ack}")
        return ack

    # --- outbound events ---------------------------------------------------------------------
    def publish_event(self, payload: dict[str, Any], alarm_id: str | None = None) -> None:
        """Queue an event durably; the sender task publishes it (now, or after reconnect)."""
        self._events.append(f"mw/{self.mine_id}/events", payload, False)
        if alarm_id is not None:
            self._events.append(f"mw/{self.mine_id}/alarms/{alarm_id}", payload, True)
        self.stats.events_spooled += 1
        self._wake.set()

    async def _sender(self, client: aiomqtt.Client) -> None:
        while True:
            sent = None  # offset after the last event the broker took
            try:
                for offset, ev in self._events.pending():
                    await client.publish(ev["topic"], json.dumps(ev["payload"],
                                                                 ensure_ascii=False),
                                         qos=1, retain=ev["retain"])
                    sent = offset
                    self.stats.events_sent += 1
            finally:  # one offset write per run of events, also when the broker drops out
                if sent is not None:
                    self._events.commit(sent)
            await self._wake.wait()
            self._wake.clear()

    # --- connection loop -------------------------------------------------------------------------
    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                client = aiomqtt.Client(
                    self.host, self.port, username=self.username, password=self.password,
                    identifier=self.client_id, clean_session=False, keepalive=10,
                    socket_options=NODELAY, max_inflight_messages=200,
                    max_concurrent_outgoing_calls=1000)
                # aiomqtt does not expose paho's manual acknowledgement; its paho client does.
                client._client.manual_ack_set(True)
                async with client:
                    await client.subscribe(f"mw/{self.mine_id}/+/data", qos=1)
                    await client.subscribe(f"mw/{self.mine_id}/+/ack", qos=1)
                    self.client = client
                    self.stats.connects += 1
                    backoff = 0.2
                    log.info("MQTT connected to %s:%d", self.host, self.port)
                    sender = asyncio.create_task(self._sender(client))
                    try:
                        async for msg in client.messages:
                            if str(msg.topic).endswith("/ack"):
                                payload = msg.payload
                                self._ack(payload if isinstance(payload, bytes)
                                          else str(payload).encode())
                                _puback(client, msg)
                            else:
                                self._inbox.put_nowait((client, msg))
                    finally:
                        sender.cancel()
            except aiomqtt.MqttError as exc:
                self.stats.last_error = str(exc)
                if self.client is not None:
                    log.warning("MQTT connection lost: %s", exc)
            self.client = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def start(self) -> list[asyncio.Task]:
        self._tasks = [asyncio.create_task(self.run(), name="mqtt-link"),
                       asyncio.create_task(self._data_worker(), name="mqtt-data")]
        return self._tasks

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._events.close()
