"""All alarm rules composed (alarms.rules): the vectorized pipeline ≡ the per-reading references
composed in the same order, on one state holding mixed sensor kinds; and scenarios with numbers.

Order (alarms/rules.py, bench/engine.py ``reference_ms_per_reading``): thresholds
(tests/reference_engine.py) → window push (tests/reference_trend.py RefWindow) → trend
(ReferenceTrend) and integrity (tests/reference_integrity.py) over the window → interlocks
(tests/reference_lockouts.py) over the engine state; then the stale sweep and the interlocks
again, as the service's supervisor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.engine import ALARM_KINDS, new_state, sweep_stale
from alarms.integrity import (
    CAL_UNDECLARED,
    DEFAULT_INTEGRITY,
    IntegrityParams,
    integrity_state_for,
    reason_names,
)
from alarms.lockouts import (
    BLOCK_FAN,
    BLOCK_METHANE,
    BLOCK_UNTRUSTED,
    LOCK_FAN,
    LOCK_FAULT,
    LOCK_METHANE,
    new_lockout_state,
    release,
    topology_from_pairs,
)
from alarms.rules import RuleState, evaluate_locks, evaluate_rules
from alarms.trend import (
    DEFAULT_TREND,
    TrendParams,
    WindowParams,
    new_window,
    trend_figures,
    trend_message,
    trend_state_for,
)
from minewatch.readings import Quality
from tests.reference_engine import ReferenceEngine
from tests.reference_integrity import ReferenceIntegrity
from tests.reference_lockouts import ReferenceLockouts, RefZone
from tests.reference_trend import ReferenceTrend, RefWindow

NAN, INF = math.nan, math.inf
T0 = 1_780_000_000.0
OK, FAULT, CAL = int(Quality.OK), int(Quality.FAULT), int(Quality.CALIBRATING)
OOR, STALE, SUSPECT = int(Quality.OUT_OF_RANGE), int(Quality.STALE), int(Quality.SUSPECT)
LOCKS = {"fan": int(LOCK_FAN), "methane": int(LOCK_METHANE), "fault": int(LOCK_FAULT)}
BLOCKS = {"fan": int(BLOCK_FAN), "methane": int(BLOCK_METHANE),
          "untrusted": int(BLOCK_UNTRUSTED)}
ENGINE_PARAMS = ("alarm_hi", "alarm_lo", "cut", "restore", "deadband", "stale_after")

# --- parameter tables ------------------------------------------------------------------------
# The shipped tables (DEFAULT_TREND / DEFAULT_INTEGRITY) need 10-60 samples and 5-30 min
# before a trend, a flat line or a disagreement can fire; a few-dozen-reading stream would
# never reach them, so examples also draw "fast" variants of the same tables (same levels,
# short durations and sample counts).

FAST_TREND = {k: replace(p, min_samples=3) for k, p in DEFAULT_TREND.items()}
STEEP_TREND = {**FAST_TREND, "ch4": TrendParams(rate_per_min=1.875, horizon_s=30.0,
                                                 hysteresis=0.5, min_samples=2)}
FAST_INTEGRITY = {
    k: replace(p, flat_min_samples=3.0, flat_duration_s=1.0, drop_within_s=2.0,
               neighbour_max_age_s=5.0, negative_min_samples=3.0, agree_duration_s=1.0,
               calibration_max_s=4.0)
    for k, p in DEFAULT_INTEGRITY.items()}
TREND_TABLES = (DEFAULT_TREND, FAST_TREND, STEEP_TREND)
INTEGRITY_TABLES = (DEFAULT_INTEGRITY, FAST_INTEGRITY, FAST_INTEGRITY)


def trend_params(kind: str, table, limit: float) -> dict:
    p = table.get(kind, TrendParams())
    return dict(rate=p.rate_per_min, horizon=p.horizon_s, hysteresis=p.hysteresis,
                min_samples=float(p.min_samples), limit=limit)


def integrity_params(kind: str, table) -> dict:
    p = table.get(kind, IntegrityParams())
    return {f: float(getattr(p, f)) for f in IntegrityParams.__slots__}


# --- the stream ------------------------------------------------------------------------------
# Values on a binary grid (1/64 % CH4, 1/8 % O2, 1 ppm CO, ...) and times on a 0.5 s grid keep
# every window sum exact, so the vectorized running sums and the references' from-scratch sums
# agree bit for bit (as in tests/test_trend.py and tests/test_integrity.py): events compare with
# ==, no tolerance.

KINDS = ("ch4", "ch4", "co", "o2", "wind", "wind", "fan", "fan", "feed", "co2", "temp")
SWITCHES = ("fan", "feed")
METHANE_ROWS = (  # (alarm, cut, restore) rows of minewatch/thresholds.toml
    (1.0, 1.5, 1.0),  # return_corner, coal_face, heading_face, machine
    (1.0, 1.0, 1.0),  # face_return, heading_return
    (0.5, 0.5, 0.5),  # outburst intake
    (0.7, NAN, NAN),  # main_return: alarm only
    (0.5, 0.7, 0.7),  # belt_return_shaft
)
UNIT = {"ch4": 1 / 64, "co": 1.0, "o2": 1 / 8, "wind": 1 / 16, "co2": 1 / 64, "temp": 1 / 8}
SPECIAL = {
    "ch4": [0.0, 1 / 32, 19 / 64, 5 / 16, 0.5, 0.6875, 63 / 64, 1.0, 1.25, 1.5, 1.625,
            -1 / 16, 4.5],
    "co": [0.0, 10.0, 23.0, 24.0, 30.0, -3.0],
    "o2": [20.875, 20.0, 19.875, 18.5, 18.375],
    "wind": [0.0, 0.125, 0.25, 1.0, 4.0, 4.0625],
    "co2": [0.0, 0.5, 0.484375],
    "temp": [20.0, 29.875, 30.0],
}
STEPS = (-8, -1, 0, 0, 1, 1, 2, 4, 16)  # ramps: from the point's previous value, in units
QUALITY = [OK] * 14 + [FAULT, CAL, CAL, OOR, STALE, SUSPECT]


def _limits(draw, kind: str) -> dict:
    hi = lo = cut = restore = NAN
    deadband = 0.0
    if kind == "ch4":
        hi, cut, restore = draw(st.sampled_from(METHANE_ROWS))
        deadband = draw(st.sampled_from([0.0, 0.0, 0.05]))
    elif kind == "co":
        hi, deadband = 24.0, draw(st.sampled_from([0.0, 2.0]))
    elif kind == "o2":
        lo, deadband = draw(st.sampled_from([20.0, 18.5])), draw(st.sampled_from([0.0, 0.25]))
    elif kind == "wind":
        lo, hi = draw(st.sampled_from([(0.25, 4.0), (0.15, 4.0), (1.0, 8.0)]))
    elif kind == "fan":
        lo = 1.0  # 0 = stopped
    elif kind == "co2":
        hi = 0.5
    elif kind == "temp":
        hi = 30.0
    return dict(alarm_hi=hi, alarm_lo=lo, cut=cut, restore=restore, deadband=deadband,
                stale_after=draw(st.sampled_from([1.0, 2.0, 60.0])))


@dataclass
class Batch:
    rows: list[tuple[int, float, float, int]]  # slot, ts, value, quality
    received: float
    sweep_at: float
    declare: tuple[int, float, float] | None  # calibration window declared before the batch
    locks: bool  # evaluate the interlocks (evaluate_rules(locks=...))
    release: list[int]  # relays a user asks to restore after the batch


@dataclass
class Mine:
    kinds: list[str]
    limits: list[dict]
    size: int
    gap: float
    trend_table: dict
    integrity_table: dict
    noise: list[bool]
    up: list[int]
    down: list[int]
    lag: list[int]
    n_relays: int
    zones: list[RefZone]
    guards: dict[int, list[int]]  # relay → methane slots
    batches: list[Batch] = field(default_factory=list)


@st.composite
def mines(draw) -> Mine:
    kinds = ["ch4", *draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))]
    n = len(kinds)
    limits = [_limits(draw, k) for k in kinds]
    size = draw(st.sampled_from([3, 5, 12]))

    def neighbour(slot: int) -> int:
        # Mostly a point of the same kind (an airflow: face → corner → return), sometimes any.
        same = [s for s, k in enumerate(kinds) if k == kinds[slot] and s != slot]
        return draw(st.sampled_from([-1, -1, *same, *same, *same, *range(n)]))

    m = Mine(kinds, limits, size, gap=draw(st.sampled_from([10.0, 60.0])),
             trend_table=draw(st.sampled_from(TREND_TABLES)),
             integrity_table=draw(st.sampled_from(INTEGRITY_TABLES)),
             noise=[draw(st.sampled_from([True, True, False])) for _ in range(n)],
             up=[neighbour(s) for s in range(n)], down=[neighbour(s) for s in range(n)],
             lag=[draw(st.integers(0, size - 1)) for _ in range(n)],
             n_relays=draw(st.integers(1, 3)), zones=[], guards={})
    # Interlocks over some of the points: fans and winds in zones, cut-capable CH4 as guards.
    fans = [s for s, k in enumerate(kinds) if k == "fan"]
    winds = [s for s, k in enumerate(kinds) if k == "wind"]
    relay = st.integers(0, m.n_relays - 1)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
        m.zones.append(RefZone(
            fans=draw(st.lists(st.sampled_from(fans), min_size=1, max_size=2, unique=True))
            if fans else [],
            winds=draw(st.lists(st.sampled_from(winds), min_size=1, max_size=1))
            if winds and draw(st.booleans()) else [],
            relays=draw(st.lists(relay, min_size=1, max_size=2, unique=True))))
    for s, lim in enumerate(limits):
        if kinds[s] == "ch4" and math.isfinite(lim["cut"]):
            for r in draw(st.lists(relay, max_size=2, unique=True)):
                m.guards.setdefault(r, []).append(s)

    # Each analog point behaves one way: a wandering sensor, a steady rise from below its
    # alarm limit (trend, then alarm and cut) or a frozen value (flat line).
    style = [draw(st.sampled_from(["wander", "wander", "rise", "frozen"])) for _ in kinds]
    last = [draw(st.sampled_from([v for v in SPECIAL[k] if not v >= lim["alarm_hi"]]
                                 if style[s] == "rise" else SPECIAL[k]))
            if k in SPECIAL else 1.0 for s, (k, lim) in enumerate(zip(kinds, limits,
                                                                        strict=True))]
    moves = {"wander": ["ramp"] * 5 + ["hold"] * 2 + ["special"] * 3 + ["bad"],
             "rise": ["rise"] * 8 + ["special", "bad"],
             "frozen": ["hold"] * 8 + ["special", "bad"]}

    def value(slot: int) -> float:
        kind = kinds[slot]
        if kind in SWITCHES:
            return draw(st.sampled_from([0.0, 1.0, 1.0, 1.0, NAN]))
        how = draw(st.sampled_from(moves[style[slot]]))
        if how == "bad":
            return draw(st.sampled_from([NAN, INF, -INF]))
        if how == "hold":  # a frozen value: flat line
            v = last[slot]
        elif how == "special":
            v = draw(st.sampled_from(SPECIAL[kind]))
        else:
            steps = STEPS if how == "ramp" else (0, 1, 1, 2, 4)
            v = last[slot] + draw(st.sampled_from(steps)) * UNIT[kind]
        last[slot] = v
        return v

    t = 1000.0
    for _ in range(draw(st.integers(4, 24))):
        t += draw(st.sampled_from([0.0, 0.0, 0.0, 70.0]))  # an outage: stale, window reset
        declare = None
        if draw(st.integers(0, 3)) == 0:
            start = t + draw(st.sampled_from([-5.0, 0.0, 2.0, NAN]))
            declare = (draw(st.integers(0, n - 1)), start,
                       start + draw(st.sampled_from([0.5, 3.0, 20.0, INF])))
        rows = []
        if draw(st.booleans()):
            # A full poll: every point once, ascending (the slice paths of the vectorized code).
            t += 0.5
            rows = [(s, t, value(s), draw(st.sampled_from(QUALITY))) for s in range(n)]
        else:
            for _ in range(draw(st.integers(0, 3 * n))):
                t += draw(st.sampled_from([0.0, 0.5, 0.5, 0.5, 1.0, 2.5, 6.0]))  # 0.0: same ts
                slot = draw(st.integers(0, n - 1))  # duplicates within a batch happen
                late = draw(st.sampled_from([0.0, 0.0, 0.0, 2.0]))  # out of order / replayed
                rows.append((slot, t - late, value(slot), draw(st.sampled_from(QUALITY))))
        locks = draw(st.sampled_from([True, True, True, False]))
        req = draw(st.lists(relay, max_size=2, unique=True)) if locks else []
        m.batches.append(Batch(rows, t, t + draw(st.sampled_from([0.0, 0.0, 1.5, 3.0])),
                               declare, locks, req))
    return m


# --- both sides ---------------------------------------------------------------------------


def rule_state(m: Mine) -> RuleState:
    n = len(m.kinds)
    engine = new_state(*(np.array([lim[k] for lim in m.limits]) for k in ENGINE_PARAMS))
    topo = topology_from_pairs(
        [f"R{i}" for i in range(m.n_relays)], [f"Z{i}" for i in range(len(m.zones))],
        fans=[(s, z) for z, zone in enumerate(m.zones) for s in zone.fans],
        winds=[(s, z) for z, zone in enumerate(m.zones) for s in zone.winds],
        zone_relays=[(z, r) for z, zone in enumerate(m.zones) for r in zone.relays],
        guards=[(s, r) for r, slots in m.guards.items() for s in slots])
    return RuleState(
        engine=engine, window=new_window(n, WindowParams(size=m.size, reset_gap_s=m.gap)),
        trend=trend_state_for(m.kinds, engine.alarm_hi, m.trend_table),
        integrity=integrity_state_for(m.kinds, m.noise, m.up, m.down, m.lag,
                                      m.integrity_table, width=m.size),
        topology=topo, locks=new_lockout_state(topo))


class ReferenceRules:
    """The per-reading references composed in the service's order."""

    def __init__(self, m: Mine) -> None:
        n = len(m.kinds)
        self.engine = ReferenceEngine([dict(lim) for lim in m.limits])
        self.quality = [STALE] * n  # the engine's last quality per point (new_state: stale)
        self.window = RefWindow(n, m.size, m.gap)
        self.trend = ReferenceTrend(self.window, [
            trend_params(k, m.trend_table, lim["alarm_hi"])
            for k, lim in zip(m.kinds, m.limits, strict=True)])
        self.integrity = ReferenceIntegrity(self.window, [
            dict(integrity_params(k, m.integrity_table), expects_noise=m.noise[s],
                 up=m.up[s], down=m.down[s], lag=m.lag[s]) for s, k in enumerate(m.kinds)])
        self.locks = ReferenceLockouts(m.n_relays, m.zones, m.guards)

    def declare(self, slot: int, start: float, end: float) -> None:
        p = self.integrity.points[slot]
        p.cal_start, p.cal_end = start, end

    def batch(self, rows, received):
        thresholds = []
        for slot, ts, value, q in rows:
            if ts > self.engine.points[slot].ts:
                self.quality[slot] = q
            thresholds += self.engine.apply(slot, ts, value, q, received)
            valid = q in (OK, OOR) and math.isfinite(value)
            if self.window.push(slot, ts, value, valid):
                self.integrity.observe(slot, ts, value, valid, q)
        trend = self.trend.evaluate([r[0] for r in rows])
        return thresholds, trend, self.integrity.evaluate()

    def sweep(self, now: float):
        events = self.engine.sweep(now)
        for slot, kind, raised, _v, _t in events:
            if kind == "stale" and raised:
                self.quality[slot] = STALE
        return events

    def evaluate_locks(self) -> dict:
        pts = self.engine.points
        bits = [sum(1 << i for i, k in enumerate(ALARM_KINDS) if k in p.active) for p in pts]
        return self.locks.evaluate([p.value for p in pts], self.quality, bits,
                                   [p.restore for p in pts])


