"""Regulators' REST API (监管部门接口) under /api/v1: history, records, statistics, journal.

Routes hold only HTTP concerns: they validate parameters (a clear 4xx ``detail`` for every bad
input, never a 5xx), query the store through its interface and shape JSON or CSV. The domain
computations (event merging, clipping to the period) are pure functions in
``alarms.statistics``. Every scan is bounded: time spans per resolution, point counts and row
limits; long results are paged with an opaque cursor.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import math
import time
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response

from alarms.lifecycle import SEVERITY
from alarms.statistics import (
    EVENT_GAP_S,
    FAULT_KINDS,
    OVER_LIMIT_KINDS,
    aligned_cover,
    cut_delays,
    mean,
    point_statistics,
)
from api.auth import RECORDS
from api.params import DAY, T_MAX, T_MIN, errors, optional_period, period
from minewatch.readings import Quality, iso
from minewatch.records import AlarmRecord, CommandRecord
from minewatch.service import Service
from minewatch.store import (
    RESOLUTION_S,
    AlarmQuery,
    CommandQuery,
    HistoryQuery,
    verify_journal,
)

# Longest period per request for each resolution (no unbounded scans).
MAX_SPAN_S = {"raw": 31 * DAY, "1m": 31 * DAY, "5m": 366 * DAY, "1h": 2 * 366 * DAY}
MAX_STAT_SPAN_S = 366 * DAY
MAX_POINTS = 200
MAX_LIMIT = 10_000
# Alarms raised this long before a statistics period are read too, so events straddling its
# start are counted (and merged) correctly; alarms still open are read whatever their age.
STAT_LOOKBACK_S = 31 * DAY
MAX_STAT_RECORDS = 100_000  # alarms or commands behind one statistics answer
MAX_SCAN = 200_000  # command rows scanned to apply a filter the store cannot
PAGE = 50_000
ALARM_KINDS = tuple(SEVERITY)
AlarmStateQ = Literal["active", "open", "unack_active", "ack_active", "unack_rtn", "cleared"]
CommandResultQ = Literal["pending", "sent", "verified", "unverified", "failed", "refused"]

TAG = "regulators 监管部门"
router = APIRouter(prefix="/api/v1", tags=[TAG], dependencies=RECORDS,
                   responses=errors(404))  # an unknown mine, area, kind, point or relay

# --- shared parameters -------------------------------------------------------------------
FromQ = Annotated[str | None, Query(
    alias="from", description="起始时间 start, inclusive: ISO 8601 (naive = UTC) or epoch "
                              "seconds")]
ToQ = Annotated[str | None, Query(
    alias="to", description="结束时间 end, exclusive: ISO 8601 (naive = UTC) or epoch seconds")]
MineQ = Annotated[str | None, Query(
    description="矿井编号 mine id; must be this service's mine (else 404)")]


def _svc(request: Request) -> Service:
    return request.app.state.service


def _check_mine(s: Service, mine: str | None) -> None:
    if mine is not None and mine != s.mine.mine.id:
        raise HTTPException(404, f"unknown mine {mine!r} (this service serves "
                                 f"{s.mine.mine.id!r})")


def _split(values: str | list[str] | None) -> list[str]:
    """Comma lists and repeated parameters alike → distinct non-empty items, in order."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def _check_area(s: Service, area: str | None) -> None:
    if area is not None and area not in s.mine.area_by_id:
        raise HTTPException(404, f"unknown area {area!r}; areas: "
                                 f"{', '.join(a.id for a in s.mine.areas)}")


def _check_points(s: Service, ids: list[str]) -> None:
    unknown = [p for p in ids if p not in s.slot_of]
    if unknown:
        raise HTTPException(404, f"unknown point(s): {', '.join(unknown[:20])}")


