"""Alarm-system KPIs (ISA-18.2 §16 / EEMUA 191) over a period, from the journal and records.

The journal rows the service writes are the source: ``alarm_raised`` (data = the alarm record
at that moment, so its ``shelved`` / ``out_of_service`` / ``suppressed`` flags say whether it was
annunciated), ``alarm_shelved`` / ``alarm_unshelved`` / ``alarm_shelve_expired`` and
``point_out_of_service`` / ``point_in_service``. Alarm records give stale (standing) alarms and
acknowledgement times. Drill alarms are left out unless asked for.

- Alarm rate per operator position: average and maximum per 10 minutes (bins aligned on the
  period start), and the share of 10-minute bins above the flood threshold (ISA-18.2 target:
  under ~1 %; ~1 alarm per 10 minutes is "very likely acceptable", ~2 "maximum manageable").
- Flood episodes: start when more than 10 alarms fall in a sliding 10 minutes, end when fewer
  than 5 do (the same detector as alarms/noise.py), with duration and share of the period.
- Top 10 most frequent alarms (point + kind) with their share of all annunciated alarms.
- Chattering alarms: ≥ 3 activations within 60 s at some time in the period.
- Stale alarms: active for more than 24 h at some time in the period.
- Priority mix (by severity), shelved time and out-of-service time, acknowledgement time.

Pass journal rows from somewhat before ``t_from`` (e.g. one shelving limit) so shelves and
out-of-service periods that began earlier are counted from ``t_from``.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from alarms.noise import ChatterParams, FloodParams, flood_step, flood_sweep, new_flood_state
from minewatch.records import AlarmRecord

PRIORITY_NAMES = {1: "紧急 critical", 2: "高 high", 3: "中 medium"}
DEFAULT_POSITION = "dispatch"  # 矿调度: one operator position unless configured


@dataclass(frozen=True, slots=True)
class KpiParams:
    bin_s: float = 600.0  # rate per 10 minutes
    flood: FloodParams = field(default_factory=FloodParams)
    chatter: ChatterParams = field(default_factory=ChatterParams)
    stale_after_s: float = 24 * 3600.0
    top_n: int = 10
    include_drill: bool = False


@dataclass
class KpiReport:
    t_from: float
    t_to: float
    annunciated: int = 0
    not_annunciated: int = 0  # raised while shelved, out of service or suppressed
    rate: dict[str, dict[str, float]] = field(default_factory=dict)  # position → figures
    floods: list[dict[str, Any]] = field(default_factory=list)
    flood_time_s: float = 0.0
    flood_time_pct: float = 0.0
    top: list[dict[str, Any]] = field(default_factory=list)
    chattering: list[dict[str, Any]] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    priority: dict[int, dict[str, Any]] = field(default_factory=dict)
    shelved_s: float = 0.0
    shelved: list[dict[str, Any]] = field(default_factory=list)
    out_of_service_s: float = 0.0
    out_of_service: list[dict[str, Any]] = field(default_factory=list)
    ack: dict[str, float | int | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["priority"] = {str(k): v for k, v in self.priority.items()}
        return d


def _get(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


def _annunciated(data: Mapping[str, Any]) -> bool:
    return not (data.get("shelved") or data.get("out_of_service") or data.get("suppressed"))


def _overlap(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


def alarm_kpis(records: Iterable[AlarmRecord], journal: Iterable[Any], t_from: float,
               t_to: float, *,
               position_of: Mapping[str, str] | Callable[[str], str] | None = None,
               params: KpiParams = KpiParams()) -> KpiReport:
    """KPIs over [t_from, t_to). ``position_of`` maps a point id to its operator position."""
    if not t_to > t_from:
        raise ValueError("t_to must be after t_from")
    if position_of is None:
        def pos_of(_point: str) -> str:
            return DEFAULT_POSITION
    elif callable(position_of):
        pos_of = position_of
    else:
        mapping = position_of

        def pos_of(point: str) -> str:
            return mapping.get(point, DEFAULT_POSITION)

    rows = sorted(journal, key=lambda r: (_get(r, "at"), _get(r, "seq") or 0))
    records = [r for r in records if params.include_drill or not r.drill]
    rep = KpiReport(t_from, t_to)

    raises = []  # (at, point, kind, severity, annunciated)
    for row in rows:
        at, data = _get(row, "at"), _get(row, "data") or {}
        if _get(row, "event") != "alarm_raised" or not t_from <= at < t_to:
            continue
        if data.get("drill") and not params.include_drill:
            continue
        raises.append((at, data.get("point_id"), data.get("kind"),
                       int(data.get("severity") or 3), _annunciated(data)))
    shown = [r for r in raises if r[4]]
    rep.annunciated, rep.not_annunciated = len(shown), len(raises) - len(shown)

    _rates(rep, shown, pos_of, params)
    _floods(rep, shown, pos_of, params)
    counts = Counter((p, k) for _, p, k, _, _ in shown)
    rep.top = [{"point_id": p, "kind": k, "count": n,
                "pct": round(100.0 * n / len(shown), 2)}
               for (p, k), n in counts.most_common(params.top_n)]
    _chattering(rep, raises, params)
    _stale(rep, records, params)
    sev = Counter(s for _, _, _, s, _ in shown)
    rep.priority = {s: {"name": PRIORITY_NAMES.get(s, str(s)), "count": n,
                        "pct": round(100.0 * n / len(shown), 2)} for s, n in sorted(sev.items())}
    _shelved(rep, rows)
    _out_of_service(rep, rows)
    _ack(rep, records)
    return rep


def _rates(rep: KpiReport, shown, pos_of, params: KpiParams) -> None:
    span = rep.t_to - rep.t_from
    n_bins = max(1, math.ceil(span / params.bin_s))
    by_pos: dict[str, list[float]] = defaultdict(list)
    for at, point, *_ in shown:
        by_pos[pos_of(point)].append(at)
    for pos, times in sorted(by_pos.items()):
        bins = np.bincount(((np.asarray(times) - rep.t_from) // params.bin_s).astype(np.int64),
                           minlength=n_bins)
        rep.rate[pos] = {
            "alarms": len(times),
            "avg_per_10min": round(len(times) / (span / params.bin_s), 3),
            "max_per_10min": int(bins.max()),
            "pct_10min_over_flood": round(
                100.0 * float((bins > params.flood.start_above).sum()) / n_bins, 2),
        }


def _floods(rep: KpiReport, shown, pos_of, params: KpiParams) -> None:
    by_pos: dict[str, list[float]] = defaultdict(list)
    for at, point, *_ in shown:
        by_pos[pos_of(point)].append(at)
    flood_params = FloodParams(params.flood.window_s, params.flood.start_above,
                               params.flood.end_below,
                               max(params.flood.capacity, params.flood.start_above + 1))
    for pos, times in sorted(by_pos.items()):
        state = new_flood_state(1, flood_params)
        ev = flood_step(state, np.zeros(len(times), np.int64), np.sort(times))
        events = ev.rows() + flood_sweep(state, rep.t_to).rows()
        open_: dict[str, Any] | None = None
        for _, started, at, alarms, peak in events:
            if started:
                open_ = {"position": pos, "start": at, "end": None, "alarms": alarms,
                         "peak_per_10min": peak}
                rep.floods.append(open_)
            elif open_ is not None:
                open_.update(end=at, alarms=alarms, peak_per_10min=peak)
                open_ = None
        if open_ is not None:  # still flooding at the end of the period
            open_["alarms"], open_["peak_per_10min"] = int(state.alarms[0]), int(state.peak[0])
    for f in rep.floods:
        end = f["end"] if f["end"] is not None else rep.t_to
        f["duration_s"] = end - f["start"]
        rep.flood_time_s += f["duration_s"]
    rep.flood_time_pct = round(100.0 * rep.flood_time_s / (rep.t_to - rep.t_from), 2)


def _chattering(rep: KpiReport, raises, params: KpiParams) -> None:
    k, win = params.chatter.activations, params.chatter.window_s
    by_key: dict[tuple[str, str], list[float]] = defaultdict(list)
    for at, point, kind, *_ in raises:
        by_key[(point, kind)].append(at)
    for (point, kind), times in sorted(by_key.items()):
        t = np.sort(np.asarray(times))
        if t.size < k:
            continue
        # Most activations inside any window of ``win`` seconds starting at an activation.
        most = int((np.searchsorted(t, t + win, side="right") - np.arange(t.size)).max())
        if most >= k:
            rep.chattering.append({"point_id": point, "kind": kind, "activations": int(t.size),
                                   "max_in_window": most})


def _stale(rep: KpiReport, records: list[AlarmRecord], params: KpiParams) -> None:
    for rec in records:
        end = rep.t_to if rec.active or rec.cleared_at is None else rec.cleared_at
        stale_from = rec.raised_at + params.stale_after_s
        if max(stale_from, rep.t_from) < min(end, rep.t_to):
            rep.stale.append({"id": rec.id, "point_id": rec.point_id, "kind": rec.kind,
                              "raised_at": rec.raised_at,
                              "active_s": min(end, rep.t_to) - rec.raised_at})
    rep.stale.sort(key=lambda s: -s["active_s"])


def _shelved(rep: KpiReport, rows) -> None:
    open_: dict[tuple[str, str], dict[str, Any]] = {}
    spans: list[dict[str, Any]] = []
    for row in rows:
        event, at, data = _get(row, "event"), _get(row, "at"), _get(row, "data") or {}
        key = (data.get("point_id"), data.get("kind"))
        if event == "alarm_shelved":
            until = data.get("shelved_until")
            open_[key] = {"point_id": key[0], "kind": key[1], "by": data.get("shelved_by"),
                          "start": at, "end": until if until is not None else math.inf}
        elif event in ("alarm_unshelved", "alarm_shelve_expired") and key in open_:
            span = open_.pop(key)
            span["end"] = min(span["end"], at)
            spans.append(span)
    spans += open_.values()
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for s in spans:
        secs = _overlap(s["start"], s["end"], rep.t_from, rep.t_to)
        if secs <= 0:
            continue
        t = totals.setdefault((s["point_id"], s["kind"]), {
            "point_id": s["point_id"], "kind": s["kind"], "seconds": 0.0, "by": []})
        t["seconds"] += secs
        if s["by"] and s["by"] not in t["by"]:
            t["by"].append(s["by"])
    rep.shelved = sorted(totals.values(), key=lambda t: -t["seconds"])
    rep.shelved_s = sum(t["seconds"] for t in rep.shelved)


def _out_of_service(rep: KpiReport, rows) -> None:
    open_: dict[str, float] = {}
    totals: dict[str, float] = defaultdict(float)
    for row in rows:
        event, at, data = _get(row, "event"), _get(row, "at"), _get(row, "data") or {}
        point = data.get("point_id") or _get(row, "subject")
        if event == "point_out_of_service":
            open_[point] = data.get("at", at)
        elif event == "point_in_service" and point in open_:
            start = open_.pop(point)
            totals[point] += _overlap(start, data.get("ended_at") or at, rep.t_from, rep.t_to)
    for point, start in open_.items():
        totals[point] += _overlap(start, rep.t_to, rep.t_from, rep.t_to)
    rep.out_of_service = [{"point_id": p, "seconds": s}
                          for p, s in sorted(totals.items(), key=lambda x: -x[1]) if s > 0]
    rep.out_of_service_s = sum(x["seconds"] for x in rep.out_of_service)


def _ack(rep: KpiReport, records: list[AlarmRecord]) -> None:
    times = [r.acked_at - r.raised_at for r in records
             if r.acked_at is not None and rep.t_from <= r.raised_at < rep.t_to]
    unacked = sum(1 for r in records if r.acked_at is None and r.state != "cleared"
                  and rep.t_from <= r.raised_at < rep.t_to)
    rep.ack = {"acknowledged": len(times), "unacknowledged": unacked,
               "median_s": float(np.median(times)) if times else None,
               "p90_s": float(np.percentile(times, 90)) if times else None}