def _nan_key(row):
    """NaN ≠ NaN: floats become (is_nan, value) so rows compare and sort."""
    return tuple((math.isnan(x), 0.0 if math.isnan(x) else x) if isinstance(x, float) else x
                 for x in row)


def _sorted(rows):
    """Rows as a multiset: the vectorized order (rounds for duplicate slots, slot order) is
    not meaningful, only the content."""
    return sorted(map(_nan_key, rows))


def _bits(names: set[str], table: dict[str, int]) -> int:
    return sum(table[n] for n in names)


def _same(a, b) -> bool:
    return bool(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               equal_nan=True))


def check_engine_state(state: RuleState, ref: ReferenceRules) -> None:
    pts = ref.engine.points
    got_active = [{k for i, k in enumerate(ALARM_KINDS) if (int(b) >> i) & 1}
                  for b in state.engine.bits]
    assert got_active == [p.active for p in pts]
    assert state.engine.quality.tolist() == ref.quality
    assert _same(state.engine.value, [p.value for p in pts])


def check_locks(got, want: dict) -> None:
    assert got.condition.tolist() == [_bits(c, LOCKS) for c in want["condition"]]
    assert got.latched.tolist() == [_bits(c, LOCKS) for c in want["latched"]]
    assert got.must_cut.tolist() == [bool(c) for c in want["latched"]]
    assert got.restore_block.tolist() == [_bits(b, BLOCKS) for b in want["block"]]
    assert got.restore_allowed.tolist() == [not b for b in want["block"]]
    assert got.auto_unlock.tolist() == want["auto"]
    assert list(zip(got.edges.relays.tolist(), got.edges.old.tolist(), got.edges.new.tolist(),
                    strict=True)) == [(r, _bits(o, LOCKS), _bits(n, LOCKS))
                                      for r, o, n in want["edges"]]