def _select_points(s: Service, points: str | None, kind: str | None, area: str | None,
                   *, required: bool, cap: int | None = MAX_POINTS) -> list[str]:
    """Point ids from ``points`` (comma list) or all points of ``kind`` and/or ``area``
    (every point when neither is given and ``required`` is false); more than ``cap`` → 422."""
    ids = _split(points)
    if ids and (kind or area):
        raise HTTPException(422, "give either points or kind/area, not both")
    if ids:
        if len(ids) > MAX_POINTS:
            raise HTTPException(422, f"too many points ({len(ids)}; max {MAX_POINTS} per "
                                     "request)")
        _check_points(s, ids)
        return ids
    if points is not None:
        raise HTTPException(422, "points: empty list")
    if not kind and not area:
        if required:
            raise HTTPException(422, "select points: points=ID,ID… or kind=… and/or area=…")
        ids = [p.id for p in s.points]
    else:
        kinds = sorted({p.kind for p in s.points})
        if kind and kind not in kinds:
            raise HTTPException(404, f"unknown kind {kind!r}; this mine has: "
                                     f"{', '.join(kinds)}")
        _check_area(s, area)
        ids = [p.id for p in s.points
               if (not kind or p.kind == kind) and (not area or p.area == area)]
        if not ids:
            raise HTTPException(404, f"no points of kind {kind!r} in area {area!r}")
    if cap is not None and len(ids) > cap:
        raise HTTPException(422, f"too many points ({len(ids)}; max {cap} per request)"
                                 "; narrow with kind/area")
    return ids


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _secs(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(max(0.0, b - a), 3)


def _quality(q: int) -> str:
    try:
        return Quality(int(q)).label
    except ValueError:
        return str(q)


# --- cursor ------------------------------------------------------------------------------
def encode_cursor(resolution: str, ts: float, point_id: str) -> str:
    body = json.dumps({"r": resolution, "t": ts, "p": point_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, resolution: str) -> tuple[float, str]:
    bad = HTTPException(422, "cursor: malformed (pass back next_cursor exactly as returned)")
    if len(cursor) > 512:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise bad from exc
    if not isinstance(body, dict):
        raise bad
    r, t, p = body.get("r"), body.get("t"), body.get("p")
    if (not isinstance(t, int | float) or isinstance(t, bool) or not math.isfinite(t)
            or not T_MIN <= t <= T_MAX or not isinstance(p, str) or not 0 < len(p) <= 64):
        raise bad
    if r != resolution:
        raise HTTPException(422, f"cursor: belongs to resolution {r!r}, not {resolution!r}")
    return float(t), p


# --- history -------------------------------------------------------------------------------
RAW_COLUMNS = ("point_id", "ts", "value", "quality", "drill")
ROLLUP_COLUMNS = ("point_id", "bucket", "min", "max", "avg", "last", "count", "alarms")


@router.get(
    "/history", summary="历史数据 Point history (raw or 1m/5m/1h statistics)",
    responses={200: {"content": {"text/csv": {}},
                     "description": "JSON (default) or CSV with a header row"}},
    description="""
按测点、传感器类型或区域查询历史数据（原始值或1分钟/5分钟/1小时统计值），游标分页，可导出CSV。

Readings of the selected points in `[from, to)`:

- **Selectors**: `points` (comma-separated ids), or `kind` (e.g. `ch4`) and/or `area` (area
  id) — every point matching; at most 200 points per request.
- **resolution** `raw` (default): `{point_id, ts, value, quality, drill}`; `1m`/`5m`/`1h`:
  `{point_id, bucket, min, max, avg, last, count, alarms}` over readings of quality ok or
  out_of_range that are not drill or calibration readings; for rollups `from`/`to` are widened
  to whole buckets (the answer's `from`/`to` show the range used).
- **Bounds**: raw and 1m ≤ 31 days, 5m ≤ 366 days, 1h ≤ 732 days per request; default range is
  the hour before `to` (default now).
- **Paging**: rows are ordered by (time, point_id); when more remain, `next_cursor` is set:
  pass it back as `cursor` (same selectors and resolution) to get the next page. Each row is
  returned exactly once across pages. `null` when done.
- **format** `csv`: the same rows with a header row, as an attachment; the cursor is in the
  `X-Next-Cursor` response header.
""")
async def history(
        request: Request,
        points: Annotated[str | None, Query(description="测点 comma-separated point ids")] = None,
        kind: Annotated[str | None, Query(description="传感器类型 sensor kind, e.g. ch4")] = None,
        area: Annotated[str | None, Query(description="区域 area id")] = None,
        t_from: FromQ = None, t_to: ToQ = None,
        resolution: Annotated[Literal["raw", "1m", "5m", "1h"], Query(
            description="raw | 1m | 5m | 1h")] = "raw",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT,
                                    description="rows per page (≤ 10000)")] = 1000,
        cursor: Annotated[str | None, Query(
            description="next_cursor of the previous page")] = None,
        format: Annotated[Literal["json", "csv"], Query(description="json | csv")] = "json",
        include_drill: Annotated[bool, Query(
            description="include drill readings (raw only)")] = False,
        mine: MineQ = None) -> Any:
    s = _svc(request)
    _check_mine(s, mine)
    ids = _select_points(s, points, kind, area, required=True)
    if include_drill and resolution != "raw":
        raise HTTPException(422, "include_drill applies to resolution=raw only (rollups never "
                                 "include drill readings)")
    lo, hi = period(t_from, t_to, MAX_SPAN_S[resolution], 3600,
                     f" for resolution {resolution}")
    width = RESOLUTION_S[resolution]
    if width:
        lo = math.floor(lo / width) * width
        hi = min(math.ceil(hi / width) * width, T_MAX)  # the last bucket of year 9999 ends there
    after = decode_cursor(cursor, resolution) if cursor else None
    rows = await s.store.history(HistoryQuery(tuple(sorted(ids)), lo, hi, resolution,
                                              limit + 1, after, include_drill))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(resolution, float(rows[-1][1]), rows[-1][0]) if more else None
    if resolution == "raw":
        out = [{"point_id": p, "ts": iso(t), "value": _num(v), "quality": _quality(q),
                "drill": bool(d)} for p, t, v, q, _, d in rows]
        columns = RAW_COLUMNS
    else:
        out = [{"point_id": p, "bucket": iso(b), "min": _num(mn), "max": _num(mx),
                "avg": _num(av), "last": _num(la), "count": int(n), "alarms": int(al)}
               for p, b, mn, mx, av, la, n, al in rows]
        columns = ROLLUP_COLUMNS
    if format == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in out:
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
        name = f"minewatch-{s.mine.mine.id}-history-{resolution}.csv"
        headers = {"Content-Disposition": f'attachment; filename="{name}"',
                   "X-Count": str(len(out))}
        if next_cursor:
            headers["X-Next-Cursor"] = next_cursor
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
    return {"mine": s.mine.mine.id, "points": ids, "from": iso(lo), "to": iso(hi),
            "resolution": resolution, "count": len(out), "next_cursor": next_cursor,
            "rows": out}


