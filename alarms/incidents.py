"""Incident workflows (应急处置): the fixed sequence a 瓦斯超限 demands, run and timed.

An incident opens on a root alarm (the workflow definition's trigger, e.g. a methane power-cut
edge) and groups later alarms in its areas. Its steps, in order of the regulation and the
mine's emergency plan (DOMAIN.md "Emergency sequence"):

  power_cut          the engine's cut of the point's range went out (issued by the engine)
  power_verified     every relay's feed (馈电) confirms no power within the control time; an
                     unconfirmed cut is re-issued ``cut_retries`` times, then the step fails
                     (断电失败, critical) and a wider cut is offered to the dispatcher
  evacuation_order   撤人 order for the affected areas and those downwind, sent at once
  evacuate:<area>    each area confirmed clear by the dispatcher (people still inside shown)
  report:<level>     the report chain (带班领导 → 矿调度 → 矿长/总工 → 县 → 市), each notified in
                     turn with a deadline from the opening; acknowledged by a person; an overdue
                     level is marked and the next level is notified at once (escalation)
  discharge:<road>   排放瓦斯 task per roadway of the cut range, assigned to a rescue team
  restore            power back on every cut relay (manual, refused while unsafe — the service)
  close              by a mine leader, after the restore; the report is then final

Everything here is a pure state machine over explicit times (no clock reads, no I/O): methods
take ``now`` and return ``Effect`` rows for the service to carry out (notify, re-issue a cut,
journal). Tests drive it with an injected clock; the service with ``time.time()``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from minewatch.emergency import Emergency, WorkflowDef

StepState = Literal["pending", "active", "done", "overdue", "failed", "skipped"]

STEP_TITLES = {"power_cut": "自动断电", "power_verified": "断电确认（馈电）",
               "evacuation_order": "下达撤人指令", "restore": "复电", "close": "关闭事件"}
TASK_STATES = ("assigned", "in_progress", "done")


class IncidentError(ValueError):
    """An operator action that does not apply (unknown incident or step, wrong state)."""


class IncidentNotFound(IncidentError):
    pass


class IncidentConflict(IncidentError):
    pass


@dataclass
class Step:
    name: str
    title: str
    state: StepState = "pending"
    deadline: float | None = None
    started_at: float | None = None
    done_at: float | None = None
    by: str | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Incident:
    id: str
    kind: str
    title: str
    opened_at: float
    point_id: str
    point_name: str
    root_alarm_id: str
    areas: list[str]  # power-cut range
    evac_areas: list[str]  # cut range + downwind on the same return air
    relays: list[str]
    roadways: list[str]
    state: Literal["open", "closed"] = "open"
    drill: bool = False
    closed_at: float | None = None
    closed_by: str | None = None
    updated_at: float = 0.0
    alarms: list[str] = field(default_factory=list)
    peak: dict[str, Any] = field(default_factory=dict)  # point_id, value, at
    steps: list[Step] = field(default_factory=list)
    wider_relays: list[str] = field(default_factory=list)  # offered after 断电失败
    retries: dict[str, int] = field(default_factory=dict)  # relay → re-issued cuts

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise IncidentNotFound(f"事件 {self.id} 没有步骤 {name} / no step {name!r}")

    def steps_like(self, prefix: str) -> list[Step]:
        return [s for s in self.steps if s.name.startswith(prefix)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Incident:
        d = dict(d)
        d["steps"] = [Step(**s) for s in d.get("steps", [])]
        return cls(**d)


@dataclass(frozen=True)
class Effect:
    """Something the service must do: ``notify`` (target, message), ``cut`` (relay ids to
    re-issue), ``journal`` (event, data)."""

    kind: Literal["notify", "cut", "journal"]
    incident: str
    target: str = ""
    message: str = ""
    relays: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlarmInfo:
    id: str
    point_id: str
    kind: str
    value: float
    at: float
    drill: bool = False


@dataclass(frozen=True)
class Layout:
    """What the workflow needs of the mine: per point its sensor kind, name, area and cut
    range; per area its downwind areas, relays and roadways."""

    point_kind: Mapping[str, str]
    point_name: Mapping[str, str]
    point_area: Mapping[str, str]
    cut_areas: Mapping[str, list[str]]
    downwind: Mapping[str, list[str]]
    relays_of_area: Mapping[str, list[str]]
    roadways_of_area: Mapping[str, list[str]]
    area_name: Mapping[str, str]

    @classmethod
    def from_mine(cls, mine: Any) -> Layout:
        relays: dict[str, list[str]] = {}
        for r in mine.relays:
            relays.setdefault(r.area, []).append(r.id)
        roads: dict[str, list[str]] = {}
        for w in mine.roadways:
            if w.area:
                roads.setdefault(w.area, []).append(w.id)
        return cls({p.id: p.kind for p in mine.points}, {p.id: p.name for p in mine.points},
                   {p.id: p.area for p in mine.points},
                   {p.id: list(p.cut_areas or [p.area]) for p in mine.points},
                   {a.id: list(a.downwind) for a in mine.areas}, relays, roads,
                   {a.id: a.name for a in mine.areas})


class IncidentBook:
    """Open incidents and the recently closed ones, with the rules of the workflow."""

    def __init__(self, config: Emergency, layout: Layout,
                 id_prefix: str = "I", people: Callable[[str], int | None] | None = None) -> None:
        self.config, self.layout = config, layout
        self.incidents: dict[str, Incident] = {}
        self._seq = itertools.count(1)
        self._prefix = id_prefix
        self.people = people or (lambda _area: None)

    # --- opening and grouping ----------------------------------------------------------------
    def restore(self, incidents: Iterable[Incident]) -> None:
        """After a restart: open incidents come back from the store."""
        for inc in incidents:
            self.incidents[inc.id] = inc

    def open_incidents(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.state == "open"]

    def _definition(self, alarm: AlarmInfo) -> tuple[str, WorkflowDef] | None:
        kind = self.layout.point_kind.get(alarm.point_id)
        for name, wf in self.config.workflows.items():
            if kind == wf.trigger_sensor and alarm.kind in wf.trigger_alarms:
                return name, wf
        return None

    def on_alarm(self, alarm: AlarmInfo, now: float) -> tuple[Incident | None, list[Effect]]:
        """A raised alarm: group it into an open incident covering its area, or open one when
        it is a trigger. Returns the changed incident (or None) and the effects."""
        area = self.layout.point_area.get(alarm.point_id)
        for inc in self.open_incidents():
            if area in inc.evac_areas or alarm.point_id == inc.point_id:
                if alarm.id not in inc.alarms:
                    inc.alarms.append(alarm.id)
                self._peak(inc, alarm)
                inc.updated_at = now
                return inc, [self._journal(inc, "incident_alarm_grouped",
                                           {"alarm_id": alarm.id, "point_id": alarm.point_id})]
        found = self._definition(alarm)
        if found is None or area is None:
            return None, []
        return self._open(found[0], found[1], alarm, now)

    def _open(self, kind: str, wf: WorkflowDef, alarm: AlarmInfo,
              now: float) -> tuple[Incident, list[Effect]]:
        lay = self.layout
        areas = list(dict.fromkeys(lay.cut_areas.get(alarm.point_id, [])))
        evac = list(areas)
        if wf.evacuate_downwind:
            for a in areas:
                evac += [d for d in lay.downwind.get(a, []) if d not in evac]
        relays = [r for a in areas for r in lay.relays_of_area.get(a, [])]
        roads = list(dict.fromkeys(r for a in areas for r in lay.roadways_of_area.get(a, [])))
        inc = Incident(id=f"{self._prefix}-{next(self._seq)}", kind=kind,
                       title=f"{wf.name}: {lay.point_name.get(alarm.point_id, alarm.point_id)}",
                       opened_at=now, point_id=alarm.point_id,
                       point_name=lay.point_name.get(alarm.point_id, alarm.point_id),
                       root_alarm_id=alarm.id, areas=areas, evac_areas=evac, relays=relays,
                       roadways=roads, drill=alarm.drill, updated_at=now, alarms=[alarm.id],
                       peak={"point_id": alarm.point_id, "value": alarm.value, "at": alarm.at})
        effects = [self._journal(inc, "incident_opened", {
            "kind": kind, "point_id": alarm.point_id, "alarm_id": alarm.id,
            "areas": areas, "evac_areas": evac, "relays": relays})]
        cut_state: StepState = "active" if relays else "skipped"
        inc.steps.append(Step("power_cut", STEP_TITLES["power_cut"], cut_state, now, now))
        inc.steps.append(Step("power_verified", STEP_TITLES["power_verified"], cut_state,
                              now + wf.cut_verify_s, now,
                              extra={"relays": {r: "pending" for r in relays}}))
        # 撤人: the order goes out at once to every affected area's endpoints.
        order = Step("evacuation_order", STEP_TITLES["evacuation_order"], "done", now, now,
                     now, "system", extra={"areas": evac})
        inc.steps.append(order)
        for a in evac:
            name = lay.area_name.get(a, a)
            msg = (f"【撤人指令】{inc.title}，{name} 全体人员立即撤至新鲜风流处，"
                   "沿避灾路线撤离，到达后向调度室报告")
            effects.append(Effect("notify", inc.id, f"area:{a}", msg))
            inc.steps.append(Step(f"evacuate:{a}", f"撤人确认: {name}", "active",
                                  now + wf.evacuation_confirm_s, now,
                                  extra={"area": a, "people": self.people(a)}))
        for k, lvl in enumerate(wf.report):
            step = Step(f"report:{lvl.level}", f"汇报: {lvl.title}", "pending",
                        now + lvl.deadline_s, extra={"level": lvl.level, "to": ""})
            inc.steps.append(step)
            if k == 0:
                effects += self._notify_level(inc, step, now)
        if wf.discharge:
            for road in roads:
                inc.steps.append(Step(f"discharge:{road}", f"排放瓦斯: {road}", "pending",
                                      extra={"roadway": road, "team": None,
                                             "task": "assigned"}))
        inc.steps.append(Step("restore", STEP_TITLES["restore"], "pending" if relays
                              else "skipped"))
        inc.steps.append(Step("close", STEP_TITLES["close"], "pending"))
        self.incidents[inc.id] = inc
        return inc, effects

    def _peak(self, inc: Incident, alarm: AlarmInfo) -> None:
        if self.layout.point_kind.get(alarm.point_id) == "ch4" and alarm.value == alarm.value \
                and alarm.value > float(inc.peak.get("value") or 0.0):
            inc.peak = {"point_id": alarm.point_id, "value": alarm.value, "at": alarm.at}

    def observe_peak(self, point_id: str, value: float, at: float) -> Incident | None:
        """A methane reading in an open incident's areas: keep its peak."""
        area = self.layout.point_area.get(point_id)
        for inc in self.open_incidents():
            if area in inc.evac_areas and value > float(inc.peak.get("value") or 0.0):
                inc.peak = {"point_id": point_id, "value": value, "at": at}
                return inc
        return None

    # --- the report chain ------------------------------------------------------------------------
    def _notify_level(self, inc: Incident, step: Step, now: float) -> list[Effect]:
        level = step.extra["level"]
        who = self.config.on_duty(level, inc.opened_at)
        step.state, step.started_at = "active", now
        step.extra["to"] = who
        msg = (f"【事故汇报】{inc.title}，{inc.peak.get('value', 0):.2f}% ，"
               f"已自动断电，撤人指令已下达；请 {who or step.title} 确认收到")
        return [Effect("notify", inc.id, f"level:{level}", msg, data={"to": who})]

    def _advance_chain(self, inc: Incident, now: float) -> list[Effect]:
        """Notify the next level once the previous one acknowledged or went overdue."""
        effects: list[Effect] = []
        chain = inc.steps_like("report:")
        for prev, nxt in itertools.pairwise(chain):
            if nxt.state == "pending" and prev.state in ("done", "overdue"):
                if prev.state == "overdue":
                    prev.extra["escalated_to"] = nxt.extra["level"]
                    effects.append(self._journal(inc, "incident_escalated", {
                        "from": prev.name, "to": nxt.name}))
                effects += self._notify_level(inc, nxt, now)
        return effects

    # --- time ------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[tuple[Incident, list[Effect]]]:
        """Deadlines: mark overdue steps, escalate the report chain."""
        out = []
        for inc in self.open_incidents():
            effects: list[Effect] = []
            for step in inc.steps:
                if step.state == "active" and step.deadline is not None and now > step.deadline:
                    if step.name in ("power_cut", "power_verified"):
                        continue  # decided by the feed checks (on_command), not by the clock
                    step.state = "overdue"
                    effects.append(self._journal(inc, "incident_step_overdue", {
                        "step": step.name, "deadline": step.deadline}))
            effects += self._advance_chain(inc, now)
            if effects:
                inc.updated_at = now
                out.append((inc, effects))
        return out

    # --- commands from the power-cut workflow -------------------------------------------------
    def on_command(self, cmd: Any, now: float) -> list[tuple[Incident, list[Effect]]]:
        """A cut/restore command changed (sent, verified, unverified, failed)."""
        out = []
        for inc in self.open_incidents():
            if cmd.target not in inc.relays and cmd.target not in inc.wider_relays:
                continue
            effects: list[Effect] = []
            if cmd.action == "cut":
                effects += self._on_cut(inc, cmd, now)
            elif cmd.action == "restore" and cmd.result in ("sent", "verified"):
                effects += self._on_restore(inc, cmd, now)
            if effects:
                inc.updated_at = now
                out.append((inc, effects))
        return out

    def _on_cut(self, inc: Incident, cmd: Any, now: float) -> list[Effect]:
        wf = self.config.workflows[inc.kind]
        cut, verified = inc.step("power_cut"), inc.step("power_verified")
        status: dict[str, str] = verified.extra["relays"]
        if cmd.target not in status:
            return []
        effects: list[Effect] = []
        if cmd.result in ("sent", "verified") and cut.state != "done":
            cut.state, cut.done_at, cut.by = "done", cmd.sent_at or now, cmd.issued_by
            effects.append(self._journal(inc, "incident_step_done", {"step": "power_cut"}))
        if cmd.result == "verified":
            status[cmd.target] = "verified"
        elif cmd.result in ("unverified", "failed"):
            tries = inc.retries.get(cmd.target, 0)
            if tries < wf.cut_retries:
                inc.retries[cmd.target] = tries + 1
                status[cmd.target] = "retrying"
                verified.detail = f"{cmd.target} 馈电未确认断电，第 {tries + 1} 次重新下发断电"
                effects.append(Effect("cut", inc.id, relays=(cmd.target,),
                                      message=f"断电未确认，重试 {tries + 1}"))
                effects.append(self._journal(inc, "incident_cut_retry", {
                    "relay": cmd.target, "attempt": tries + 1}))
            else:
                status[cmd.target] = "failed"
        if verified.state in ("active", "overdue"):
            if all(v == "verified" for v in status.values()):
                verified.state, verified.done_at = "done", cmd.verified_at or now
                verified.detail = "全部断电器馈电确认无电"
                effects.append(self._journal(inc, "incident_step_done",
                                             {"step": "power_verified"}))
            elif any(v == "failed" for v in status.values()):
                verified.state = "failed"
                failed = [r for r, v in status.items() if v == "failed"]
                inc.wider_relays = self._wider(inc)
                verified.detail = (f"断电失败: {', '.join(failed)} 重试后仍未确认断电；"
                                   "可扩大断电范围（上级断电器）: "
                                   + (", ".join(inc.wider_relays) or "无"))
                effects.append(self._journal(inc, "incident_cut_failed", {
                    "relays": failed, "wider": inc.wider_relays}))
                effects.append(Effect("notify", inc.id, "level:dispatch",
                                      f"【断电失败】{inc.title}: {verified.detail}"))
        return effects

    def _wider(self, inc: Incident) -> list[str]:
        """The wider range offered after a failed cut: relays of the areas upwind of the cut
        range (whose return air passes it) and downwind of it, not already in the range."""
        lay = self.layout
        upwind = [a for a, down in lay.downwind.items() if any(x in down for x in inc.areas)]
        areas = list(dict.fromkeys(upwind + inc.evac_areas))
        return [r for a in areas for r in lay.relays_of_area.get(a, []) if r not in inc.relays]

    def wider_cut(self, incident_id: str, user: str, now: float) -> tuple[Incident, list[Effect]]:
        inc = self._open_incident(incident_id)
        if not inc.wider_relays:
            raise IncidentConflict("没有可扩大的断电范围 / no wider cut on offer")
        inc.updated_at = now
        relays = tuple(inc.wider_relays)
        return inc, [Effect("cut", inc.id, relays=relays, message=f"扩大断电范围（{user}）"),
                     self._journal(inc, "incident_wider_cut", {"relays": list(relays),
                                                               "by": user})]

    def _on_restore(self, inc: Incident, cmd: Any, now: float) -> list[Effect]:
        restored = inc.step("restore").extra.setdefault("relays", {})
        restored[cmd.target] = cmd.issued_by
        step = inc.step("restore")
        if all(r in restored for r in inc.relays) and step.state != "done":
            step.state, step.done_at, step.by = "done", now, cmd.issued_by
            return [self._journal(inc, "incident_step_done", {"step": "restore",
                                                               "by": cmd.issued_by})]
        return []

    # --- acknowledgements and tasks ------------------------------------------------------------
    def _open_incident(self, incident_id: str) -> Incident:
        inc = self.incidents.get(incident_id)
        if inc is None:
            raise IncidentNotFound(f"未知事件 {incident_id} / unknown incident")
        if inc.state != "open":
            raise IncidentConflict(f"事件 {incident_id} 已关闭 / incident is closed")
        return inc

    def ack(self, incident_id: str, step_name: str, user: str, now: float,
            note: str = "") -> tuple[Incident, list[Effect]]:
        """A person confirms a step: an area clear (evacuate:…) or a report level (report:…)."""
        inc = self._open_incident(incident_id)
        step = inc.step(step_name)
        if not (step_name.startswith("evacuate:") or step_name.startswith("report:")):
            raise IncidentConflict(f"步骤 {step_name} 不能人工确认 / not acknowledged by hand")
        if step.state == "done":
            raise IncidentConflict(f"步骤 {step_name} 已确认 / already acknowledged")
        if step.state == "pending":
            raise IncidentConflict(f"步骤 {step_name} 尚未通知 / not notified yet")
        was = step.state
        step.state, step.done_at, step.by, step.detail = "done", now, user, note
        if step_name.startswith("evacuate:"):
            step.extra["people_at_confirm"] = self.people(step.extra["area"])
        else:
            step.extra["late"] = was == "overdue"
        inc.updated_at = now
        effects = [self._journal(inc, "incident_step_done", {"step": step_name, "by": user,
                                                             "late": was == "overdue"})]
        effects += self._advance_chain(inc, now)
        return inc, effects

    def set_task(self, incident_id: str, roadway: str, status: str, team: str, user: str,
                 now: float) -> tuple[Incident, list[Effect]]:
        """排放瓦斯 task of a roadway: assigned → in_progress → done, with the rescue team."""
        inc = self._open_incident(incident_id)
        if status not in TASK_STATES:
            raise IncidentError(f"任务状态只能是 {', '.join(TASK_STATES)}")
        step = inc.step(f"discharge:{roadway}")
        step.extra.update(task=status, team=team)
        step.by = user
        if status == "done":
            step.state, step.done_at = "done", now
        else:
            step.state, step.started_at = "active", step.started_at or now
        inc.updated_at = now
        return inc, [self._journal(inc, "incident_task", {"roadway": roadway, "status": status,
                                                          "team": team, "by": user})]

    def close(self, incident_id: str, user: str, now: float) -> tuple[Incident, list[Effect]]:
        """By a mine leader; refused while power is still off in the range or an area has not
        been confirmed clear (the report must not end with people unaccounted for)."""
        inc = self._open_incident(incident_id)
        why = []
        if inc.step("restore").state not in ("done", "skipped"):
            why.append("尚未复电")
        open_areas = [s.extra["area"] for s in inc.steps_like("evacuate:") if s.state != "done"]
        if open_areas:
            why.append("撤人未确认: " + ", ".join(self.layout.area_name.get(a, a)
                                               for a in open_areas))
        if why:
            raise IncidentConflict("不能关闭事件: " + "; ".join(why))
        for step in inc.steps:
            if step.state in ("pending", "active") and step.name != "close":
                step.state = "skipped"
        close = inc.step("close")
        close.state, close.done_at, close.by = "done", now, user
        inc.state, inc.closed_at, inc.closed_by, inc.updated_at = "closed", now, user, now
        return inc, [self._journal(inc, "incident_closed", {"by": user})]

    @staticmethod
    def _journal(inc: Incident, event: str, data: Mapping[str, Any]) -> Effect:
        return Effect("journal", inc.id, target=event, data=dict(data))
