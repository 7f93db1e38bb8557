"""Per-relay reference of the interlocks (风电闭锁, 甲烷电闭锁, 故障闭锁): the oracle for
``alarms/lockouts.py``, written one relay at a time with plain Python values and sets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from minewatch.readings import Quality

CUT_BIT, UNDER_BIT, FAULT_BIT, STALE_BIT = 2, 4, 8, 16  # alarms.engine bit layout


@dataclass
class RefZone:
    fans: list[int]
    winds: list[int]
    relays: list[int]


@dataclass
class ReferenceLockouts:
    n_relays: int
    zones: list[RefZone]
    guards: dict[int, list[int]]  # relay → methane slots whose cut range covers it
    latched: list[set[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.latched = [set() for _ in range(self.n_relays)]

    def _ventilated(self, zone: RefZone, value, quality, bits) -> bool:
        running = any(quality[s] == Quality.OK and value[s] >= 0.5 for s in zone.fans)
        air_lost = any(bits[s] & UNDER_BIT for s in zone.winds)
        return running and not air_lost

    def evaluate(self, value, quality, bits, restore) -> dict[str, list]:
        out: dict[str, list] = {"condition": [], "latched": [], "block": [], "auto": [],
                                "edges": []}
        for r in range(self.n_relays):
            fan_stopped = any(r in z.relays and not self._ventilated(z, value, quality, bits)
                              for z in self.zones)
            methane_cut = fault = above = untrusted = False
            for s in self.guards.get(r, []):
                trusted = quality[s] == Quality.OK and math.isfinite(value[s])
                if bits[s] & CUT_BIT:
                    methane_cut = True
                    above = True
                if bits[s] & (FAULT_BIT | STALE_BIT):
                    fault = True
                if not trusted:
                    untrusted = True
                elif not value[s] < restore[s]:
                    above = True
            condition = set()
            if fan_stopped:
                condition.add("fan")
            if methane_cut:
                condition.add("methane")
            if fault:
                condition.add("fault")
            block = set()
            if fan_stopped:
                block.add("fan")
            if above:
                block.add("methane")
            if untrusted:
                block.add("untrusted")
            old = set(self.latched[r])
            new = old | condition
            if not fault and not above and not untrusted:
                new.discard("fault")  # 故障闭锁 unlocks by itself once normal
            self.latched[r] = new
            out["condition"].append(condition)
            out["latched"].append(set(new))
            out["block"].append(block)
            out["auto"].append(bool(old) and not new)
            if old != new:
                out["edges"].append((r, set(old), set(new)))
        self._last_block = out["block"]
        return out

    def release(self, relays: list[int]) -> list[bool]:
        done = []
        for r in relays:
            ok = not self._last_block[r]
            if ok:
                self.latched[r] = set()
            done.append(ok)
        return done