# --- property test --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(mines())
def test_composed_rules_match_composed_references(m: Mine):
    state = rule_state(m)
    ref = ReferenceRules(m)
    for b in m.batches:
        if b.declare is not None:
            slot, start, end = b.declare
            state.integrity.declare_calibration([slot], start, end)
            ref.declare(slot, start, end)
        slots = np.array([r[0] for r in b.rows], dtype=np.int64)
        ts = np.array([r[1] for r in b.rows], dtype=np.float64)
        values = np.array([r[2] for r in b.rows], dtype=np.float64)
        quality = np.array([r[3] for r in b.rows], dtype=np.int8)

        got = evaluate_rules(state, slots, ts, values, quality, b.received, locks=b.locks)
        thresholds, trend, integrity = ref.batch(b.rows, b.received)
        assert _sorted(got.thresholds.rows()) == _sorted(thresholds)
        check_engine_state(state, ref)
        assert _sorted(got.trend.rows()) == _sorted(trend)
        assert state.trend.active.tolist() == [p.active for p in ref.trend.points]
        assert _sorted(got.integrity.rows()) == _sorted(integrity)
        assert state.integrity.reasons.tolist() == [p.reasons for p in ref.integrity.points]
        if b.locks:
            check_locks(got.locks, ref.evaluate_locks())
        else:
            assert got.locks is None

        # The supervisor: stale sweep, then the interlocks over the swept engine state.
        assert _sorted(sweep_stale(state.engine, b.sweep_at).rows()) == _sorted(
            ref.sweep(b.sweep_at))
        check_engine_state(state, ref)
        if b.locks:
            result = evaluate_locks(state)
            check_locks(result, ref.evaluate_locks())
            done, _ = release(state.locks, result, b.release)
            assert done.tolist() == ref.locks.release(b.release)
            assert state.locks.latched.tolist() == [_bits(c, LOCKS) for c in ref.locks.latched]
    sl, fc = trend_figures(state.trend, state.window)
    assert _same(sl, [p.slope for p in ref.trend.points])
    assert _same(fc, [p.forecast for p in ref.trend.points])
    assert not state.integrity._seen.any()


