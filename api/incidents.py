"""Incident routes (应急处置): list/get, acknowledge steps, rescue-team tasks, wider cut,
restore, close, the printable incident report, notifications and the duty roster.

Thin: HTTP status and validation here, the workflow rules in alarms/incidents.py, the restore
rules in alarms/workflows.py; every change is journaled and pushed by the service.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from alarms.incidents import Incident, IncidentConflict, IncidentError, IncidentNotFound
from alarms.workflows import RestoreRefused
from api.auth import OPERATE, READ, RESTORE, current_user, signed
from api.params import errors, optional_period
from minewatch.auth import User
from minewatch.readings import iso
from minewatch.service import Service
from minewatch.store import CommandQuery, HistoryQuery, IncidentQuery

router = APIRouter(prefix="/api/v1", tags=["incidents"])


def _svc(request: Request) -> Service:
    return request.app.state.service


def _status(exc: IncidentError) -> HTTPException:
    code = 404 if isinstance(exc, IncidentNotFound) else 409 if isinstance(
        exc, IncidentConflict) else 422
    return HTTPException(code, str(exc))


class StepAck(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    note: str = Field("", max_length=500)


class TaskBody(BaseModel):
    status: Literal["assigned", "in_progress", "done"]
    team: str = Field(min_length=1, max_length=64, description="救护队 / rescue team")
    user: str = Field(min_length=1, max_length=64)


class UserBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)


class RestoreBody(BaseModel):
    """Restoring power is a safety command: who signs it and why are required."""

    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500, description="复电理由 / why it is safe")


def _act(s: Service, action, *args) -> dict[str, Any]:
    """Run a workflow action (returns the incident and its effects), carry it out, answer."""
    try:
        inc, effects = action(*args, time.time())
    except IncidentError as exc:
        raise _status(exc) from exc
    s._incident_changed(inc, effects)
    return s.incident_json(inc)


async def _get(s: Service, incident_id: str) -> Incident:
    inc = s.incidents.incidents.get(incident_id)
    if inc is not None:
        return inc
    found = await s.store.incidents(IncidentQuery(ids=(incident_id,), limit=1))
    if not found:
        raise HTTPException(404, f"未知事件 {incident_id} / unknown incident")
    return Incident.from_dict(found[0].data)


@router.get("/incidents", dependencies=READ, summary="事件列表 / incidents")
async def incidents(
        request: Request, state: Literal["open", "closed"] | None = None,
        t_from: Annotated[str | None, Query(alias="from")] = None,
        t_to: Annotated[str | None, Query(alias="to")] = None,
        drill: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    """Newest first: each with `id`, `state`, `opened_at`, `drill`, `steps` (`name`, `state`,
    `deadline`, `done_at`, …), areas, relays, peak and grouped alarms."""
    s = _svc(request)
    lo, hi = optional_period(t_from, t_to)
    stored = await s.store.incidents(IncidentQuery(t_from=lo, t_to=hi, state=state,
                                                   drill=drill, limit=limit))
    merged = {r.id: Incident.from_dict(r.data) for r in stored}
    for inc in s.incidents.incidents.values():  # the live copy is the newest
        if (state is None or inc.state == state) and (drill is None or inc.drill == drill) \
                and (lo is None or inc.opened_at >= lo) and (hi is None or inc.opened_at < hi):
            merged[inc.id] = inc
    out = sorted(merged.values(), key=lambda i: i.opened_at, reverse=True)[:limit]
    return [s.incident_json(i) for i in out]


@router.get("/incidents/{incident_id}", dependencies=READ, summary="事件详情 / one incident")
async def incident(request: Request, incident_id: str) -> dict[str, Any]:
    s = _svc(request)
    return s.incident_json(await _get(s, incident_id))


@router.post("/incidents/{incident_id}/steps/{step}/ack", dependencies=OPERATE,
             responses=errors(409),
             summary="确认步骤 / acknowledge a step")
async def ack_step(request: Request, incident_id: str, step: str, body: StepAck) -> dict:
    """`evacuate:<area>` (area confirmed clear) or `report:<level>` (report received)."""
    s = _svc(request)
    return _act(s, lambda now: s.incidents.ack(incident_id, step, body.user, now, body.note))


@router.post("/incidents/{incident_id}/tasks/{roadway}", dependencies=OPERATE,
             responses=errors(409),
             summary="排放瓦斯任务 / rescue task")
async def task(request: Request, incident_id: str, roadway: str, body: TaskBody) -> dict:
    s = _svc(request)
    return _act(s, s.incidents.set_task, incident_id, roadway, body.status, body.team,
                body.user)


@router.post("/incidents/{incident_id}/wider-cut", dependencies=OPERATE, responses=errors(409),
             summary="扩大断电范围 / wider power cut")
async def wider_cut(request: Request, incident_id: str, body: UserBody) -> dict:
    """Offered after 断电失败: cut the upstream/downstream relays of the range."""
    s = _svc(request)
    return _act(s, s.incidents.wider_cut, incident_id, body.user)


@router.post("/incidents/{incident_id}/restore", dependencies=RESTORE, responses=errors(409),
             summary="申请复电 / restore the range")
async def restore(request: Request, incident_id: str, body: RestoreBody,
                  who: Annotated[User, Depends(current_user)]) -> dict:
    """Refused (409, with the reason) while methane in the range is not below the restore
    limit, a sensor cannot be trusted or an interlock holds; restoring is always by a person."""
    s = _svc(request)
    if incident_id not in s.incidents.incidents:
        raise HTTPException(404, f"未知事件 {incident_id} / unknown incident")
    try:
        cmds = await s.restore_incident(incident_id, signed(who, body.user), body.reason)
    except RestoreRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    return {"commands": [s.command_json(c) for c in cmds],
            "incident": s.incident_json(s.incidents.incidents[incident_id])}


@router.post("/incidents/{incident_id}/close", dependencies=RESTORE, responses=errors(409),
             summary="关闭事件 / close an incident")
async def close(request: Request, incident_id: str, body: UserBody) -> dict:
    s = _svc(request)
    return _act(s, s.incidents.close, incident_id, body.user)


@router.get("/notifications", dependencies=READ, summary="已发通知 / notifications sent")
async def notifications(request: Request,
                        incident: str | None = None) -> list[dict[str, Any]]:
    s = _svc(request)
    return [{**n.to_dict(), "at": iso(n.at)} for n in s.notifier.sent
            if incident is None or n.incident == incident]


@router.get("/duty", dependencies=READ, summary="值班表 / who is on duty")
async def duty(request: Request) -> dict[str, Any]:
    s = _svc(request)
    now = time.time()
    shift = s.emergency.shift_at(now)
    levels = next(iter(s.emergency.workflows.values())).report
    start = None
    if shift is not None:
        today = dt.datetime.fromtimestamp(now)
        begin = today.replace(hour=shift.start.hour, minute=shift.start.minute, second=0,
                              microsecond=0)
        if begin > today:
            begin -= dt.timedelta(days=1)
        start = begin.timestamp()
    return {"shift": shift.shift if shift else None,
            "shift_start": iso(start) if start is not None else None,
            "on_duty": [{"level": lv.level, "title": lv.title,
                         "name": s.emergency.on_duty(lv.level, now)} for lv in levels],
            "roster": [r.model_dump(mode="json") for r in s.emergency.roster]}


# --- the incident report -------------------------------------------------------------------------

def _t(x: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(x)) if x else "—"


def _offset(x: float | None, t0: float) -> str:
    return f"+{x - t0:.1f} s" if x else "—"


def timeline(inc: Incident, commands: list[Any]) -> list[tuple[float, str]]:
    """Detection → cut issued → cut verified → evacuation ordered → each area clear → each
    report acknowledged → restore → close, with their times."""
    rows: list[tuple[float, str]] = [(inc.opened_at, f"检测到超限: {inc.point_name}")]
    for c in sorted(commands, key=lambda c: c.issued_at):
        verb = "断电" if c.action == "cut" else "复电"
        rows.append((c.issued_at, f"{verb}指令下发: {c.target}（{c.issued_by}）"))
        if c.verified_at:
            rows.append((c.verified_at, f"{verb}馈电确认: {c.target}"))
        elif c.result in ("unverified", "failed"):
            rows.append((c.sent_at or c.issued_at, f"{verb}未确认: {c.target} {c.detail}"))
    for st in inc.steps:
        if st.done_at is None or st.name in ("power_cut", "power_verified", "restore"):
            continue
        who = f"（{st.by}）" if st.by else ""
        late = "，超时" if st.extra.get("late") else ""
        rows.append((st.done_at, f"{st.title}{who}{late}"))
    for st in inc.steps:
        if st.state == "overdue" and st.deadline:
            rows.append((st.deadline, f"超时未确认: {st.title}"))
    return sorted(rows, key=lambda r: r[0])


def _chart(series: dict[str, list[tuple[float, float]]], t0: float, t1: float,
           limits: list[float]) -> str:
    """A plain SVG line chart (prints anywhere; no script)."""
    w, h, pad = 760, 240, 36
    vals = [v for pts in series.values() for _, v in pts] + limits
    vmax = max([*vals, 1.0]) * 1.1
    span = max(t1 - t0, 1.0)

    def xy(t: float, v: float) -> str:
        x = pad + (t - t0) / span * (w - 2 * pad)
        return f"{x:.1f},{h - pad - v / vmax * (h - 2 * pad):.1f}"

    colors = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
             f'viewBox="0 0 {w} {h}" font-size="11">',
             f'<rect x="0" y="0" width="{w}" height="{h}" fill="white" stroke="#ccc"/>']
    for lim in sorted(set(limits)):
        y = xy(t0, lim).split(",")[1]
        parts.append(f'<line x1="{pad}" x2="{w - pad}" y1="{y}" y2="{y}" stroke="#999" '
                     f'stroke-dasharray="4 3"/><text x="{w - pad + 2}" y="{y}">{lim:.2f}%</text>')
    for k, (name, pts) in enumerate(series.items()):
        if not pts:
            continue
        c = colors[k % len(colors)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                     + " ".join(xy(t, v) for t, v in pts) + '"/>')
        parts.append(f'<text x="{pad + 4}" y="{14 + 13 * k}" fill="{c}">{html.escape(name)}'
                     '</text>')
    parts.append("</svg>")
    return "".join(parts)


@router.get("/incidents/{incident_id}/report", dependencies=READ, response_class=HTMLResponse,
            summary="事件报告 / printable incident report")
async def report(request: Request, incident_id: str) -> HTMLResponse:
    s = _svc(request)
    inc = await _get(s, incident_id)
    end = inc.closed_at or time.time()
    cmds = [c for c in await s.store.commands(CommandQuery(
        t_from=inc.opened_at - 5, t_to=end + 5, limit=1000))
        if c.target in inc.relays or c.target in inc.wider_relays]
    t0, t1 = inc.opened_at - 120, end
    points = [p for p in s.points if p.kind == "ch4" and p.area in inc.areas]
    rows = await s.store.history(HistoryQuery(tuple(p.id for p in points), t0, t1,
                                              limit=10_000))
    series: dict[str, list[tuple[float, float]]] = {p.name: [] for p in points}
    name_of = {p.id: p.name for p in points}
    for row in rows:
        if row[2] is not None and math.isfinite(row[2]):
            series[name_of[row[0]]].append((row[1], float(row[2])))
    limits = sorted({x for p in points for x in (s.resolved[s.slot_of[p.id]].alarm_hi,
                                                  s.resolved[s.slot_of[p.id]].cut)
                     if math.isfinite(x)})
    esc = html.escape
    tl = "".join(f"<tr><td>{_t(t)}</td><td>{_offset(t, inc.opened_at)}</td>"
                 f"<td>{esc(text)}</td></tr>" for t, text in timeline(inc, cmds))
    steps = "".join(
        f"<tr><td>{esc(st.title)}</td><td>{esc(st.state)}</td><td>{_t(st.deadline)}</td>"
        f"<td>{_t(st.done_at)}</td><td>{esc(st.by or '')}</td><td>{esc(st.detail)}</td></tr>"
        for st in inc.steps)
    areas = "、".join(esc(s.mine.area_by_id[a].name) for a in inc.evac_areas
                     if a in s.mine.area_by_id)
    peak = inc.peak
    body = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>事件报告 {esc(inc.id)}</title>
<style>body{{font-family:"Noto Sans CJK SC",sans-serif;margin:2em;color:#111}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #999;padding:4px 8px;
font-size:13px}}th{{background:#eee}}@media print{{button{{display:none}}}}</style></head><body>
<h1>{esc(s.mine.mine.name)} 事件报告</h1>
<p><button onclick="window.print()">打印 / 另存为 PDF</button></p>
<table><tr><th>事件编号</th><td>{esc(inc.id)}{"（演练）" if inc.drill else ""}</td></tr>
<tr><th>事件</th><td>{esc(inc.title)}</td></tr>
<tr><th>开始</th><td>{_t(inc.opened_at)}</td></tr>
<tr><th>关闭</th><td>{_t(inc.closed_at)} {esc(inc.closed_by or "")}</td></tr>
<tr><th>最高浓度</th><td>{float(peak.get("value") or 0):.2f}%
（{esc(str(peak.get("point_id", "")))}，{_t(peak.get("at"))}）</td></tr>
<tr><th>断电范围</th><td>{esc("、".join(inc.relays))}</td></tr>
<tr><th>撤人区域</th><td>{areas}</td></tr></table>
<h2>时间线</h2><table id="timeline"><tr><th>时间</th><th>距检测</th><th>事件</th></tr>{tl}</table>
<h2>处置步骤</h2><table id="steps"><tr><th>步骤</th><th>状态</th><th>时限</th><th>完成</th>
<th>确认人</th><th>说明</th></tr>{steps}</table>
<h2>相关测点曲线</h2>{_chart(series, t0, t1, limits)}
</body></html>"""
    return HTMLResponse(body)
