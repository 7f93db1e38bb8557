"""The simulated mine: every substation of a mine configuration, and scenario injection.

Scenarios act on the substations exactly as the real world would (a gas value on the wire, a
channel fault bit, a substation that stops answering), so everything downstream runs the real
pipeline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from minewatch.mine import Mine, Thresholds, resolve_limits
from simulators.mqtt_gateway import MqttGateway
from simulators.substation import SimulatedSubstation

SCENARIOS: dict[str, str] = {
    "gas-overlimit": "甲烷升至断电浓度以上 (methane above the power-cut limit)",
    "gas-alarm": "甲烷升至报警浓度与断电浓度之间 (methane between alarm and cut limits)",
    "fan-stop": "局部通风机停止 (local fan stops)",
    "sensor-fault": "传感器故障 (channel fault bit set)",
    "calibrate": "标校：通入标准气样 (calibration gas applied)",
    "sensor-cover": "传感器被遮挡，读数降至 0 (sensor covered: reads fresh air)",
    "substation-offline": "分站通讯中断 (substation stops answering)",
    "substation-online": "分站恢复通讯 (substation answers again)",
    "relay-stuck": "断电器拒动 (relay ignores commands)",
    "clear": "恢复正常 (remove any scenario on the point)",
}


class ScenarioError(ValueError):
    """The scenario or its point is unknown or does not apply."""


@dataclass
class Injection:
    scenario: str
    point_id: str
    at: float
    value: float | None


class SimulatedMine:
    def __init__(self, mine: Mine, limits: Thresholds) -> None:
        self.mine = mine
        self.limits = limits
        self.substations = {s.id: SimulatedSubstation(mine, s, limits) for s in mine.substations}
        self.injections: list[Injection] = []
        self.gateways: dict[str, MqttGateway] = {}

    async def start(self, broker: tuple[str, int, dict[str, str]] | None = None
                    ) -> dict[str, int]:
        """Start Modbus servers (returns their ports) and, given a broker (host, port,
        username → password), the MQTT gateways."""
        from minewatch.broker import gateway_user

        ports = {}
        for sid, sub in self.substations.items():
            if sub.sub.protocol == "modbus":
                ports[sid] = await sub.start()
            elif broker is not None:
                host, port, creds = broker
                user = gateway_user(self.mine.mine.id, sid)
                gw = MqttGateway(sub, self.mine.mine.id, host, port, user, creds[user])
                self.gateways[sid] = gw
                gw.start()
        return ports

    async def stop(self) -> None:
        for gw in self.gateways.values():
            await gw.stop()
        for sub in self.substations.values():
            await sub.stop()

    async def set_online(self, substation_id: str, online: bool) -> None:
        sub = self.substations[substation_id]
        gw = self.gateways.get(substation_id)
        if gw is not None:
            gw.enabled = online
        elif online:
            await sub.start()
        else:
            await sub.stop()

    def online(self, substation_id: str) -> bool:
        gw = self.gateways.get(substation_id)
        if gw is not None:
            return gw.enabled and gw.connected
        return self.substations[substation_id].online

    def relay_states(self) -> list[dict[str, Any]]:
        out = []
        for sub in self.substations.values():
            for coil, relay in sub.relays.items():
                out.append({"relay": relay.id, "substation": sub.sub.id, "coil": coil,
                            "open": sub.coils[coil], "changed_at": sub.coil_changed_at.get(coil),
                            "feed": relay.feed,
                            "feed_powered": sub.feed_powered(relay.feed) if relay.feed else None,
                            "stuck": coil in sub.stuck})
        return out

    async def inject(self, scenario: str, point_id: str, *, value: float | None = None,
                     ramp_s: float = 0.0) -> Injection:
        if scenario not in SCENARIOS:
            raise ScenarioError(f"unknown scenario '{scenario}'; known: {', '.join(SCENARIOS)}")
        point = self.mine.point_by_id.get(point_id)
        if point is None:
            raise ScenarioError(f"unknown point '{point_id}'")
        sub = self.substations[point.substation]
        lim = resolve_limits(point, self.limits)
        target = value
        if scenario in ("gas-overlimit", "gas-alarm"):
            if point.kind != "ch4":
                raise ScenarioError(f"{scenario} needs a methane point, {point_id} is {point.kind}")
            if target is None:
                target = _gas_target(scenario, lim.alarm_hi, lim.cut)
            sub.set_override(point_id, target, ramp_s=ramp_s)
        elif scenario == "fan-stop":
            if point.kind != "fan":
                raise ScenarioError(f"fan-stop needs a fan point, {point_id} is {point.kind}")
            target = 0.0
            sub.set_override(point_id, target)
        elif scenario == "sensor-fault":
            sub.set_override(point_id, 0.0, fault=True)
        elif scenario == "sensor-cover":
            target = 0.0 if target is None else target
            sub.set_override(point_id, target)
        elif scenario == "calibrate":
            target = 1.0 if target is None else target
            sub.set_override(point_id, target, calibrating=True)
        elif scenario == "substation-offline":
            await self.set_online(point.substation, False)
        elif scenario == "substation-online":
            await self.set_online(point.substation, True)
        elif scenario == "relay-stuck":
            relays = [c for c, r in sub.relays.items() if r.area == point.area] or list(sub.relays)
            sub.stuck.update(relays)
        elif scenario == "clear":
            sub.clear_override(point_id)
            sub.stuck.clear()
        injection = Injection(scenario, point_id, time.time(), target)
        self.injections.append(injection)
        del self.injections[:-1000]
        return injection


def _gas_target(scenario: str, alarm: float, cut: float) -> float:
    """A value that reaches the scenario's level: above cut, or between alarm and cut."""
    has_cut = not math.isnan(cut)
    if scenario == "gas-overlimit":
        return (cut if has_cut else alarm) + 0.3
    if has_cut and cut > alarm:
        return round((alarm + cut) / 2, 2)
    return alarm + 0.05
