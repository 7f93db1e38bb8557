"""Alarm lifecycle and interlock routes: shelve, unshelve, comment, out of service, lockouts,
alarm-system KPIs. Thin: validation and HTTP status here, the rules in alarms/lifecycle.py,
alarms/lockouts.py and alarms/kpi.py; every change is journaled through the service."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from alarms.kpi import alarm_kpis
from alarms.lifecycle import (
    POINT_IN_SERVICE,
    POINT_OUT_OF_SERVICE,
    AlarmConflict,
    AlarmError,
    AlarmForbidden,
    AlarmNotFound,
)
from alarms.lockouts import BLOCK_NAMES, LOCK_NAMES, bit_names, block_text, lock_text
from api.auth import OPERATE, READ
from api.params import DAY, errors, period
from minewatch.readings import iso
from minewatch.service import Service
from minewatch.store import AlarmQuery

router = APIRouter(prefix="/api/v1", tags=["alarm lifecycle"])
MAX_KPI_DAYS = 92


def _svc(request: Request) -> Service:
    return request.app.state.service


def _status(exc: AlarmError) -> HTTPException:
    code = 404 if isinstance(exc, AlarmNotFound) else 409 if isinstance(
        exc, AlarmConflict) else 403 if isinstance(exc, AlarmForbidden) else 422
    return HTTPException(code, str(exc))


def apply_change(s: Service, change) -> dict[str, Any]:
    """Run one alarm-book change (returns the record and its transition), publish it and
    answer with the record; the book's refusals become 404/409/403/422."""
    try:
        rec, transition = change()
    except AlarmError as exc:
        raise _status(exc) from exc
    s._alarm_changed(rec, transition)
    return s.alarm_json(rec)


class ShelveBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    minutes: float = Field(gt=0, le=8 * 60, description="搁置时长（分钟） / shelve duration")


class UserBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)


class CommentBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    text: str = Field(min_length=1, max_length=2000)


class OutOfServiceBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    hours: float | None = Field(None, gt=0, le=24 * 30)


@router.post("/alarms/{alarm_id}/shelve", dependencies=OPERATE, responses=errors(409),
             summary="搁置报警 / shelve an alarm")
async def shelve(request: Request, alarm_id: str, body: ShelveBody) -> dict[str, Any]:
    """Safety-critical alarms (power cut, unverified cut, lockout) cannot be shelved (403)."""
    s, now = _svc(request), time.time()
    return apply_change(s, lambda: s.book.shelve(alarm_id, body.user, body.reason,
                                           now + body.minutes * 60, now))


@router.post("/alarms/{alarm_id}/unshelve", dependencies=OPERATE, responses=errors(409),
             summary="取消搁置 / unshelve an alarm")
async def unshelve(request: Request, alarm_id: str, body: UserBody) -> dict[str, Any]:
    s = _svc(request)
    return apply_change(s, lambda: s.book.unshelve(alarm_id, body.user, time.time()))


@router.post("/alarms/{alarm_id}/comments", dependencies=OPERATE, responses=errors(409),
             summary="报警备注 / comment on an open alarm")
async def comment(request: Request, alarm_id: str, body: CommentBody) -> dict[str, Any]:
    s = _svc(request)
    return apply_change(s, lambda: s.book.comment(alarm_id, body.user, body.text, time.time()))