# --- alarm records -----------------------------------------------------------------------------
async def _cut_commands_of(s: Service, alarm_ids: list[str]) -> dict[str, list[CommandRecord]]:
    out: dict[str, list[CommandRecord]] = {}
    for i in range(0, len(alarm_ids), 500):
        chunk = tuple(alarm_ids[i:i + 500])
        for c in await s.store.commands(CommandQuery(action="cut", alarm_ids=chunk,
                                                     limit=MAX_STAT_RECORDS)):
            out.setdefault(c.alarm_id or "", []).append(c)
    return out


def _parse_drill(drill: str) -> bool | None:
    v = drill.strip().lower()
    if v in ("false", "0", "no"):
        return False
    if v in ("true", "1", "yes"):
        return True
    if v == "all":
        return None
    raise HTTPException(422, f"drill: expected true, false or all, not {drill!r}")


@router.get(
    "/records/alarms", summary="报警记录 Alarm records with durations",
    description="""
报警记录（含确认、断电馈电确认、恢复正常的用时），供监管部门调阅。

Alarms raised in `[from, to)` (newest first), filtered by `kind` (repeatable or comma list:
over_limit, power_cut_limit, under_limit, fault, stale, cut_unverified), `area`, `point`
(comma list), `state` (a state, `active` or `open`), `drill` (`false` = real alarms only,
the default; `true` = drill alarms only; `all`).

Each record adds `durations` in seconds from `raised_at` — `to_ack_s` (acknowledged),
`to_power_verified_s` (earliest feed-verified cut command of this alarm), `to_clear_s`
(returned to normal); `null` where not reached — and `commands`, the ids of its cut commands.
""")
async def alarm_records(
        request: Request, mine: MineQ = None,
        kind: Annotated[list[str] | None, Query(
            description="报警类型 alarm kind(s), repeatable or comma list")] = None,
        area: Annotated[str | None, Query(description="区域 area id")] = None,
        point: Annotated[str | None, Query(description="测点 point id(s), comma list")] = None,
        t_from: FromQ = None, t_to: ToQ = None,
        state: Annotated[AlarmStateQ | None, Query(description="报警状态 state")] = None,
        drill: Annotated[str, Query(description="演练 false (default) | true | all")] = "false",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="≤ 10000")] = 1000,
) -> dict[str, Any]:
    s = _svc(request)
    _check_mine(s, mine)
    kinds = _split(kind)
    unknown = [k for k in kinds if k not in ALARM_KINDS]
    if unknown:
        raise HTTPException(422, f"unknown alarm kind(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(ALARM_KINDS)}")
    pids = _split(point)
    if len(pids) > MAX_POINTS:
        raise HTTPException(422, f"too many points (max {MAX_POINTS})")
    _check_points(s, pids)
    _check_area(s, area)
    if area is not None:
        in_area = [p.id for p in s.points if p.area == area]
        pids = [p for p in pids if p in in_area] if pids else in_area
        if not pids:
            return _alarm_page(s, [], {}, limit)
    lo, hi = optional_period(t_from, t_to)
    recs = await s.store.alarms(AlarmQuery(state=state, t_from=lo, t_to=hi, kinds=tuple(kinds),
                                           point_ids=tuple(pids), drill=_parse_drill(drill),
                                           limit=limit))
    cmds = await _cut_commands_of(s, [r.id for r in recs])
    return _alarm_page(s, recs, cmds, limit)


