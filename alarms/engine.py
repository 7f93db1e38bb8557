"""The vectorized threshold engine: state arrays + a batch in, edge events out.

Everything here is a pure function over numpy arrays (no I/O, no per-point Python loop) so it
can be benchmarked and property-tested alone against the per-reading reference in
``tests/reference_engine.py``. State is a struct of arrays indexed by point slot; each alarm
condition is one bit of ``bits``, and events are the bits that changed (``new ^ old``), so a
condition that persists produces no further events however many readings arrive.

Rules (engine v0):
- over_limit: value >= alarm_hi raises; value < alarm_hi - deadband clears.
- under_limit: value < alarm_lo raises; value >= alarm_lo + deadband clears.
- power_cut_limit: value >= cut raises (the power-cut edge); value < restore clears
  (restore becomes *permitted*; restoring power stays a manual act, per the regulation).
- fault: the substation flags the channel faulty, the value is outside the sensor's range,
  or the value is not a finite number.
- stale: no reading received for ``stale_after`` seconds (see ``sweep_stale``).
Limits are evaluated only on readings flagged ok or out_of_range (a methane reading above the
sensor's range is still far over the limit: fail safe). During fault, stale or calibration
the limit bits hold their last state, so a cut stays cut while the sensor cannot be trusted.
A reading whose timestamp is not newer than the point's last one is a replay and is ignored,
as is one whose timestamp is not finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minewatch.readings import Quality

ALARM_KINDS: tuple[str, ...] = ("over_limit", "power_cut_limit", "under_limit", "fault", "stale")
OVER, CUT, UNDER, FAULT, STALE = (np.uint8(1 << i) for i in range(len(ALARM_KINDS)))
LIMIT_BITS = np.uint8(OVER | CUT | UNDER)

_OK = np.int8(Quality.OK)
_OOR = np.int8(Quality.OUT_OF_RANGE)
_FAULT = np.int8(Quality.FAULT)
_STALE = np.int8(Quality.STALE)


@dataclass(slots=True)
class EngineState:
    """Per-slot arrays. Limits are NaN where a rule does not apply to the point."""

    alarm_hi: np.ndarray
    alarm_lo: np.ndarray
    cut: np.ndarray
    restore: np.ndarray
    deadband: np.ndarray
    stale_after: np.ndarray  # seconds without a reading before the point is stale
    value: np.ndarray  # last value
    ts: np.ndarray  # last source timestamp (replay guard)
    seen: np.ndarray  # last server receive time (staleness; robust to source clock skew)
    quality: np.ndarray  # last quality
    bits: np.ndarray  # active alarm conditions
    _stamp: np.ndarray  # scratch for duplicate detection within a batch

    @property
    def size(self) -> int:
        return int(self.bits.shape[0])


@dataclass(slots=True)
class Events:
    """Edge events in batch order: one row per condition that became active or inactive."""

    slots: np.ndarray  # int32
    kinds: np.ndarray  # int8 index into ALARM_KINDS
    raised: np.ndarray  # bool: True = became active, False = cleared
    values: np.ndarray  # float64 value that caused the edge
    ts: np.ndarray  # float64 source timestamp of that reading

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def rows(self) -> list[tuple[int, str, bool, float, float]]:
        return [(int(s), ALARM_KINDS[k], bool(r), float(v), float(t)) for s, k, r, v, t in
                zip(self.slots, self.kinds, self.raised, self.values, self.ts, strict=True)]


def new_state(alarm_hi, alarm_lo, cut, restore, deadband, stale_after) -> EngineState:
    n = len(alarm_hi)

    def f64(x) -> np.ndarray:
        a = np.asarray(x, dtype=np.float64)
        if a.shape != (n,):
            raise ValueError(f"limit array has shape {a.shape}, expected ({n},)")
        return a.copy()

    return EngineState(
        alarm_hi=f64(alarm_hi), alarm_lo=f64(alarm_lo), cut=f64(cut), restore=f64(restore),
        deadband=f64(deadband), stale_after=f64(stale_after),
        value=np.full(n, np.nan), ts=np.full(n, -np.inf), seen=np.full(n, np.nan),
        quality=np.full(n, _STALE, dtype=np.int8), bits=np.zeros(n, dtype=np.uint8),
        _stamp=np.full(n, -1, dtype=np.int64),
    )


def _empty_events() -> Events:
    return Events(np.empty(0, np.int32), np.empty(0, np.int8), np.empty(0, bool),
                  np.empty(0, np.float64), np.empty(0, np.float64))


def _edges(slots, old, new, values, ts) -> Events:
    changed = np.flatnonzero(old != new)
    if changed.size == 0:
        return _empty_events()
    diff = old[changed] ^ new[changed]
    # One row per (changed reading, changed bit), in batch order then kind order.
    bitmask = (diff[:, None] >> np.arange(len(ALARM_KINDS), dtype=np.uint8)) & 1
    rows, kinds = np.nonzero(bitmask)
    idx = changed[rows]
    raised = ((new[idx] >> kinds.astype(np.uint8)) & 1).astype(bool)
    return Events(slots[idx].astype(np.int32), kinds.astype(np.int8), raised,
                  values[idx].astype(np.float64), ts[idx].astype(np.float64))


def _concat(parts: list[Events]) -> Events:
    if len(parts) == 1:
        return parts[0]
    return Events(*(np.concatenate([getattr(p, f) for p in parts]) for f in Events.__slots__))


def as_index(slots: np.ndarray) -> slice | np.ndarray:
    """A slice when the slots are one contiguous ascending run (a whole substation's poll):
    slicing reads and writes the state arrays in place, ~2x cheaper than fancy indexing."""
    k = slots.shape[0]
    if k and int(slots[-1]) - int(slots[0]) == k - 1 and (
            k == 1 or bool((slots[1:] > slots[:-1]).all())):
        return slice(int(slots[0]), int(slots[-1]) + 1)
    return slots


def _evaluate_unique(state: EngineState, slots, ts, values, quality, received_at) -> Events:
    """One round where every slot appears at most once."""
    idx = as_index(slots)
    # Not newer than the last one: a replay. A non-finite timestamp (+inf would shadow every
    # later reading) is ignored too; the ingest borders dead-letter such input.
    fresh = (ts > state.ts[idx]) & (ts < np.inf)
    if not fresh.all():
        slots, ts, values, quality = slots[fresh], ts[fresh], values[fresh], quality[fresh]
        idx = as_index(slots)
    if slots.size == 0:
        return _empty_events()

    old = state.bits[idx].copy()
    finite = np.isfinite(values)
    judged = ((quality == _OK) | (quality == _OOR)) & finite
    v = np.where(finite, values, 0.0)

    hi, lo, db = state.alarm_hi[idx], state.alarm_lo[idx], state.deadband[idx]
    cut, restore = state.cut[idx], state.restore[idx]
    o_over, o_under, o_cut = (old & OVER) != 0, (old & UNDER) != 0, (old & CUT) != 0
    over = (o_over & (v >= hi - db)) | (~o_over & (v >= hi))
    under = (o_under & (v < lo + db)) | (~o_under & (v < lo))
    cutting = (o_cut & ~(v < restore)) | (~o_cut & (v >= cut))
    limit_bits = (over * OVER) | (under * UNDER) | (cutting * CUT)
    limit_bits = ((limit_bits * judged) | ((old & LIMIT_BITS) * ~judged)).astype(np.uint8)

    faulty = (quality == _FAULT) | (quality == _OOR) | ((quality == _OK) & ~finite)
    stale = quality == _STALE
    new = (limit_bits | (faulty * FAULT) | (stale * STALE)).astype(np.uint8)

    state.bits[idx] = new
    state.ts[idx] = ts
    state.value[idx] = values
    state.quality[idx] = quality
    if received_at is not None:
        state.seen[idx] = received_at
    return _edges(slots, old, new, values, ts)


def evaluate(state: EngineState, slots, ts, values, quality,
             received_at: float | None = None) -> Events:
    """Apply a batch of readings; mutates ``state`` and returns the edge events.

    A batch may hold several readings of one point (an MQTT gateway batches several polls):
    they are applied in rounds so each reading sees the state its predecessor left.
    """
    slots = np.asarray(slots, dtype=np.int64)
    ts = np.asarray(ts, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.int8)
    n = slots.shape[0]
    if n == 0:
        return _empty_events()
    if slots.min() < 0 or slots.max() >= state.size:
        raise IndexError("slot out of range")
    if n < 2 or bool((slots[1:] > slots[:-1]).all()):
        return _evaluate_unique(state, slots, ts, values, quality, received_at)
    positions = np.arange(n)
    state._stamp[slots] = positions
    if (state._stamp[slots] == positions).all():
        return _evaluate_unique(state, slots, ts, values, quality, received_at)

    # Duplicates: rank each reading within its slot (0 for the first, 1 for the second, ...).
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    starts = np.r_[True, sorted_slots[1:] != sorted_slots[:-1]]
    first = np.maximum.accumulate(np.where(starts, positions, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = positions - first
    parts = []
    for r in range(int(rank.max()) + 1):
        sel = np.flatnonzero(rank == r)
        parts.append(_evaluate_unique(state, slots[sel], ts[sel], values[sel], quality[sel],
                                      received_at))
    return _concat(parts)


def sweep_stale(state: EngineState, now: float) -> Events:
    """Raise ``stale`` for points not heard from within their stale window (fail safe).

    A substation that stops answering produces no readings at all, so silence itself must
    become an alarm; the bit clears when a fresh reading arrives.
    """
    overdue = ~(state.seen >= now - state.stale_after) & ~(state.bits & STALE).astype(bool)
    slots = np.flatnonzero(overdue)
    if slots.size == 0:
        return _empty_events()
    old = state.bits[slots]
    new = old | STALE
    state.bits[slots] = new
    state.quality[slots] = _STALE
    return _edges(slots, old, new, state.value[slots], np.full(slots.size, now))