# --- scenarios with numbers --------------------------------------------------------------------


class Rig:
    """Real tables (thresholds.toml levels, DEFAULT_TREND, DEFAULT_INTEGRITY, 60-sample window),
    one batch per ``poll``; collects every rule's output."""

    def __init__(self, kinds, limits, *, fans=(), winds=(), zone_relays=(), guards=(),
                 n_relays=1, noise=None):
        n = len(kinds)
        engine = new_state(*(np.array([lim[k] for lim in limits]) for k in ENGINE_PARAMS))
        topo = topology_from_pairs([f"R{i}" for i in range(n_relays)],
                                   ["Z0"] if fans or winds else [], fans, winds, zone_relays,
                                   guards)
        self.state = RuleState(
            engine=engine, window=new_window(n),
            trend=trend_state_for(kinds, engine.alarm_hi),
            integrity=integrity_state_for(kinds, [True] * n if noise is None else noise,
                                          width=60),
            topology=topo, locks=new_lockout_state(topo))
        self.n = n
        self.t = T0
        self.thresholds, self.trend, self.integrity = [], [], []
        self.locks = None

    def poll(self, values, quality=OK, slots=None, t=None):
        slots = list(range(self.n)) if slots is None else list(slots)
        self.t = self.t + 1.0 if t is None else t
        values = np.broadcast_to(np.asarray(values, np.float64), (len(slots),))
        q = np.full(len(slots), quality, np.int8)
        ev = evaluate_rules(self.state, np.array(slots), np.full(len(slots), self.t), values, q,
                            self.t)
        self.thresholds += ev.thresholds.rows()
        self.trend += ev.trend.rows()
        self.integrity += ev.integrity.rows()
        self.locks = ev.locks
        return ev

    def sweep(self, now):
        self.thresholds += sweep_stale(self.state.engine, now).rows()
        self.locks = evaluate_locks(self.state)