def _alarm_page(s: Service, recs: list[AlarmRecord], cmds: dict[str, list[CommandRecord]],
                limit: int) -> dict[str, Any]:
    out = []
    for r in recs:
        mine_cmds = sorted(cmds.get(r.id, []), key=lambda c: (c.issued_at, c.id))
        verified = [c.verified_at for c in mine_cmds if c.verified_at is not None]
        out.append({**s.alarm_json(r), "commands": [c.id for c in mine_cmds], "durations": {
            "to_ack_s": _secs(r.raised_at, r.acked_at),
            "to_power_verified_s": _secs(r.raised_at, min(verified) if verified else None),
            "to_clear_s": _secs(r.raised_at, r.cleared_at)}})
    return {"mine": s.mine.mine.id, "count": len(out), "truncated": len(out) >= limit,
            "records": out}


# --- power-cut records -------------------------------------------------------------------------
async def _filtered_commands(s: Service, base: CommandQuery, result: str, limit: int
                             ) -> tuple[list[CommandRecord], bool]:
    """Commands matching ``base`` whose result is ``result``, newest first, up to ``limit``.

    The store cannot filter on result, so pages are read newest first (each page completed
    with every row sharing its last ``issued_at``) until enough match; at most MAX_SCAN rows.
    Returns (rows, complete)."""
    found: dict[str, CommandRecord] = {}
    hi, scanned, page = base.t_to, 0, max(limit, 1000)
    while True:
        rows = await s.store.commands(replace(base, t_to=hi, limit=page))
        if len(rows) == page:
            last = rows[-1].issued_at
            rows += await s.store.commands(replace(
                base, t_from=last, t_to=math.nextafter(last, math.inf), limit=MAX_SCAN))
            hi = last
        scanned += len(rows)
        found.update((c.id, c) for c in rows if c.result == result)
        if len(rows) < page or len(found) >= limit:
            complete = True
            break
        if scanned >= MAX_SCAN:
            complete = False
            break
    out = sorted(found.values(), key=lambda c: (c.issued_at, c.id), reverse=True)
    return out[:limit], complete


