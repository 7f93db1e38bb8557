"""FastAPI application: REST under /api/v1, WebSockets /ws/live and /ws/alarms, the dashboard.

Routes hold only HTTP concerns: they validate parameters, call the service and shape JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from alarms.workflows import RestoreRefused
from api.auth import (
    OPERATE,
    READ,
    RESTORE,
    SIMULATE,
    AuthContext,
    current_user,
    signed,
    users_router,
    ws_user,
)
from api.auth import router as auth_router
from api.drills import router as drills_router
from api.incidents import router as incidents_router
from api.lifecycle import apply_change
from api.lifecycle import router as lifecycle_router
from api.params import document_errors, errors, optional_period, period
from api.regulators import router as regulators_router
from api.security import add_guard
from dashboard import STATIC_DIR, VENDOR_DIR
from minewatch.auth import User
from minewatch.readings import Quality, iso
from minewatch.service import Service
from minewatch.store import AlarmQuery, CommandQuery, HistoryQuery
from simulators.mine import SCENARIOS, ScenarioError

log = logging.getLogger("minewatch.api")

MAX_RANGE_S = 31 * 86400
MAX_LIMIT = 100_000


class AckBody(BaseModel):
    user: str = Field("dispatcher", min_length=1, max_length=64)
    comment: str = Field("", max_length=500)


class RestoreBody(BaseModel):
    """Restoring power is a safety command: who signs it and why are required."""

    user: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500, description="复电理由 / why it is safe")


class ScenarioBody(BaseModel):
    scenario: str
    point: str
    # Bounded: the simulated substation encodes value × scale into a register; 1e308 × 100
    # overflowed to inf there and the whole substation stopped answering its polls.
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e6, le=1e6)
    ramp_s: float = Field(0.0, ge=0, le=3600)


router = APIRouter(prefix="/api/v1")


def svc(request: Request) -> Service:
    return request.app.state.service


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    s = svc(request)
    c = s.counters
    return {"status": "ok", "mine": s.mine.mine.id, "store": s.store.mode,
            "upkeep": s.upkeep,
            "uptime_s": round(time.time() - c.started_at, 1),
            "readings": c.readings, "stored": c.stored, "duplicates": c.duplicates,
            "store_errors": c.store_errors, "open_alarms": len(s.book.open),
            **s.store_health(), "substations": s.substations_json(),
            "mqtt": _mqtt_health(s), "broker": _broker_health(s),
            "dead_letters": dict(s.dead_letter_counts)}


def _mqtt_health(s: Service) -> dict[str, Any] | None:
    if s.mqtt is None:
        return None
    return {**dataclasses.asdict(s.mqtt.stats), "connected": s.mqtt.connected}


def _broker_health(s: Service) -> dict[str, Any] | None:
    """The engine's broker: the embedded mosquitto (with its pid) or the configured one."""
    if s.broker is not None:
        proc = s.broker.proc
        return {"embedded": True, "pid": proc.pid if proc is not None else None,
                "host": "127.0.0.1", "port": s.broker.config.port}
    if s.mqtt is not None:
        return {"embedded": False, "pid": None, "host": s.mqtt.host, "port": s.mqtt.port}
    return None