def _lim(hi=NAN, lo=NAN, cut=NAN, restore=NAN, deadband=0.0, stale_after=60.0) -> dict:
    return dict(alarm_hi=hi, alarm_lo=lo, cut=cut, restore=restore, deadband=deadband,
                stale_after=stale_after)


RETURN_CORNER = _lim(hi=1.0, cut=1.5, restore=1.0)  # thresholds.toml methane.return_corner


def test_ch4_ramp_at_a_return_corner_warns_then_alarms_then_cuts():
    # 1 s polls rising 0.02 %/s (1.2 %/min) from 0.50 % to 1.60 %; the sensor guards relay R0.
    rig = Rig(["ch4"], [RETURN_CORNER], guards=[(0, 0)])
    ramp = [round(0.50 + 0.02 * k, 2) for k in range(56)]  # 0.50 … 1.60
    for v in ramp:
        rig.poll([v])
    t = {round(v, 2): T0 + 1 + k for k, v in enumerate(ramp)}
    # Trend warning (0.1 %/min, 10 samples, limit within 10 min) at the 10th sample, 0.68 %:
    # 1.2 %/min, 1.00 % in (1.00 - 0.68) / 1.2 min = 16 s. It clears when the alarm takes over.
    (slot, raised, value, ts, slope, fc), cleared = rig.trend
    assert (slot, raised, ts) == (0, True, t[0.68]) and value == pytest.approx(0.68)
    assert slope == pytest.approx(1.2, rel=1e-4) and fc == pytest.approx(16.0, rel=1e-3)
    assert trend_message("回风隅角 甲烷", slope, fc, 1.0) == (
        "回风隅角 甲烷 上升 1.20%/min，预计 16 秒后达到 1.00%")
    assert cleared[:2] == (0, False) and cleared[3] == t[1.0]
    # Thresholds: over_limit at 1.00 %, power_cut_limit at 1.50 %, after the warning.
    assert rig.thresholds == [(0, "over_limit", True, 1.0, t[1.0]),
                              (0, "power_cut_limit", True, 1.5, t[1.5])]
    assert t[0.68] < t[1.0] < t[1.5]
    assert rig.integrity == []  # a steady rise is no sign of tampering
    # 甲烷电闭锁: R0 locked from the cut on, and may not be restored.
    assert rig.locks.latched.tolist() == [int(LOCK_METHANE)]
    assert rig.locks.restore_block.tolist() == [int(BLOCK_METHANE)]
    rig.thresholds.clear()
    rig.poll([1.2])  # below the cut, not below restore: the cut holds
    assert rig.thresholds == [] and not rig.locks.restore_allowed[0]
    rig.poll([0.9])  # below restore 1.0: both clear; the lock waits for a manual restore
    assert [(k, r) for _, k, r, _, _ in rig.thresholds] == [
        ("over_limit", False), ("power_cut_limit", False)]
    assert rig.locks.must_cut[0] and rig.locks.restore_allowed[0]
    assert rig.trend[2:] == []  # falling: no trend
    done, edges = release(rig.state.locks, rig.locks, [0])
    assert done.tolist() == [True] and edges.unlocked.tolist() == [True]


