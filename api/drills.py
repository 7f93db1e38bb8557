"""Drill routes for organisers (双盲演练): arm a committed plan, abort, finish, reveal, report,
and the scenario library. (Restricting them to an organiser role comes with authentication.)"""

from __future__ import annotations

import html
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.auth import DRILL
from api.params import errors
from minewatch.drills import Drill, DrillError
from minewatch.service import Service
from simulators.drill import Plan, sites

router = APIRouter(prefix="/api/v1", tags=["drills"])


def _svc(request: Request) -> Service:
    return request.app.state.service


class ArmBody(BaseModel):
    plan: Plan
    commitment: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    user: str = Field(min_length=1, max_length=64)


class UserBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=500)


def _drill(s: Service, drill_id: str) -> Drill:
    d = s.drills.drills.get(drill_id)
    if d is None:
        raise HTTPException(404, f"未知演练 {drill_id} / unknown drill")
    return d


@router.get("/drills/scenarios", dependencies=DRILL, summary="演练场景库 / scenario library")
async def scenarios(request: Request) -> list[dict[str, Any]]:
    return [sc.model_dump() for sc in _svc(request).drills.library.values()]


@router.get("/drills", dependencies=DRILL, summary="演练列表 / drills")
async def drills(request: Request) -> list[dict[str, Any]]:
    """The plan of a drill stays hidden until it is revealed."""
    return [d.public() for d in _svc(request).drills.drills.values()]


@router.post("/drills", dependencies=DRILL, summary="布置演练 / arm a drill",
             responses=errors(409))
async def arm(request: Request, body: ArmBody) -> dict[str, Any]:
    """The plan must hash to the commitment published beforehand; it starts at its time."""
    s = _svc(request)
    sc = s.drills.library.get(body.plan.scenario)
    if sc is not None and body.plan.point in s.slot_of and \
            body.plan.point not in (fits := sites(s.mine, sc)):
        raise HTTPException(409, f"场景 {sc.id} 不能布置在测点 {body.plan.point} / the scenario "
                                 f"cannot be staged at this point; sites: {', '.join(fits[:20])}")
    try:
        return s.drills.arm(body.plan, body.commitment, body.user).public()
    except DrillError as exc:
        raise HTTPException(409, str(exc)) from exc


async def _end(request: Request, drill_id: str, status: str, by: str, reason: str = "") -> dict:
    s = _svc(request)
    try:
        d = await s.drills.end(_drill(s, drill_id), status, by, reason)  # type: ignore[arg-type]
    except DrillError as exc:
        raise HTTPException(409, str(exc)) from exc
    return d.public()


@router.post("/drills/{drill_id}/abort", dependencies=DRILL, summary="中止演练 / abort",
             responses=errors(409))
async def abort(request: Request, drill_id: str, body: UserBody) -> dict[str, Any]:
    return await _end(request, drill_id, "aborted", body.user, body.reason or "组织者中止")


@router.post("/drills/{drill_id}/finish", dependencies=DRILL, summary="结束演练 / finish",
             responses=errors(409))
async def finish(request: Request, drill_id: str, body: UserBody) -> dict[str, Any]:
    return await _end(request, drill_id, "finished", body.user)


@router.post("/drills/{drill_id}/reveal", dependencies=DRILL,
             summary="公开计划 / reveal the plan", responses=errors(409))
async def reveal(request: Request, drill_id: str, body: UserBody) -> dict[str, Any]:
    s = _svc(request)
    try:
        return s.drills.reveal(_drill(s, drill_id), body.user).public()
    except DrillError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("/drills/{drill_id}/report", dependencies=DRILL, summary="演练评分 / drill score",
            responses={200: {"content": {"text/html": {}},
                             "description": "JSON, or with format=html a printable page"}})
async def report(request: Request, drill_id: str, format: str = "json") -> Any:
    s = _svc(request)
    rep = await s.drills.report(_drill(s, drill_id))
    if format != "html":
        return rep
    esc = html.escape
    started = rep["drill"]["started_at"] or 0
    width = 700
    span = max([m["seconds"] or 0 for m in rep["marks"]] + [m["limit_s"] for m in rep["marks"]]
               + [1]) * 1.05
    rows, bars = [], []
    for k, m in enumerate(rep["marks"]):
        sec = "未完成" if m["seconds"] is None else f'{m["seconds"]:.1f} s'
        ok = "合格" if m["passed"] else "不合格"
        rows.append(f"<tr class={'pass' if m['passed'] else 'fail'}><td>{esc(m['title'])}</td>"
                    f"<td>{sec}</td><td>{m['limit_s']:.1f} s</td><td>{ok}</td>"
                    f"<td>{esc(m['basis'])}</td></tr>")
        y = 10 + 18 * k
        lim_x = m["limit_s"] / span * width
        bars.append(f'<line x1="{lim_x:.0f}" x2="{lim_x:.0f}" y1="{y}" y2="{y + 14}" '
                    'stroke="#999"/>')
        if m["seconds"] is not None:
            w = max(2.0, m["seconds"] / span * width)
            color = "#2ca02c" if m["passed"] else "#d62728"
            bars.append(f'<rect x="0" y="{y}" width="{w:.0f}" height="14" fill="{color}"/>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 20}" '
           f'height="{20 + 18 * len(rep["marks"])}">{"".join(bars)}</svg>')
    body = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>演练评分 {esc(drill_id)}</title><style>body{{font-family:"Noto Sans CJK SC",sans-serif;
margin:2em}}td,th{{border:1px solid #999;padding:4px 8px}}table{{border-collapse:collapse}}
tr.fail td{{color:#b00}}</style></head><body><h1>双盲演练评分 {esc(drill_id)}</h1>
<p>场景: {esc(rep.get("scenario", {}).get("name", ""))}　开始: {time.strftime(
        "%Y-%m-%d %H:%M:%S", time.localtime(started))}　总评:
{"合格" if rep["passed"] else "不合格"}</p>
<table id="marks"><tr><th>步骤</th><th>用时</th><th>时限</th><th>结果</th><th>依据</th></tr>
{"".join(rows)}</table><h2>时间线</h2>{svg}</body></html>"""
    return HTMLResponse(body)
