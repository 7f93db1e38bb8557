"""Interlocks (闭锁) over relays, vectorized: engine state in, per-relay lock decisions out.

Three interlocks decide which relays (断电器) must be open, from the per-slot engine arrays
(value, quality, alarm bits, restore limit):

- 风电闭锁 (``LOCK_FAN``): a ventilation zone (a heading with its local fans) is ventilated when
  at least one of its fans runs (value >= 0.5 with quality ok) and none of its wind sensors is
  under its low limit. Main fan stopped, faulty or stale with no standby running → every relay
  of the zone must be cut. Restore is manual, and only when a fan runs and the methane of every
  guarding sensor is below its restore limit.
- 甲烷电闭锁 (``LOCK_METHANE``): a methane sensor whose power-cut range covers the relay holds its
  power-cut bit (value reached the cut limit; the engine keeps the bit until the value falls
  below the restore limit) → the relay may not be energised. Restore is manual.
- 故障闭锁 (``LOCK_FAULT``): a guarding methane sensor is faulty or stale → cut its range (fail
  safe). Unlocks automatically when the sensor is normal again (quality ok and below its
  restore limit), per DOMAIN.md.

A relay's *latched* reasons are the interlocks that have required a cut since its last restore:
the fan and methane latches clear only through ``release`` (a manual restore that the rules
allow), the fault latch clears by itself. ``must_cut`` is ``latched != 0``. Edges are relays whose
latched reasons changed (became locked, unlocked, or changed reason), so a persisting lockout
produces no further events.

Pure functions over numpy arrays gathered through index arrays built once from the mine
(``build_topology``); the per-relay reference lives in ``tests/reference_lockouts.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alarms.engine import CUT, FAULT, STALE, UNDER
from minewatch.readings import Quality

LOCK_FAN, LOCK_METHANE, LOCK_FAULT = (np.uint8(1 << i) for i in range(3))
LOCK_NAMES = {int(LOCK_FAN): "fan", int(LOCK_METHANE): "methane", int(LOCK_FAULT): "fault"}
LOCK_TEXT = {int(LOCK_FAN): "风电闭锁", int(LOCK_METHANE): "甲烷电闭锁",
             int(LOCK_FAULT): "故障闭锁"}

# Why a restore (energising the relay) is not allowed now.
BLOCK_FAN, BLOCK_METHANE, BLOCK_UNTRUSTED = (np.uint8(1 << i) for i in range(3))
BLOCK_NAMES = {int(BLOCK_FAN): "fan_not_running", int(BLOCK_METHANE): "methane_not_below_restore",
               int(BLOCK_UNTRUSTED): "methane_sensor_untrusted"}
BLOCK_TEXT = {int(BLOCK_FAN): "局部通风机未正常运行（或风量不足）",
              int(BLOCK_METHANE): "甲烷浓度未降至复电浓度以下",
              int(BLOCK_UNTRUSTED): "甲烷传感器故障或数据不可信"}

FAN_RUNNING = 0.5  # switch sensor: 1 = running, 0 = stopped
_OK = np.int8(Quality.OK)
_UNTRUSTED_BITS = np.uint8(FAULT | STALE)


def _idx(x: Iterable[int]) -> np.ndarray:
    return np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=np.int64)


@dataclass(frozen=True, slots=True)
class LockoutTopology:
    """Which slots feed which relays, as flat index arrays (one row per membership)."""

    relay_ids: tuple[str, ...]
    zone_ids: tuple[str, ...]  # ventilation zones (one per heading with local fans)
    fan_slot: np.ndarray  # a fan switch point of zone fan_zone[i]
    fan_zone: np.ndarray
    wind_slot: np.ndarray  # a wind point whose low limit means the zone lost its air
    wind_zone: np.ndarray
    zone_relay_zone: np.ndarray  # (zone, relay) pairs: relays cut by the zone's 风电闭锁
    zone_relay_relay: np.ndarray
    guard_slot: np.ndarray  # (methane slot, relay) pairs: the point's power-cut range
    guard_relay: np.ndarray
    fan_ids: tuple[str, ...] = ()  # point ids per fan entry (for messages)
    guard_ids: tuple[str, ...] = ()  # point ids per guard entry
    wind_ids: tuple[str, ...] = ()  # point ids per wind entry

    @property
    def n_relays(self) -> int:
        return len(self.relay_ids)

    @property
    def n_zones(self) -> int:
        return len(self.zone_ids)

    @property
    def relay_index(self) -> dict[str, int]:
        return {r: i for i, r in enumerate(self.relay_ids)}


def topology_from_pairs(relay_ids: Sequence[str], zone_ids: Sequence[str],
                        fans: Iterable[tuple[int, int]], winds: Iterable[tuple[int, int]],
                        zone_relays: Iterable[tuple[int, int]],
                        guards: Iterable[tuple[int, int]], *,
                        fan_ids: Sequence[str] = (), guard_ids: Sequence[str] = (),
                        wind_ids: Sequence[str] = ()) -> LockoutTopology:
    """Build from explicit (slot, zone), (zone, relay) and (slot, relay) index pairs."""
    def split(pairs: Iterable[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        rows = list(pairs)
        return _idx(a for a, _ in rows), _idx(b for _, b in rows)

    fs, fz = split(fans)
    ws, wz = split(winds)
    zz, zr = split(zone_relays)
    gs, gr = split(guards)
    nz, nr = len(zone_ids), len(relay_ids)
    for name, arr, n in (("fan zone", fz, nz), ("wind zone", wz, nz), ("zone", zz, nz),
                         ("zone relay", zr, nr), ("guard relay", gr, nr)):
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ValueError(f"{name} index out of range")
    return LockoutTopology(tuple(relay_ids), tuple(zone_ids), fs, fz, ws, wz, zz, zr, gs, gr,
                           tuple(fan_ids), tuple(guard_ids), tuple(wind_ids))


def build_topology(mine: Any, slot_of: Mapping[str, int] | None = None, *,
                   cut_limits: Sequence[float] | np.ndarray | None = None,
                   zones: Mapping[str, Sequence[str]] | None = None,
                   wind: bool = True) -> LockoutTopology:
    """Derive the interlock topology from a ``minewatch.mine.Mine``.

    - Zones: by default the fan (``kind = "fan"``) points grouped by their area (main and
      standby local fans of one heading share it); ``zones`` maps zone id → fan point ids to
      override. A zone's relays are those of the union of its fans' ``cut_areas`` (default:
      the fan's own area): on the sample mine 002D01/002D02 → 002C01 (heading) and 002C02
      (roadheader).
    - Wind: with ``wind``, the wind points located in a zone's cut areas (air lost → lockout).
    - Guards: every methane point with a power-cut limit guards the relays of its power-cut
      range (``Mine.cut_relays``). ``cut_limits`` (e.g. the engine's ``cut`` array, by slot)
      drops alarm-only points (NaN); without it every methane point guards its range.
    ``slot_of`` maps point id → engine slot (default: the order of ``mine.points``).
    """
    if slot_of is None:
        slot_of = {p.id: i for i, p in enumerate(mine.points)}
    relay_ids = [r.id for r in mine.relays]
    relay_index = {r: i for i, r in enumerate(relay_ids)}
    points = mine.point_by_id
    if zones is None:
        grouped: dict[str, list[str]] = {}
        for p in mine.points:
            if p.kind == "fan":
                grouped.setdefault(p.area, []).append(p.id)
        zones = grouped
    zone_ids = list(zones)
    fans, winds, zone_relays, fan_ids, wind_ids = [], [], [], [], []
    for z, zone in enumerate(zone_ids):
        areas: set[str] = set()
        for fid in zones[zone]:
            fan = points[fid]
            if fan.kind != "fan":
                raise ValueError(f"zone {zone}: point {fid} is not a fan switch point")
            fans.append((slot_of[fid], z))
            fan_ids.append(fid)
            areas.update(fan.cut_areas or [fan.area])
        zone_relays += [(z, relay_index[r.id]) for r in mine.relays if r.area in areas]
        if wind:
            for p in mine.points:
                if p.kind == "wind" and p.area in areas:
                    winds.append((slot_of[p.id], z))
                    wind_ids.append(p.id)
    guards, guard_ids = [], []
    for p in mine.points:
        if p.kind != "ch4":
            continue
        s = slot_of[p.id]
        if cut_limits is not None and not np.isfinite(cut_limits[s]):
            continue
        for r in mine.cut_relays(p):
            guards.append((s, relay_index[r.id]))
            guard_ids.append(p.id)
    return topology_from_pairs(relay_ids, zone_ids, fans, winds, zone_relays, guards,
                               fan_ids=fan_ids, guard_ids=guard_ids, wind_ids=wind_ids)


@dataclass(slots=True)
class LockoutState:
    latched: np.ndarray  # uint8 per relay: LOCK_* bits latched since the last restore


def new_lockout_state(topo: LockoutTopology) -> LockoutState:
    return LockoutState(np.zeros(topo.n_relays, dtype=np.uint8))


@dataclass(slots=True)
class LockoutEdges:
    """Relays whose latched reasons changed: old → new LOCK_* bits."""

    relays: np.ndarray  # int32 relay index
    old: np.ndarray  # uint8
    new: np.ndarray  # uint8

    def __len__(self) -> int:
        return int(self.relays.shape[0])

    @property
    def locked(self) -> np.ndarray:
        """Mask: the relay became locked (must be cut now)."""
        return (self.old == 0) & (self.new != 0)

    @property
    def unlocked(self) -> np.ndarray:
        return (self.old != 0) & (self.new == 0)

    def rows(self, topo: LockoutTopology) -> list[tuple[str, int, int]]:
        return [(topo.relay_ids[r], int(o), int(n))
                for r, o, n in zip(self.relays, self.old, self.new, strict=True)]


@dataclass(slots=True)
class LockoutResult:
    condition: np.ndarray  # uint8 per relay: LOCK_* conditions present now
    latched: np.ndarray  # uint8 per relay: reason code (conditions latched since restore)
    must_cut: np.ndarray  # bool per relay: latched != 0
    restore_block: np.ndarray  # uint8 per relay: BLOCK_* bits, why energising is refused now
    restore_allowed: np.ndarray  # bool per relay: restore_block == 0
    auto_unlock: np.ndarray  # bool per relay: unlocked by itself now (故障闭锁 cleared)
    ventilated: np.ndarray  # bool per zone
    edges: LockoutEdges


def _any_by(group: np.ndarray, flags: np.ndarray, n: int) -> np.ndarray:
    """Per group: any flag set (flags and group aligned)."""
    if group.size == 0:
        return np.zeros(n, dtype=bool)
    return np.bincount(group, weights=flags.astype(np.float64), minlength=n) > 0


def _edges(old: np.ndarray, new: np.ndarray) -> LockoutEdges:
    changed = np.flatnonzero(old != new)
    return LockoutEdges(changed.astype(np.int32), old[changed], new[changed])


def evaluate_lockouts(topo: LockoutTopology, state: LockoutState, value: np.ndarray,
                      quality: np.ndarray, bits: np.ndarray,
                      restore: np.ndarray) -> LockoutResult:
    """Decide every relay's lock from the per-slot engine arrays; mutates ``state.latched``.

    ``value``, ``quality``, ``bits`` and ``restore`` are the engine's ``EngineState`` arrays
    (after ``evaluate`` / ``sweep_stale``). Call after every batch and stale sweep.
    """
    nr, nz = topo.n_relays, topo.n_zones
    # Zones: ventilated when a fan runs (known running: quality ok) and no wind is too low.
    fan_running = (quality[topo.fan_slot] == _OK) & (value[topo.fan_slot] >= FAN_RUNNING)
    air_lost = (bits[topo.wind_slot] & UNDER) != 0
    ventilated = _any_by(topo.fan_zone, fan_running, nz) & ~_any_by(topo.wind_zone, air_lost, nz)
    fan_cond = _any_by(topo.zone_relay_relay, ~ventilated[topo.zone_relay_zone], nr)

    gs = topo.guard_slot
    g_bits, g_val = bits[gs], value[gs]
    g_cut = (g_bits & CUT) != 0
    g_fault = (g_bits & _UNTRUSTED_BITS) != 0
    g_trusted = (quality[gs] == _OK) & np.isfinite(g_val)
    with np.errstate(invalid="ignore"):
        g_high = g_cut | (g_trusted & ~(g_val < restore[gs]))
    meth_cond = _any_by(topo.guard_relay, g_cut, nr)
    fault_cond = _any_by(topo.guard_relay, g_fault, nr)
    block_meth = _any_by(topo.guard_relay, g_high, nr)
    block_untrusted = _any_by(topo.guard_relay, ~g_trusted, nr)

    condition = ((fan_cond * LOCK_FAN) | (meth_cond * LOCK_METHANE)
                 | (fault_cond * LOCK_FAULT)).astype(np.uint8)
    block = ((fan_cond * BLOCK_FAN) | (block_meth * BLOCK_METHANE)
             | (block_untrusted * BLOCK_UNTRUSTED)).astype(np.uint8)

    old = state.latched
    latched = old | condition
    # 故障闭锁 unlocks by itself once its sensors are normal: trusted and below restore.
    fault_over = ~fault_cond & ~block_meth & ~block_untrusted
    latched = np.where(fault_over, latched & ~LOCK_FAULT, latched).astype(np.uint8)
    state.latched = latched
    return LockoutResult(
        condition=condition, latched=latched.copy(), must_cut=latched != 0, restore_block=block,
        restore_allowed=block == 0, auto_unlock=(old != 0) & (latched == 0),
        ventilated=ventilated, edges=_edges(old, latched))


def release(state: LockoutState, result: LockoutResult,
            relays: Sequence[int] | np.ndarray) -> tuple[np.ndarray, LockoutEdges]:
    """A manual restore request: clear the latches of the requested relays where allowed.

    ``result`` must be the latest ``evaluate_lockouts`` over the current engine state. Returns
    a mask (per requested relay) of the ones released, and the edges (became unlocked). A
    refused relay's reasons are ``result.restore_block[relay]``.
    """
    relays = _idx(relays)
    allowed = result.restore_allowed[relays]
    old = state.latched.copy()
    state.latched[relays[allowed]] = 0
    result.latched[:] = state.latched
    result.must_cut[:] = state.latched != 0
    return allowed, _edges(old, state.latched)


LOCKOUT_EVENT = "lockout_changed"  # journal event of a relay's latched reasons changing


def journal_entries(topo: LockoutTopology, edges: LockoutEdges, *,
                    by: str = "engine") -> list[tuple[str, str, dict[str, Any]]]:
    """(event, subject, data) rows to journal for lockout edges; ``by`` = user on release."""
    out = []
    for relay, old, new in edges.rows(topo):
        out.append((LOCKOUT_EVENT, relay, {
            "relay": relay, "old": old, "new": new, "by": by,
            "locks": bit_names(new, LOCK_NAMES), "text": lock_text(new),
            "change": "locked" if not old and new else "unlocked" if old and not new
            else "reasons"}))
    return out


def latches_from_journal(topo: LockoutTopology, state: LockoutState,
                         rows: Iterable[Any]) -> None:
    """After a restart: each relay's latch is the ``new`` of its last journaled change, so a
    fan or methane lockout still needs its manual restore (rows in journal order)."""
    index = topo.relay_index
    for row in rows:
        get = row.get if isinstance(row, dict) else (lambda k, r=row: getattr(r, k, None))
        data = get("data") or {}
        if get("event") == LOCKOUT_EVENT and data.get("relay") in index:
            state.latched[index[data["relay"]]] = np.uint8(int(data.get("new") or 0))


def bit_names(bits: int, names: Mapping[int, str]) -> list[str]:
    return [name for bit, name in names.items() if int(bits) & bit]


def lock_text(bits: int) -> str:
    """e.g. "风电闭锁+故障闭锁"."""
    return "+".join(bit_names(bits, LOCK_TEXT))


def block_text(bits: int) -> str:
    return "; ".join(bit_names(bits, BLOCK_TEXT))


def explain(topo: LockoutTopology, relay: int, value: np.ndarray, quality: np.ndarray,
            bits: np.ndarray, restore: np.ndarray) -> dict[str, list[str]]:
    """Which points hold a relay (for messages and the API); not on the hot path."""
    zones = set(topo.zone_relay_zone[topo.zone_relay_relay == relay].tolist())
    out: dict[str, list[str]] = {"fans_running": [], "fans_not_running": [], "wind_low": [],
                                 "methane_cut": [], "methane_not_below_restore": [],
                                 "sensor_untrusted": []}
    for i in np.flatnonzero(np.isin(topo.fan_zone, list(zones))):
        s = topo.fan_slot[i]
        name = topo.fan_ids[i] if topo.fan_ids else str(s)
        running = quality[s] == _OK and value[s] >= FAN_RUNNING
        out["fans_running" if running else "fans_not_running"].append(name)
    for i in np.flatnonzero(np.isin(topo.wind_zone, list(zones))):
        if bits[topo.wind_slot[i]] & UNDER:
            out["wind_low"].append(topo.wind_ids[i] if topo.wind_ids else
                                   str(topo.wind_slot[i]))
    for i in np.flatnonzero(topo.guard_relay == relay):
        s = topo.guard_slot[i]
        name = topo.guard_ids[i] if topo.guard_ids else str(s)
        trusted = quality[s] == _OK and np.isfinite(value[s])
        if bits[s] & CUT:
            out["methane_cut"].append(name)
        if not trusted:
            out["sensor_untrusted"].append(name)
        elif not value[s] < restore[s]:
            out["methane_not_below_restore"].append(name)
    return out