def test_calibrating_reading_outside_the_declared_window_is_calibration_undeclared():
    rig = Rig(["ch4"], [RETURN_CORNER], guards=[(0, 0)], noise=[False])
    rig.state.integrity.declare_calibration([0], T0 + 100, T0 + 400)
    rig.poll([0.10], t=T0 + 50)
    # Standard gas at 2.00 % inside the declared window: no alarm, no cut, nothing suspect;
    # the relay is not cut but may not be restored while the sensor is calibrating.
    ev = rig.poll([2.00], quality=CAL, t=T0 + 200)
    assert rig.thresholds == [] and rig.integrity == []
    assert not ev.locks.must_cut[0] and ev.locks.restore_block[0] == BLOCK_UNTRUSTED
    rig.poll([0.10], t=T0 + 450)
    # The same gas at T0 + 500, after the window closed: calibration_undeclared (value: the
    # newest valid reading, 0.10 %), still no threshold event.
    rig.poll([2.00], quality=CAL, t=T0 + 500)
    assert rig.thresholds == []
    [(slot, raised, mask, prev, value, ts)] = rig.integrity
    assert (slot, raised, mask, prev, ts) == (0, True, int(CAL_UNDECLARED), 0, T0 + 500)
    assert reason_names(mask) == ["calibration_undeclared"] and value == pytest.approx(0.10)
    rig.poll([0.10], t=T0 + 510)  # a normal reading: the reason clears
    assert [(r[1], r[2]) for r in rig.integrity[1:]] == [(False, int(CAL_UNDECLARED))]