@router.get(
    "/records/commands", summary="断电/复电记录 Power-cut and restore records",
    description="""
断电、复电指令记录（下发、馈电确认时间及结果）。

Commands issued in `[from, to)` (newest first), filtered by `action` (cut | restore), `relay`
(comma list of relay ids), `area` (relays of that area), `result` (pending, sent, verified,
unverified, failed, refused). Each record adds `durations`: `to_sent_s` (issued → coil write
sent) and `to_verified_s` (sent → feed sensor confirmed), `null` where not reached.
""")
async def command_records(
        request: Request, mine: MineQ = None,
        action: Annotated[Literal["cut", "restore"] | None, Query(
            description="cut 断电 | restore 复电")] = None,
        relay: Annotated[str | None, Query(description="断电器 relay id(s), comma list")] = None,
        area: Annotated[str | None, Query(description="区域 area id")] = None,
        t_from: FromQ = None, t_to: ToQ = None,
        result: Annotated[CommandResultQ | None, Query(description="执行结果 result")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="≤ 10000")] = 1000,
) -> dict[str, Any]:
    s = _svc(request)
    _check_mine(s, mine)
    relays = _split(relay)
    unknown = [r for r in relays if r not in s.mine.relay_by_id]
    if unknown:
        raise HTTPException(404, f"unknown relay(s): {', '.join(unknown[:20])}")
    _check_area(s, area)
    if area is not None:
        in_area = [r.id for r in s.mine.relays if r.area == area]
        relays = [r for r in relays if r in in_area] if relays else in_area
    lo, hi = optional_period(t_from, t_to)
    complete = True
    if area is not None and not relays:
        cmds: list[CommandRecord] = []
    else:
        base = CommandQuery(t_from=lo, t_to=hi, action=action, targets=tuple(relays),
                            limit=limit)
        if result is None:
            cmds = await s.store.commands(base)
        else:
            cmds, complete = await _filtered_commands(s, base, result, limit)
    out = [{**s.command_json(c), "durations": {"to_sent_s": _secs(c.issued_at, c.sent_at),
                                               "to_verified_s": _secs(c.sent_at, c.verified_at)}}
           for c in cmds]
    return {"mine": s.mine.mine.id, "count": len(out),
            "truncated": len(out) >= limit or not complete, "records": out}


# --- statistics ----------------------------------------------------------------------------------
async def _max_values(s: Service, ids: list[str], lo: float, hi: float
                      ) -> tuple[dict[str, float], set[str]]:
    """Per point maximum over ``[lo, hi)`` from rollups: whole hours from the 1 h rollups, the
    ragged ends from 1 min rollups and the last seconds from raw readings (same selection as
    rollups: quality ok/out_of_range, no drill); the most recent rollup refresh interval is
    read raw too (PostgreSQL rollups are refreshed periodically). A point without any rollup
    value falls back to raw readings (bounded to the last 31 days of the period).
    Returns (max by point, points whose max came from the raw fallback)."""
    best: dict[str, float] = {}

    def keep(pid: str, v: Any) -> None:
        v = _num(v)
        if v is not None and (pid not in best or v > best[pid]):
            best[pid] = v

    async def scan(a: float, b: float, res: str) -> None:
        after = None
        while True:
            rows = await s.store.history(HistoryQuery(tuple(sorted(todo)), a, b, res, PAGE,
                                                      after))
            for r in rows:
                if res == "raw":
                    if r[3] in (Quality.OK, Quality.OUT_OF_RANGE):
                        keep(r[0], r[2])
                else:
                    keep(r[0], r[3])
            if len(rows) < PAGE:
                return
            after = (float(rows[-1][1]), rows[-1][0])

    todo = set(ids)
    res_of = {3600: "1h", 60: "1m", 0: "raw"}
    for width, a, b in aligned_cover(lo, hi, (3600, 60)):
        await scan(a, b, res_of[width])
    lag = 3 * float(getattr(s.settings, "rollup_refresh_s", 10.0)) + 5
    recent = max(lo, time.time() - lag)
    if recent < hi:
        await scan(recent, hi, "raw")
    fallback = todo - set(best)
    if fallback:
        todo = fallback
        await scan(max(lo, hi - 31 * DAY), hi, "raw")
    return best, fallback & set(best)


