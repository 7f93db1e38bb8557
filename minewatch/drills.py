"""Running a double-blind drill inside the service: arm a committed plan, start it at its
time through the simulated substations, flag everything it causes as ``drill``, abort it the
moment a real over-limit happens anywhere in the mine, and score it.

The drill's readings, alarms and incident go through the real engine, workflow and screens;
only their ``drill`` flag (in the store, never on the dispatcher's screen) tells them apart,
so regulators' statistics leave them out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from simulators.drill import Plan, commitment, crossing_s, drives, load_library, score

if TYPE_CHECKING:
    from minewatch.service import Service

log = logging.getLogger("minewatch.drills")
REAL_ALARMS = ("over_limit", "power_cut_limit")


class DrillError(ValueError):
    pass


@dataclass
class Drill:
    id: str
    plan: Plan
    commitment: str
    status: Literal["armed", "running", "aborted", "finished"] = "armed"
    armed_at: float = 0.0
    armed_by: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    ended_by: str | None = None
    abort_reason: str = ""
    revealed: bool = False
    points: list[str] = field(default_factory=list)
    incident: str | None = None

    def public(self) -> dict[str, Any]:
        """What anyone may see: the plan only once revealed."""
        d = asdict(self)
        d["plan"] = self.plan.model_dump(mode="json") if self.revealed else None
        if not self.revealed:
            d["points"] = []
        return d


class DrillRunner:
    def __init__(self, service: Service) -> None:
        self.s = service
        self.library = load_library()
        self.drills: dict[str, Drill] = {}
        self._task: asyncio.Task | None = None
        self.slots = np.zeros(len(service.points), dtype=bool)  # readings flagged drill

    @property
    def active(self) -> Drill | None:
        return next((d for d in self.drills.values() if d.status in ("armed", "running")), None)

    def arm(self, plan: Plan, expected: str, by: str) -> Drill:
        if commitment(plan) != expected.strip().lower():
            raise DrillError("计划与承诺值不符 / the plan does not match the commitment")
        if plan.mine != self.s.mine.mine.id:
            raise DrillError(f"计划的矿井 {plan.mine} 不是本矿 {self.s.mine.mine.id}")
        if plan.scenario not in self.library:
            raise DrillError(f"未知演练场景 {plan.scenario}")
        if plan.point not in self.s.slot_of:
            raise DrillError(f"未知测点 {plan.point}")
        if self.s.sim is None:
            raise DrillError("演练需要模拟分站 (--simulate)")
        if self.active is not None:
            raise DrillError("已有演练在进行 / a drill is already armed or running")
        d = Drill(f"D{int(time.time() * 1000):x}", plan, expected.strip().lower(),
                  armed_at=time.time(), armed_by=by)
        self.drills[d.id] = d
        self.s._journal("drill_armed", d.id, {"commitment": d.commitment, "by": by})
        self._task = asyncio.get_running_loop().create_task(self._start_at(d))
        return d

    async def _start_at(self, d: Drill) -> None:
        await asyncio.sleep(max(0.0, d.plan.start_at - time.time()))
        if d.status == "armed":
            await self.start(d)

    async def start(self, d: Drill) -> None:
        sc = self.library[d.plan.scenario]
        sim, mine = self.s.sim, self.s.mine
        now = time.time()
        point = mine.point_by_id[d.plan.point]
        sub = sim.substations[point.substation]
        plan_drives = drives(mine, sc, d.plan.point,
                             lambda pid: sim.substations[mine.point_by_id[pid].substation]
                             .baseline_of(pid))
        d.points = [x.point for x in plan_drives]
        if sc.kind == "comm_loss":
            d.points = [p.id for p in mine.points if p.substation == point.substation]
        subjects = set(d.points)
        areas = {mine.point_by_id[p].area for p in d.points}
        areas |= {a for p in d.points for a in (mine.point_by_id[p].cut_areas or [])}
        subjects |= {r.id for r in mine.relays if r.area in areas}
        self.s.book.drill_subjects |= subjects
        for p in d.points:
            self.slots[self.s.slot_of[p]] = True
        d.status, d.started_at = "running", now
        self.s._journal("drill_started", d.id, {"points": d.points})
        for x in plan_drives:
            sim.substations[mine.point_by_id[x.point].substation].set_curve(
                x.point, x.curve, fault_after_s=x.fault_after_s, started=now)
        if sc.kind == "comm_loss":
            await sim.set_online(sub.sub.id, False)

    def on_alarm(self, point_id: str, kind: str, drill: bool) -> None:
        """A real (non-drill) over-limit anywhere in the mine ends the drill at once."""
        d = self.active
        if d is None or d.status != "running" or drill or kind not in REAL_ALARMS:
            return
        point = self.s.mine.point_by_id.get(point_id)
        if point is None or point.kind != "ch4":
            return
        async def abort() -> None:
            with contextlib.suppress(DrillError):  # two real alarms in one cycle: one ends it
                await self.end(d, "aborted", "system", f"真实报警 {point_id} {kind}，演练自动中止")

        task = asyncio.get_running_loop().create_task(abort())
        self.s._background.add(task)
        task.add_done_callback(self.s._background.discard)

    def on_incident(self, incident_id: str, drill: bool) -> None:
        d = self.active
        if d is not None and drill and d.incident is None:
            d.incident = incident_id

    async def end(self, d: Drill, status: Literal["aborted", "finished"], by: str,
                  reason: str = "") -> Drill:
        if d.status not in ("armed", "running"):
            raise DrillError(f"演练已{'中止' if d.status == 'aborted' else '结束'}")
        was_running = d.status == "running"
        d.status, d.ended_at, d.ended_by, d.abort_reason = status, time.time(), by, reason
        if was_running:
            sim, mine = self.s.sim, self.s.mine
            for p in d.points:
                sim.substations[mine.point_by_id[p].substation].clear_override(p)
            sc = self.library[d.plan.scenario]
            if sc.kind == "comm_loss":
                await sim.set_online(mine.point_by_id[d.plan.point].substation, True)
        self.slots[:] = False
        self.s.book.drill_subjects.clear()
        self.s._journal(f"drill_{status}", d.id, {"by": by, "reason": reason})
        if status == "aborted":
            log.warning("drill %s aborted: %s", d.id, reason)
        await self.publish(d)
        return d

    async def publish(self, d: Drill) -> None:
        """Tell the city command center (its drill list): status and score, plan if revealed."""
        if self.s.mqtt is None:
            return
        rep = await self.report(d)
        self.s.mqtt.publish_event(self.s._event(
            "drill", drill=d.public(), passed=rep["passed"],
            scenario_name=rep.get("scenario", {}).get("name", ""),
            marks=[{k: m[k] for k in ("step", "title", "seconds", "limit_s", "passed")}
                   for m in rep["marks"]]))

    def reveal(self, d: Drill, by: str) -> Drill:
        if d.status in ("armed", "running"):
            raise DrillError("演练结束后才能公开计划 / reveal after the drill")
        d.revealed = True
        self.s._journal("drill_revealed", d.id, {"plan": d.plan.model_dump(mode="json"),
                                                 "commitment": d.commitment, "by": by})
        task = asyncio.get_running_loop().create_task(self.publish(d))
        self.s._background.add(task)
        task.add_done_callback(self.s._background.discard)
        return d

    async def report(self, d: Drill) -> dict[str, Any]:
        from minewatch.store import AlarmQuery

        s = self.s
        sc = self.library[d.plan.scenario]
        if d.started_at is None:
            return {"drill": d.public(), "marks": [], "passed": False}
        end = d.ended_at or time.time()
        recs = await s.store.alarms(AlarmQuery(t_from=d.started_at - 1, t_to=end + 1,
                                               drill=True, limit=10_000))
        alarms = [r.to_dict() for r in recs]
        for r in s.book.open.values():
            if r.drill and r.raised_at >= d.started_at and r.id not in {a["id"] for a in alarms}:
                alarms.append(r.to_dict())
        inc = s.incidents.incidents.get(d.incident or "")
        slot = s.slot_of[d.plan.point]
        lim = s.resolved[slot]
        level = lim.cut if math.isfinite(lim.cut) else lim.alarm_hi
        base = s.sim.substations[s.mine.point_by_id[d.plan.point].substation].baseline_of(
            d.plan.point)
        expected = crossing_s(sc, base, level) if math.isfinite(level) else None
        poll = s.period[s.mine.point_by_id[d.plan.point].substation]
        marks = score(d.started_at, expected or 0.0, poll, s.limits.timing.cut_deadline_s,
                      inc.to_dict() if inc else None, alarms, sc.expect)
        rows = [{**asdict(m), "passed": m.passed} for m in marks]
        return {"drill": d.public(), "scenario": sc.model_dump(), "marks": rows,
                "passed": bool(rows) and all(r["passed"] for r in rows),
                "expected_crossing_s": expected}