def test_heading_loses_air_then_its_substation_goes_silent():
    # 0 = heading face CH4 (guards R0), 1 = local fan, 2 = heading wind (0.25-4 m/s);
    # zone Z0: fan 1, wind 2, relays R0 (heading equipment) and R1 (roadheader).
    rig = Rig(["ch4", "fan", "wind"],
              [RETURN_CORNER, _lim(lo=1.0, stale_after=2.0), _lim(lo=0.25, hi=4.0)],
              fans=[(1, 0)], winds=[(2, 0)], zone_relays=[(0, 0), (0, 1)], guards=[(0, 0)],
              n_relays=2)
    rig.poll([0.20, 1.0, 1.0])
    assert rig.thresholds == [] and not rig.locks.must_cut.any()
    rig.poll([0.20, 1.0, 0.125])  # wind below 0.25 m/s: under_limit and 风电闭锁
    assert rig.thresholds == [(2, "under_limit", True, 0.125, T0 + 2)]
    assert rig.locks.latched.tolist() == [int(LOCK_FAN)] * 2
    assert rig.locks.restore_block.tolist() == [int(BLOCK_FAN)] * 2
    rig.poll([0.20, 1.0, 1.0])  # air back: the lock holds until restored by hand
    assert rig.locks.latched.tolist() == [int(LOCK_FAN)] * 2 and rig.locks.restore_allowed.all()
    assert release(rig.state.locks, rig.locks, [0, 1])[0].tolist() == [True, True]
    # The substation stops answering: 3 s later only the fan (stale after 2 s) is stale →
    # the fan is no longer known to run: 风电闭锁 again. 61 s later all three are stale: the
    # guarding CH4 is untrusted too: 故障闭锁 on R0.
    rig.thresholds.clear()
    rig.sweep(T0 + 6)
    assert rig.thresholds == [(1, "stale", True, 1.0, T0 + 6)]
    assert rig.locks.latched.tolist() == [int(LOCK_FAN)] * 2
    rig.sweep(T0 + 64)
    assert sorted(r[0] for r in rig.thresholds[1:]) == [0, 2]
    assert rig.locks.latched.tolist() == [int(LOCK_FAN | LOCK_FAULT), int(LOCK_FAN)]
    # It answers again, all normal: 故障闭锁 clears by itself, 风电闭锁 still needs a restore.
    rig.poll([0.20, 1.0, 1.0], t=T0 + 65)
    assert rig.locks.latched.tolist() == [int(LOCK_FAN)] * 2
    assert not rig.locks.auto_unlock.any() and rig.locks.restore_allowed.all()
