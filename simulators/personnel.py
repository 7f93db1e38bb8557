"""Simulated personnel positioning (人员定位): people per area, walking out after an order.

A real feed would be the positioning system's per-area head count; the workflow only needs
``count(area)`` and, for the simulation, ``evacuate(area, at)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping


class SimulatedPersonnel:
    def __init__(self, people: Mapping[str, int], exit_per_s: float) -> None:
        self.start = dict(people)
        self.exit_per_s = exit_per_s
        self.ordered_at: dict[str, float] = {}

    def evacuate(self, area: str, at: float | None = None) -> None:
        self.ordered_at.setdefault(area, time.time() if at is None else at)

    def count(self, area: str, now: float | None = None) -> int:
        n = self.start.get(area, 0)
        t0 = self.ordered_at.get(area)
        if t0 is None:
            return n
        now = time.time() if now is None else now
        return max(0, n - math.floor((now - t0) * self.exit_per_s))

    def counts(self, now: float | None = None) -> dict[str, int]:
        return {a: self.count(a, now) for a in self.start}
