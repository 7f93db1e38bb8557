"""Simulated substations (分站): one pymodbus TCP server per substation on loopback.

Each channel reads its point's baseline plus slow drift and noise, unless a scenario holds an
override. Relay coils written by the collector open the relay; the relay's feed (馈电) point
then reads 0 (no power downstream), which is how a real feed sensor confirms a cut. Values
are computed when the collector reads them, so what is on the wire is always current.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from minewatch.mine import Mine, Point, Substation, Thresholds
from minewatch.registers import REGS_PER_CHANNEL, encode_channel

log = logging.getLogger("minewatch.simulator")

DEFAULT_BASELINE = {"ch4": 0.2, "co": 2.0, "o2": 20.8, "co2": 0.1, "wind": 1.5, "temp": 22.0,
                    "smoke": 0.0, "fan": 1.0, "feed": 1.0}
NOISE = {"ch4": 0.01, "co": 0.4, "o2": 0.03, "co2": 0.01, "wind": 0.05, "temp": 0.1}


@dataclass
class Override:
    """A scenario's hold on one channel: ramp from the current value to ``target``."""

    target: float
    start_value: float
    started: float
    ramp_s: float = 0.0
    fault: bool = False
    calibrating: bool = False
    curve: Callable[[float], float] | None = None  # value at t seconds after start (drills)
    fault_after_s: float | None = None  # the channel's fault bit comes on at this time

    def value_at(self, now: float) -> float:
        if self.curve is not None:
            return self.curve(now - self.started)
        if self.ramp_s <= 0 or now >= self.started + self.ramp_s:
            return self.target
        frac = (now - self.started) / self.ramp_s
        return self.start_value + (self.target - self.start_value) * frac


@dataclass
class SimChannel:
    point: Point
    scale: float
    unit: str
    baseline: float
    noisy: bool
    phase: float = field(default_factory=lambda: random.uniform(0, 2 * math.pi))
    override: Override | None = None

    def natural(self, now: float) -> float:
        if not self.noisy:
            return self.baseline
        amp = NOISE.get(self.point.kind, 0.01)
        drift = 2 * amp * math.sin(now / 300.0 + self.phase)
        return max(0.0, self.baseline + drift + random.gauss(0.0, amp))


class SimulatedSubstation:
    def __init__(self, mine: Mine, sub: Substation, limits: Thresholds) -> None:
        self.mine = mine
        self.sub = sub
        self.channels: dict[int, SimChannel] = {}
        for p in mine.points_of(sub.id):
            base = p.baseline if p.baseline is not None else DEFAULT_BASELINE[p.kind]
            sensor = limits.sensors[p.kind]
            self.channels[p.channel] = SimChannel(p, sensor.scale, sensor.unit, base,
                                                  noisy=p.kind in NOISE)
        self.n_channels = max(self.channels) + 1
        self.relays = {r.coil: r for r in mine.relays_of(sub.id)}
        self.coils: dict[int, bool] = dict.fromkeys(self.relays, False)
        self.coil_changed_at: dict[int, float] = {}
        self.stuck: set[int] = set()  # relays that ignore commands (fault scenarios)
        self.server: ModbusTcpServer | None = None
        self.port = sub.port
        self.reads = 0
        self.on_change: Callable[[], None] | None = None  # MQTT gateways publish on change

    # --- state -----------------------------------------------------------------------------
    def feed_powered(self, feed_point_id: str) -> bool:
        """A feed point reads powered unless every relay it watches is open."""
        watching = [c for c, r in self.relays.items() if r.feed == feed_point_id]
        return not watching or not all(self.coils[c] for c in watching)

    def value_of(self, ch: SimChannel, now: float) -> float:
        if ch.point.kind == "feed" and ch.override is None:
            return 1.0 if self.feed_powered(ch.point.id) else 0.0
        if ch.override is not None:
            return ch.override.value_at(now)
        return ch.natural(now)

    def registers(self, now: float) -> list[int]:
        regs = [0] * (self.n_channels * REGS_PER_CHANNEL)
        for c, ch in self.channels.items():
            ov = ch.override
            value, status = encode_channel(
                self.value_of(ch, now), ch.scale, fault=bool(ov and (ov.fault or (
                    ov.fault_after_s is not None and now >= ov.started + ov.fault_after_s))),
                calibrating=bool(ov and ov.calibrating))
            regs[c * REGS_PER_CHANNEL] = value
            regs[c * REGS_PER_CHANNEL + 1] = status
        return regs

    def set_override(self, point_id: str, target: float, *, ramp_s: float = 0.0,
                     fault: bool = False, calibrating: bool = False) -> None:
        ch = self._channel(point_id)
        now = time.time()
        ch.override = Override(target, self.value_of(ch, now), now, ramp_s, fault, calibrating)
        self._changed()

    def set_curve(self, point_id: str, curve: Callable[[float], float], *,
                  fault_after_s: float | None = None, started: float | None = None) -> None:
        """Drive a channel by a function of time (a drill scenario's signal)."""
        ch = self._channel(point_id)
        now = time.time() if started is None else started
        ch.override = Override(0.0, self.value_of(ch, now), now, curve=curve,
                               fault_after_s=fault_after_s)
        self._changed()

    def baseline_of(self, point_id: str) -> float:
        return self._channel(point_id).baseline

    def clear_override(self, point_id: str) -> None:
        self._channel(point_id).override = None
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def set_coils(self, coils: list[int], cut: bool) -> list[int]:
        """Drive relays (True = open, power cut); stuck relays ignore it. Returns coils moved."""
        now, moved = time.time(), []
        for coil in coils:
            if coil in self.stuck or coil not in self.coils:
                continue
            if self.coils[coil] != cut:
                self.coils[coil] = cut
                self.coil_changed_at[coil] = now
                moved.append(coil)
                log.info("substation %s relay coil %d -> %s", self.sub.id, coil,
                         "open (cut)" if cut else "closed")
        return moved

    def _channel(self, point_id: str) -> SimChannel:
        for ch in self.channels.values():
            if ch.point.id == point_id:
                return ch
        raise KeyError(point_id)

    # --- Modbus server -----------------------------------------------------------------------
    async def _action(self, func_code, start_address, address, count, registers, set_values):
        if func_code == 4:  # read input registers: refresh from the model
            self.reads += 1
            fresh = self.registers(time.time())
            registers[: len(fresh)] = fresh
        elif func_code in (5, 15) and set_values is not None:  # write coil(s)
            for value in (True, False):
                self.set_coils([address + i for i, bit in enumerate(set_values)
                                if bool(bit) == value], value)
        return None

    def _device(self) -> SimDevice:
        n_coils = max(16, (max(self.relays, default=0) // 16 + 1) * 16)
        coils = [SimData(0, count=n_coils, values=False, datatype=DataType.BITS)]
        discrete = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
        holding = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        inputs = [SimData(0, count=self.n_channels * REGS_PER_CHANNEL, values=0,
                          datatype=DataType.REGISTERS)]
        return SimDevice(self.sub.device_id, (coils, discrete, holding, inputs),
                         action=self._action)

    async def start(self, host: str = "127.0.0.1") -> int:
        """Start serving; with port 0 the OS picks a free port. Returns the port."""
        if self.server is not None:
            return self.port
        self.server = ModbusTcpServer(self._device(), address=(host, self.port))
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        # Keep the same port across stop/start so the collector can reconnect.
        log.info("simulated substation %s listening on %s:%d", self.sub.id, host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None
            await asyncio.sleep(0)

    @property
    def online(self) -> bool:
        return self.server is not None