class CalibrationBody(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    reason: str = Field("", max_length=500)
    minutes: float = Field(gt=0, le=24 * 60, description="申报标校时长（分钟） / planned duration")


@router.post("/points/{point_id}/calibration", dependencies=OPERATE,
             summary="申报标校 / declare a calibration")
async def declare_calibration(request: Request, point_id: str,
                              body: CalibrationBody) -> dict[str, Any]:
    """Readings of the point during the declared window are judged ``calibrating`` (no normal
    alarms); calibration readings outside a declared window, or a window longer than the
    configured maximum, raise a ``suspect`` alarm. Journaled."""
    s = _svc(request)
    if point_id not in s.slot_of:
        raise HTTPException(404, f"unknown point {point_id!r}")
    now = time.time()
    return s.declare_calibration(point_id, body.user, body.reason, now, now + body.minutes * 60)


@router.delete("/points/{point_id}/calibration", dependencies=OPERATE, responses=errors(409),
               summary="结束标校 / end a calibration")
async def end_calibration(request: Request, point_id: str,
                          user: Annotated[str, Query(min_length=1, max_length=64)]) -> dict:
    s = _svc(request)
    if point_id not in s.slot_of:
        raise HTTPException(404, f"unknown point {point_id!r}")
    if s.calibration_json(s.slot_of[point_id]) is None:
        raise HTTPException(409, f"测点 {point_id} 没有申报中的标校 / no declared calibration")
    return s.end_calibration(point_id, user, time.time())


@router.post("/points/{point_id}/out-of-service", dependencies=OPERATE, responses=errors(409),
             summary="测点停用 / take a point out of service")
async def out_of_service(request: Request, point_id: str,
                         body: OutOfServiceBody) -> dict[str, Any]:
    """During maintenance the point's alarms are recorded but not annunciated (safety-critical
    kinds always are); the entry is journaled."""
    s, now = _svc(request), time.time()
    if point_id not in s.slot_of:
        raise HTTPException(404, f"unknown point {point_id!r}")
    until = now + body.hours * 3600 if body.hours else None
    try:
        entry, changes = s.book.set_out_of_service(point_id, body.user, body.reason, now, until)
    except AlarmError as exc:
        raise _status(exc) from exc
    s._journal(POINT_OUT_OF_SERVICE, point_id, entry.to_dict())
    for rec, transition in changes:
        s._alarm_changed(rec, transition)
    return entry.to_dict()


@router.delete("/points/{point_id}/out-of-service", dependencies=OPERATE,
                responses=errors(409),
               summary="测点恢复 / back in service")
async def in_service(request: Request, point_id: str,
                     user: Annotated[str, Query(min_length=1, max_length=64)]) -> dict:
    s = _svc(request)
    try:
        entry, changes = s.book.return_to_service(point_id, user, time.time())
    except AlarmError as exc:
        raise _status(exc) from exc
    s._journal(POINT_IN_SERVICE, point_id, entry.to_dict())
    for rec, transition in changes:
        s._alarm_changed(rec, transition)
    return entry.to_dict()


@router.get("/lockouts", dependencies=READ, summary="闭锁状态 / interlock state per relay")
async def lockouts(request: Request) -> list[dict[str, Any]]:
    """风电闭锁 / 甲烷电闭锁 / 故障闭锁 latched per relay, and why a restore is refused now."""
    s = _svc(request)
    res, topo = s.lock_result, s.locks_topo
    out = []
    for i, relay_id in enumerate(topo.relay_ids):
        latched = int(s.locks.latched[i])  # recovered from the journal before any evaluation
        block = int(res.restore_block[i]) if res is not None else 0
        out.append({"relay": relay_id, "cut": s.power.relay_cut.get(relay_id, False),
                    "locks": bit_names(latched, LOCK_NAMES), "locks_text": lock_text(latched),
                    "restore_allowed": res is not None and bool(res.restore_allowed[i]),
                    "restore_blocks": bit_names(block, BLOCK_NAMES),
                    "restore_blocks_text": block_text(block)})
    return out


@router.get("/kpi", dependencies=READ, summary="报警系统指标 / ISA-18.2 alarm-system KPIs")
async def kpi(request: Request, t_from: Annotated[str, Query(alias="from")],
              t_to: Annotated[str | None, Query(alias="to")] = None) -> dict[str, Any]:
    """Alarms per 10 min per position, floods, top 10, chattering and stale alarms, priority
    mix, shelved and out-of-service time, over at most 92 days."""
    s = _svc(request)
    lo, hi = period(t_from, t_to, MAX_KPI_DAYS * DAY, MAX_KPI_DAYS * DAY)
    records = await s.store.alarms(AlarmQuery(t_from=lo - 8 * 3600, t_to=hi, limit=100_000))
    rows, after = [], 0
    while len(rows) < 500_000:  # bounded: the journal of the period (and 8 h before it)
        page = await s.store.journal(after, 10_000)
        if not page:
            break
        rows += [r for r in page if lo - 8 * 3600 <= r.at < hi]
        after = page[-1].seq
    report = alarm_kpis(records, rows, lo, hi).to_dict()
    report["from"], report["to"] = iso(lo), iso(hi)
    return report