@router.get("/dead-letters", dependencies=READ)
async def dead_letters(
        request: Request,
        t_from: Annotated[str | None, Query(alias="from")] = None,
        t_to: Annotated[str | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> dict[str, Any]:
    """Input refused at the border (MQTT data), newest first, with the reason and payload."""
    s = svc(request)
    lo, hi = optional_period(t_from, t_to)
    rows = await s.store.dead_letters(lo, hi, limit)
    return {"counts": dict(s.dead_letter_counts),
            "rows": [{"key": d.key, "at": iso(d.at), "source": d.source, "reason": d.reason,
                      "detail": d.detail, "payload": d.payload} for d in rows]}


@router.get("/mine", dependencies=READ)
async def mine_layout(request: Request) -> dict[str, Any]:
    s = svc(request)
    m = s.mine
    return {"mine": m.mine.model_dump(), "areas": [a.model_dump() for a in m.areas],
            "roadways": [r.model_dump() for r in m.roadways],
            "substations": s.substations_json(),
            "relays": [{**r.model_dump(), "cut": s.power.relay_cut[r.id]} for r in m.relays]}


@router.get("/points", dependencies=READ)
async def points(request: Request) -> list[dict[str, Any]]:
    s = svc(request)
    return [s.point_json(i) for i in range(len(s.points))]


@router.get("/points/{point_id}", dependencies=READ)
async def point(request: Request, point_id: str) -> dict[str, Any]:
    s = svc(request)
    if point_id not in s.slot_of:
        raise HTTPException(404, f"unknown point {point_id!r}")
    return s.point_json(s.slot_of[point_id])


@router.get("/points/{point_id}/readings", dependencies=READ)
async def point_readings(
        request: Request, point_id: str,
        t_from: Annotated[str | None, Query(alias="from")] = None,
        t_to: Annotated[str | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 10_000) -> dict[str, Any]:
    s = svc(request)
    if point_id not in s.slot_of:
        raise HTTPException(404, f"unknown point {point_id!r}")
    lo, hi = period(t_from, t_to, MAX_RANGE_S, 600, to_pad=1.0)
    rows = await s.store.history(HistoryQuery((point_id,), lo, hi, "raw", limit))
    return {"point_id": point_id, "from": iso(lo), "to": iso(hi), "count": len(rows),
            "truncated": len(rows) >= limit,
            "readings": [{"ts": iso(ts), "value": v, "quality": Quality(q).label,
                          "received_at": iso(rx)} for _, ts, v, q, rx, _ in rows]}


AlarmStateQ = Literal["active", "open", "unack_active", "ack_active", "unack_rtn", "cleared"]


@router.get("/alarms", dependencies=READ)
async def alarms(
        request: Request, state: AlarmStateQ | None = None,
        t_from: Annotated[str | None, Query(alias="from")] = None,
        t_to: Annotated[str | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[dict[str, Any]]:
    s = svc(request)
    lo, hi = optional_period(t_from, t_to)
    if state in ("open", "active", "unack_active", "ack_active", "unack_rtn") and \
            lo is None and hi is None:
        recs = [r for r in s.book.open.values()
                if state == "open" or (state == "active" and r.active) or r.state == state]
        recs.sort(key=lambda r: r.raised_at, reverse=True)
        recs = recs[:limit]
    else:
        recs = await s.store.alarms(AlarmQuery(state=state, t_from=lo, t_to=hi, limit=limit))
    return [s.alarm_json(r) for r in recs]


@router.post("/alarms/{alarm_id}/ack", dependencies=OPERATE, responses=errors(409))
async def ack_alarm(request: Request, alarm_id: str, body: AckBody | None = None) -> dict:
    s = svc(request)
    body = body or AckBody()
    return apply_change(s, lambda: (s.book.ack(alarm_id, body.user, time.time()),
                                    "acknowledged"))


@router.get("/commands", dependencies=READ)
async def commands(
        request: Request,
        t_from: Annotated[str | None, Query(alias="from")] = None,
        t_to: Annotated[str | None, Query(alias="to")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500) -> list[dict[str, Any]]:
    s = svc(request)
    lo, hi = optional_period(t_from, t_to)
    return [s.command_json(c) for c in await s.store.commands(
        CommandQuery(t_from=lo, t_to=hi, limit=limit))]


@router.post("/relays/{relay_id}/restore", dependencies=RESTORE, responses=errors(409))
async def restore_relay(request: Request, relay_id: str, body: RestoreBody,
                        who: Annotated[User, Depends(current_user)]) -> dict:
    """A safety command: recorded under the logged-in user (the body's ``user`` is the name
    they sign with, e.g. 带班领导 on duty), with the reason, in the journal."""
    s = svc(request)
    if relay_id not in s.mine.relay_by_id:
        raise HTTPException(404, f"unknown relay {relay_id!r}")
    if not s.power.relay_cut[relay_id]:
        raise HTTPException(409, f"relay {relay_id} is not cut")
    try:
        cmd = await s.restore_relay(relay_id, signed(who, body.user), body.reason)
    except RestoreRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    return s.command_json(cmd)


@router.get("/substations", dependencies=READ)
async def substations(request: Request) -> list[dict[str, Any]]:
    return svc(request).substations_json()


@router.get("/sim", dependencies=READ, responses=errors(404))
async def sim_state(request: Request) -> dict[str, Any]:
    s = svc(request)
    if s.sim is None:
        raise HTTPException(404, "no simulator in this service")
    return {"scenarios": SCENARIOS, "relays": s.sim.relay_states(),
            "substations": {k: {"online": v.online, "port": v.port}
                            for k, v in s.sim.substations.items()},
            "injections": [vars(i) for i in s.sim.injections[-100:]]}


@router.post("/sim/scenarios", dependencies=SIMULATE, responses=errors(404))
async def inject(request: Request, body: ScenarioBody) -> dict[str, Any]:
    s = svc(request)
    if s.sim is None:
        raise HTTPException(404, "no simulator in this service")
    try:
        inj = await s.sim.inject(body.scenario, body.point, value=body.value, ramp_s=body.ramp_s)
    except ScenarioError as exc:
        raise HTTPException(422, str(exc)) from exc
    return vars(inj)


async def _pump(ws: WebSocket, service: Service, topic: str, first: list[Any]) -> None:
    async with service.bus.subscribe(topic) as sub:
        for msg in first:
            await ws.send_json(msg)
        receiver = asyncio.create_task(_drain_client(ws))
        try:
            while not receiver.done():
                getter = asyncio.create_task(sub.queue.get())
                done, _ = await asyncio.wait({getter, receiver},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await ws.send_json(getter.result()[1])
                else:
                    getter.cancel()
        finally:
            receiver.cancel()


async def _drain_client(ws: WebSocket) -> None:
    """Read (and ignore) client frames so a disconnect is noticed promptly."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


def create_app(service: Service, *, manage: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            await service.start()
        try:
            yield
        finally:
            if manage:
                await service.stop()

    app = FastAPI(title="minewatch", version="0.1.0", lifespan=lifespan,
                  description="煤矿安全监控: gas and ventilation monitoring and alarm service")
    app.state.service = service
    app.state.auth = AuthContext(service.store, service.jwt_secret, service.mine.mine.id)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(router)
    app.include_router(regulators_router)
    app.include_router(lifecycle_router)
    app.include_router(incidents_router)
    app.include_router(drills_router)
    openapi = app.openapi  # FastAPI's, cached; completed with the refusals every route can give
    app.openapi = lambda: document_errors(openapi())  # type: ignore[method-assign]

    @app.websocket("/ws/live")
    async def ws_live(ws: WebSocket) -> None:
        await ws.accept()
        if await ws_user(ws) is None:
            return
        snapshot = {"type": "snapshot",
                    "points": [service.point_live(i) for i in range(len(service.points))]}
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await _pump(ws, service, "live", [snapshot])

    @app.websocket("/ws/alarms")
    async def ws_alarms(ws: WebSocket) -> None:
        await ws.accept()
        if await ws_user(ws) is None:
            return
        snapshot = {"type": "snapshot",
                    "alarms": [service.alarm_json(r) for r in service.book.open.values()],
                    "incidents": [service.incident_json(i)
                                  for i in service.incidents.open_incidents()]}
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await _pump(ws, service, "alarms", [snapshot])

    @app.get("/", include_in_schema=False)
    async def index() -> RedirectResponse:
        return RedirectResponse("/dashboard/index.html")

    add_guard(app, service.settings.max_request_bytes)

    @app.exception_handler(ValueError)
    async def value_error(_: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    app.mount("/dashboard", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")
    if VENDOR_DIR.is_dir():
        app.mount("/vendor", StaticFiles(directory=VENDOR_DIR), name="vendor")
    else:  # the screen still works, without trend charts
        log.warning("chart library missing (%s): run scripts/setup.sh", VENDOR_DIR)
    return app