@router.get(
    "/statistics", summary="监管统计 Over-limit events, maxima, power cuts, sensor faults",
    description=f"""
监管统计：超限次数与累计时长、最大浓度、断电次数、平均断电用时、传感器故障时长（不含演练）。

Per point and in total, for `[from, to)` (≤ 366 days; default the last 24 h), optionally only
points of `kind` (e.g. `ch4`) and/or `area`:

- `over_limit_events`, `over_limit_s`: over_limit / power_cut_limit alarms of one point form
  one event while the gap from one's end to the next one's start is ≤ {EVENT_GAP_S / 60:g}
  min (gap > {EVENT_GAP_S / 60:g} min = new event). Events overlapping the period are counted,
  their duration clipped to it; open events run until `until` = min(`to`, now).
- `max`: highest value in the period, from the 1 h rollups (ragged ends from 1 min rollups and
  raw); `max_source` = `raw` when no rollup existed and raw readings were used.
- `power_cuts`: cut commands issued in the period for the point's alarms (per relay);
  `mean_time_to_power_cut_s` / `max_time_to_power_cut_s`: alarm raised → command sent.
- `sensor_fault_hours`: union of fault and stale alarm periods, clipped to the period.

Drill alarms are excluded. Alarms raised up to 31 days before `from` (and any still open) are
read so events straddling `from` count. An alarm re-raised before it was cleared stays one
record, so its duration spans the whole episode.
""")
async def statistics(
        request: Request, t_from: FromQ = None, t_to: ToQ = None, mine: MineQ = None,
        kind: Annotated[str | None, Query(description="传感器类型 sensor kind, e.g. ch4")] = None,
        area: Annotated[str | None, Query(description="区域 area id")] = None,
) -> dict[str, Any]:
    s = _svc(request)
    _check_mine(s, mine)
    ids = _select_points(s, None, kind, area, required=False, cap=None)
    lo, hi = period(t_from, t_to, MAX_STAT_SPAN_S, DAY)
    until = max(lo, min(hi, time.time()))
    kinds = OVER_LIMIT_KINDS + FAULT_KINDS
    pids = tuple(ids) if (kind or area) else ()
    alarms = await s.store.alarms(AlarmQuery(t_from=lo - STAT_LOOKBACK_S, t_to=hi,
                                             kinds=kinds, point_ids=pids, drill=False,
                                             limit=MAX_STAT_RECORDS + 1))
    old_open = await s.store.alarms(AlarmQuery(state="open", t_to=lo - STAT_LOOKBACK_S,
                                               kinds=kinds, point_ids=pids, drill=False,
                                               limit=MAX_STAT_RECORDS))
    cut_alarms = await s.store.alarms(AlarmQuery(t_from=lo - STAT_LOOKBACK_S, t_to=hi,
                                                 kinds=("power_cut_limit",), drill=False,
                                                 limit=MAX_STAT_RECORDS + 1))
    commands = await s.store.commands(CommandQuery(t_from=lo, t_to=hi, action="cut",
                                                   limit=MAX_STAT_RECORDS + 1))
    if max(len(alarms), len(cut_alarms), len(commands)) > MAX_STAT_RECORDS:
        raise HTTPException(422, f"more than {MAX_STAT_RECORDS} records in the period; "
                                 "narrow the period or filter by kind/area")
    every = {a.id: a for a in [*alarms, *old_open, *cut_alarms]}
    stats = point_statistics(ids, every.values(), commands, lo, hi, until)
    maxima, from_raw = await _max_values(s, ids, lo, hi)
    rows = []
    for pid in ids:
        st, p = stats[pid], s.mine.point_by_id[pid]
        sensor = s.limits.sensors[p.kind]
        mt = st.mean_time_to_power_cut_s
        xt = st.max_time_to_power_cut_s
        rows.append({
            "point_id": pid, "name": p.name, "kind": p.kind, "unit": sensor.unit,
            "area": p.area, "over_limit_events": st.over_limit_events,
            "open_events": st.open_events, "over_limit_s": round(st.over_limit_s, 3),
            "max": maxima.get(pid),
            "max_source": None if pid not in maxima else
            ("raw" if pid in from_raw else "rollups"),
            "power_cuts": st.power_cuts,
            "mean_time_to_power_cut_s": None if mt is None else round(mt, 3),
            "max_time_to_power_cut_s": None if xt is None else round(xt, 3),
            "sensor_fault_hours": round(st.sensor_fault_hours, 6)})
    delays = cut_delays(every.values(), commands, lo, hi)
    max_by_kind: dict[str, float] = {}
    for r in rows:
        if r["max"] is not None:
            max_by_kind[r["kind"]] = max(r["max"], max_by_kind.get(r["kind"], r["max"]))
    mt = mean(delays)
    totals = {
        "points": len(rows),
        "over_limit_events": sum(r["over_limit_events"] for r in rows),
        "over_limit_s": round(sum(st.over_limit_s for st in stats.values()), 3),
        "max_by_kind": max_by_kind,
        # every cut command of the period, manual ones and those of other points included
        "power_cuts": len([c for c in commands if c.action == "cut"]),
        "mean_time_to_power_cut_s": None if mt is None else round(mt, 3),
        "max_time_to_power_cut_s": round(max(delays), 3) if delays else None,
        "sensor_fault_hours": round(sum(st.sensor_fault_hours for st in stats.values()), 6)}
    return {"mine": s.mine.mine.id, "from": iso(lo), "to": iso(hi), "until": iso(until),
            "kind": kind, "area": area, "event_gap_s": EVENT_GAP_S, "points": rows,
            "totals": totals}


# --- journal -----------------------------------------------------------------------------------
@router.get(
    "/journal", summary="审计日志导出 Export the hash-chained journal",
    description="""
审计日志（哈希链）导出，供外部独立校验，防篡改。

Rows with `seq > after_seq` in order (≤ `limit`, at most 10000), the chain's `anchor`
(`seq`, `hash` of the last row pruned by retention, or seq 0 and 64 zeros), and
`next_after_seq` (pass as `after_seq` for the next page; `null` when no more rows now).

**Re-computing a hash** (what `minewatch.store.journal_hash` does): for each row

```python
body = json.dumps([seq, repr(float(at_epoch)), event, subject, data, prev_hash],
                  sort_keys=True, ensure_ascii=False, separators=(",", ":"))
hash = hashlib.sha256(body.encode("utf-8")).hexdigest()
```

where `at_epoch` is the exact float given beside the ISO `at` (which is rounded to ms) and
`data` is the JSON object as exported. The chain holds when each row's `hash` matches, its
`prev_hash` equals the previous row's `hash` (the anchor's hash for the first row) and `seq`
increases by exactly 1 (a gap means a deleted row).
""")
async def journal(
        request: Request, mine: MineQ = None,
        after_seq: Annotated[int, Query(ge=0, le=2**62, description="rows after this seq")] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="≤ 10000")] = 1000,
        event: Annotated[list[str] | None, Query(
            max_length=50, description="only these event names (repeatable), e.g. "
            "calibration_declared, alarm_chattering, lockout_changed")] = None,
) -> dict[str, Any]:
    s = _svc(request)
    _check_mine(s, mine)
    anchor = await s.store.journal_anchor()
    rows = await s.store.journal(after_seq, limit + 1, event)
    more = len(rows) > limit
    rows = rows[:limit]
    return {"mine": s.mine.mine.id, "anchor": {"seq": anchor[0], "hash": anchor[1]},
            "rows": [{"seq": r.seq, "at": iso(r.at), "at_epoch": r.at, "event": r.event,
                      "subject": r.subject, "data": r.data, "prev_hash": r.prev_hash,
                      "hash": r.hash} for r in rows],
            "next_after_seq": rows[-1].seq if more else None}


@router.get(
    "/journal/verify", summary="审计日志校验 Verify the journal's hash chain",
    description="""
校验整条审计日志哈希链：`ok`、已校验行数 `checked`、第一处断链的序号 `first_broken_seq`。

Walks the whole chain from the anchor (`minewatch.store.verify_journal`): `ok` is false when a
row was edited, inserted or deleted; `first_broken_seq` names the first row that does not
verify (`null` when the chain holds); `checked` counts the rows verified before it.
""")
async def journal_verify(request: Request, mine: MineQ = None) -> dict[str, Any]:
    s = _svc(request)
    _check_mine(s, mine)
    checked, bad = await verify_journal(s.store)
    anchor = await s.store.journal_anchor()
    return {"mine": s.mine.mine.id, "ok": bad is None, "checked": checked,
            "first_broken_seq": bad, "anchor": {"seq": anchor[0], "hash": anchor[1]}}
