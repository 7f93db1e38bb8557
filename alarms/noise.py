"""Alarm noise control (ISA-18.2 / EEMUA 191), vectorized: on/off-delay, chattering, flood.

The engine's edge events are filtered in three stages before they reach the operator:

1. **On-delay / off-delay** per alarm channel: a condition must persist ``on_delay_s`` before it
   is raised and be gone for ``off_delay_s`` before it is cleared; a condition that reverts
   within its delay produces nothing. The time reported for a delayed edge is the moment the
   delay expired (``since + delay``), whatever the sweep granularity, and ``since`` keeps the
   condition's real start for the record. Safety-critical kinds (methane ``power_cut_limit``,
   ``cut_unverified``) may not be delayed: the regulation allows 2 s to the cut.
2. **Chattering**: ``activations`` raises of one channel within ``window_s`` → the channel is
   chattering (a record with the time and count); further transitions are not annunciated
   until it has been stable (no transition) for ``stable_s``, then the chatter ends (record)
   and the channel is shown in its real state. Safety-critical channels are flagged but never
   silenced.
3. **Flood**, per operator position: more than ``start_above`` annunciated alarms within
   ``window_s`` → flood start; the flood ends at the instant fewer than ``end_below`` remain in
   the window. Records carry the start, the end, the alarms annunciated during it and the
   peak count per window.

Deadband is the engine's (alarms/engine.py). Everything is a pure function over arrays with
explicit times (no sleeps, no clock reads); ``NoiseControl`` bundles the stages with an
injectable clock for the service. A channel is an (engine slot, alarm kind) pair:
``channel = slot * len(kinds) + kind``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from alarms.engine import ALARM_KINDS

SAFETY_CRITICAL = frozenset({"power_cut_limit", "cut_unverified"})


# --- parameters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DelayParams:
    on_delay_s: float = 0.0
    off_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ChatterParams:
    activations: int = 3  # ≥ 3 activations in one minute: chattering (ISA-18.2 TR5, EEMUA 191)
    window_s: float = 60.0
    stable_s: float = 60.0  # no transition for this long ends the chatter


@dataclass(frozen=True, slots=True)
class FloodParams:
    window_s: float = 600.0  # 10 minutes
    start_above: int = 10  # more than 10 alarms per 10 min per position: flood starts
    end_below: int = 5  # fewer than 5 per 10 min: flood ends
    capacity: int = 256  # alarm times kept per position (peak counts saturate here)


@dataclass(frozen=True, slots=True)
class NoiseParams:
    delays: Mapping[str, DelayParams] = field(default_factory=dict)  # alarm kind → delays
    chatter: ChatterParams = ChatterParams()
    flood: FloodParams = FloodParams()

    def delay(self, kind: str) -> DelayParams:
        return self.delays.get(kind, DelayParams())


def channel_arrays(n_slots: int, params: NoiseParams,
                   kinds: Sequence[str] = ALARM_KINDS) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """Per-channel (on_delay, off_delay, critical) arrays for ``n_slots`` × ``kinds``.

    Raises ValueError when a safety-critical kind is given an on-delay.
    """
    on, off = np.empty(len(kinds)), np.empty(len(kinds))
    crit = np.zeros(len(kinds), dtype=bool)
    for k, kind in enumerate(kinds):
        d = params.delay(kind)
        if d.on_delay_s < 0 or d.off_delay_s < 0:
            raise ValueError(f"{kind}: delays must be >= 0")
        if kind in SAFETY_CRITICAL and d.on_delay_s > 0:
            raise ValueError(f"{kind} is safety-critical: no on-delay allowed "
                             "(methane power cut within 2 s)")
        on[k], off[k], crit[k] = d.on_delay_s, d.off_delay_s, kind in SAFETY_CRITICAL
    return np.tile(on, n_slots), np.tile(off, n_slots), np.tile(crit, n_slots)


def channel_of(slots, kinds, n_kinds: int = len(ALARM_KINDS)) -> np.ndarray:
    return np.asarray(slots, dtype=np.int64) * n_kinds + np.asarray(kinds, dtype=np.int64)


# --- shared helpers ------------------------------------------------------------------------


@dataclass(slots=True)
class Edges:
    """Filtered alarm edges, in time order of when they were decided."""

    channels: np.ndarray  # int64
    raised: np.ndarray  # bool
    at: np.ndarray  # float64: when the edge takes effect
    since: np.ndarray  # float64: when the condition began (raises) / ended (clears)

    def __len__(self) -> int:
        return int(self.channels.shape[0])

    def rows(self) -> list[tuple[int, bool, float, float]]:
        return list(zip(self.channels.tolist(), self.raised.tolist(), self.at.tolist(),
                        self.since.tolist(), strict=True))


def _edges(channels=(), raised=(), at=(), since=()) -> Edges:
    return Edges(np.asarray(channels, dtype=np.int64), np.asarray(raised, dtype=bool),
                 np.asarray(at, dtype=np.float64), np.asarray(since, dtype=np.float64))


def _cat(parts: list[Edges]) -> Edges:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _edges()
    if len(parts) == 1:
        return parts[0]
    return Edges(*(np.concatenate([getattr(p, f) for p in parts]) for f in Edges.__slots__))


def _rounds(keys: np.ndarray) -> Iterator[np.ndarray]:
    """Index sets in which every key appears once, keeping each key's inputs in order."""
    n = keys.shape[0]
    if n == 0:
        return
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    starts = np.r_[True, sk[1:] != sk[:-1]]
    pos = np.arange(n)
    first = np.maximum.accumulate(np.where(starts, pos, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = pos - first
    if rank.max() == 0:
        yield np.arange(n)
        return
    for r in range(int(rank.max()) + 1):
        yield np.flatnonzero(rank == r)


# --- stage 1: on-delay / off-delay -------------------------------------------------------------


@dataclass(slots=True)
class DelayState:
    on_delay: np.ndarray
    off_delay: np.ndarray
    raw: np.ndarray  # bool: latest condition
    out: np.ndarray  # bool: filtered (delayed) condition
    since: np.ndarray  # float: when ``raw`` last changed

    @property
    def size(self) -> int:
        return int(self.raw.shape[0])


def new_delay_state(on_delay, off_delay) -> DelayState:
    on = np.asarray(on_delay, dtype=np.float64).copy()
    off = np.asarray(off_delay, dtype=np.float64).copy()
    n = on.shape[0]
    return DelayState(on, off, np.zeros(n, bool), np.zeros(n, bool), np.full(n, -np.inf))


def _mature(state: DelayState, ch: np.ndarray, now: float | np.ndarray) -> Edges:
    raw, out, since = state.raw[ch], state.out[ch], state.since[ch]
    delay = np.where(raw, state.on_delay[ch], state.off_delay[ch])
    due = since + delay
    ripe = (raw != out) & (due <= now)
    if not ripe.any():
        return _edges()
    c = ch[ripe]
    state.out[c] = raw[ripe]
    e = _edges(c, raw[ripe], due[ripe], since[ripe])
    return _sorted(e)


def _sorted(e: Edges) -> Edges:
    if len(e) < 2:
        return e
    o = np.argsort(e.at, kind="stable")
    return Edges(e.channels[o], e.raised[o], e.at[o], e.since[o])


def delay_step(state: DelayState, channels, raw, at) -> Edges:
    """Apply condition changes (channel, new raw condition, time); returns filtered edges.

    Inputs must be in time order per channel. A delay that expired before ``at`` is resolved
    first (with its own expiry time), so no sweep is needed between inputs for correctness.
    """
    channels = np.asarray(channels, dtype=np.int64)
    raw = np.asarray(raw, dtype=bool)
    at = np.broadcast_to(np.asarray(at, dtype=np.float64), channels.shape)
    parts = []
    for sel in _rounds(channels):
        ch, r, t = channels[sel], raw[sel], at[sel]
        parts.append(_mature(state, ch, t))
        changed = r != state.raw[ch]
        state.since[ch[changed]] = t[changed]
        state.raw[ch] = r
        parts.append(_mature(state, ch, t))  # zero delays take effect at once
    return _cat(parts)


def delay_sweep(state: DelayState, now: float) -> Edges:
    """Resolve every delay that has expired by ``now`` (call periodically)."""
    pending = np.flatnonzero(state.raw != state.out)
    return _mature(state, pending, now) if pending.size else _edges()


# --- stage 2: chattering -------------------------------------------------------------------------


@dataclass(slots=True)
class ChatterEvents:
    channels: np.ndarray  # int64
    started: np.ndarray  # bool: True = chattering began, False = ended (stable again)
    at: np.ndarray  # float64
    count: np.ndarray  # int64: activations in the window at start; total while chattering at end

    def __len__(self) -> int:
        return int(self.channels.shape[0])

    def rows(self) -> list[tuple[int, bool, float, int]]:
        return list(zip(self.channels.tolist(), self.started.tolist(), self.at.tolist(),
                        self.count.tolist(), strict=True))


def _chatter_events(channels=(), started=(), at=(), count=()) -> ChatterEvents:
    return ChatterEvents(np.asarray(channels, dtype=np.int64), np.asarray(started, dtype=bool),
                         np.asarray(at, dtype=np.float64), np.asarray(count, dtype=np.int64))


def _cat_chatter(parts: list[ChatterEvents]) -> ChatterEvents:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _chatter_events()
    return ChatterEvents(*(np.concatenate([getattr(p, f) for p in parts])
                           for f in ChatterEvents.__slots__))


@dataclass(slots=True)
class ChatterState:
    params: ChatterParams
    critical: np.ndarray  # bool: flagged but never silenced
    ring: np.ndarray  # float [n, activations]: last activation times
    ptr: np.ndarray  # int: next ring position
    chattering: np.ndarray  # bool
    since: np.ndarray  # float: chatter start
    count: np.ndarray  # int: activations while chattering
    last_change: np.ndarray  # float: last transition (for stability)
    cond: np.ndarray  # bool: condition as received
    shown: np.ndarray  # bool: condition as annunciated


def new_chatter_state(n: int, params: ChatterParams = ChatterParams(),
                      critical=None) -> ChatterState:
    if params.activations < 2:
        raise ValueError("chattering needs at least 2 activations")
    crit = np.zeros(n, bool) if critical is None else np.asarray(critical, dtype=bool).copy()
    return ChatterState(params, crit, np.full((n, params.activations), -np.inf),
                        np.zeros(n, np.int64), np.zeros(n, bool), np.full(n, np.nan),
                        np.zeros(n, np.int64), np.full(n, -np.inf), np.zeros(n, bool),
                        np.zeros(n, bool))


def _chatter_end(state: ChatterState, ch: np.ndarray, now) -> tuple[ChatterEvents, Edges]:
    """End chattering where the channel has been stable for ``stable_s`` by ``now``."""
    due = state.last_change[ch] + state.params.stable_s
    done = state.chattering[ch] & (due <= now)
    if not done.any():
        return _chatter_events(), _edges()
    c, t = ch[done], due[done]
    state.chattering[c] = False
    records = _chatter_events(c, np.zeros(c.size, bool), t, state.count[c])
    show = state.shown[c] != state.cond[c]
    cs = c[show]
    state.shown[cs] = state.cond[cs]
    edges = _edges(cs, state.cond[cs], t[show], state.last_change[cs])
    return records, edges


def chatter_step(state: ChatterState, edges: Edges) -> tuple[Edges, ChatterEvents]:
    """Filter edges (e.g. from ``delay_step``); returns (annunciated edges, chatter records)."""
    out: list[Edges] = []
    recs: list[ChatterEvents] = []
    k, win = state.params.activations, state.params.window_s
    for sel in _rounds(edges.channels):
        ch, raised, at, since = (edges.channels[sel], edges.raised[sel], edges.at[sel],
                                 edges.since[sel])
        r, e = _chatter_end(state, ch, at)
        recs.append(r)
        out.append(e)
        act = ch[raised]
        p = state.ptr[act]
        state.ring[act, p] = at[raised]
        state.ptr[act] = (p + 1) % k
        oldest = np.full(ch.size, -np.inf)
        oldest[raised] = state.ring[act, state.ptr[act]]
        starts = raised & ~state.chattering[ch] & (oldest >= at - win)
        cs = ch[starts]
        state.chattering[cs] = True
        state.since[cs] = at[starts]
        state.count[cs] = 0
        state.count[act] += state.chattering[act]
        recs.append(_chatter_events(cs, np.ones(cs.size, bool), at[starts],
                                    np.full(cs.size, k)))
        state.last_change[ch] = at
        state.cond[ch] = raised
        loud = ~state.chattering[ch] | state.critical[ch]
        show = loud & (state.shown[ch] != raised)
        state.shown[ch[show]] = raised[show]
        out.append(_edges(ch[show], raised[show], at[show], since[show]))
    return _cat(out), _cat_chatter(recs)


def chatter_sweep(state: ChatterState, now: float) -> tuple[Edges, ChatterEvents]:
    ch = np.flatnonzero(state.chattering)
    if ch.size == 0:
        return _edges(), _chatter_events()
    recs, edges = _chatter_end(state, ch, now)
    return edges, recs


# --- stage 3: flood per operator position ------------------------------------------------------


@dataclass(slots=True)
class FloodEvents:
    positions: np.ndarray  # int64
    started: np.ndarray  # bool
    at: np.ndarray  # float64
    alarms: np.ndarray  # int64: alarms annunciated during the episode (at end; at start: window)
    peak: np.ndarray  # int64: highest count per window during the episode

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def rows(self) -> list[tuple[int, bool, float, int, int]]:
        return list(zip(self.positions.tolist(), self.started.tolist(), self.at.tolist(),
                        self.alarms.tolist(), self.peak.tolist(), strict=True))


def _flood_events(pos=(), started=(), at=(), alarms=(), peak=()) -> FloodEvents:
    return FloodEvents(np.asarray(pos, dtype=np.int64), np.asarray(started, dtype=bool),
                       np.asarray(at, dtype=np.float64), np.asarray(alarms, dtype=np.int64),
                       np.asarray(peak, dtype=np.int64))


def _cat_flood(parts: list[FloodEvents]) -> FloodEvents:
    parts = [p for p in parts if len(p)]
    if not parts:
        return _flood_events()
    return FloodEvents(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in FloodEvents.__slots__))


@dataclass(slots=True)
class FloodState:
    params: FloodParams
    ring: np.ndarray  # float [positions, capacity]: annunciation times, chronological ring
    ptr: np.ndarray
    flooding: np.ndarray  # bool
    since: np.ndarray  # float: flood start
    alarms: np.ndarray  # int: alarms during the current flood
    peak: np.ndarray  # int: peak window count during the current flood


def new_flood_state(n_positions: int, params: FloodParams = FloodParams()) -> FloodState:
    if not params.capacity > params.start_above >= params.end_below >= 1:
        raise ValueError("need capacity > start_above >= end_below >= 1")
    n = n_positions
    return FloodState(params, np.full((n, params.capacity), -np.inf), np.zeros(n, np.int64),
                      np.zeros(n, bool), np.full(n, np.nan), np.zeros(n, np.int64),
                      np.zeros(n, np.int64))


def _kth_recent(state: FloodState, pos: np.ndarray, k: int) -> np.ndarray:
    """The k-th most recent alarm time per position (order-independent within the ring)."""
    cap = state.params.capacity
    return np.partition(state.ring[pos], cap - k, axis=1)[:, cap - k]


def _flood_end(state: FloodState, pos: np.ndarray, now) -> FloodEvents:
    p = state.params
    # The count falls below end_below when the end_below-th most recent alarm leaves the window.
    due = _kth_recent(state, pos, p.end_below) + p.window_s
    done = state.flooding[pos] & (due <= now)
    if not done.any():
        return _flood_events()
    ps = pos[done]
    state.flooding[ps] = False
    return _flood_events(ps, np.zeros(ps.size, bool), due[done], state.alarms[ps],
                         state.peak[ps])


def flood_step(state: FloodState, positions, at) -> FloodEvents:
    """Count annunciated alarms (position, time) in time order; returns flood start/end."""
    positions = np.asarray(positions, dtype=np.int64)
    at = np.broadcast_to(np.asarray(at, dtype=np.float64), positions.shape)
    p = state.params
    parts = []
    for sel in _rounds(positions):
        pos, t = positions[sel], at[sel]
        parts.append(_flood_end(state, pos, t))
        state.ring[pos, state.ptr[pos]] = t
        state.ptr[pos] = (state.ptr[pos] + 1) % p.capacity
        count = (state.ring[pos] > (t - p.window_s)[:, None]).sum(axis=1)
        state.alarms[pos] += state.flooding[pos]
        state.peak[pos] = np.where(state.flooding[pos], np.maximum(state.peak[pos], count),
                                   state.peak[pos])
        starts = ~state.flooding[pos] & (count > p.start_above)
        ps = pos[starts]
        state.flooding[ps] = True
        state.since[ps] = t[starts]
        state.alarms[ps] = count[starts]
        state.peak[ps] = count[starts]
        parts.append(_flood_events(ps, np.ones(ps.size, bool), t[starts], count[starts],
                                   count[starts]))
    return _cat_flood(parts)


def flood_sweep(state: FloodState, now: float) -> FloodEvents:
    pos = np.flatnonzero(state.flooding)
    return _flood_end(state, pos, now) if pos.size else _flood_events()


def window_count(state: FloodState, now: float) -> np.ndarray:
    """Alarms per position in the window ending at ``now`` (saturates at capacity)."""
    return (state.ring > now - state.params.window_s).sum(axis=1)


# --- the three stages together -----------------------------------------------------------------


@dataclass(slots=True)
class NoiseOutput:
    edges: Edges  # annunciate these (raise / clear)
    chatter: ChatterEvents
    flood: FloodEvents


class NoiseControl:
    """Delay → chatter → flood for ``n_slots`` engine slots, with an injectable clock.

    ``position_of_slot`` gives each slot's operator position index (default: one position).
    """

    def __init__(self, n_slots: int, params: NoiseParams = NoiseParams(), *,
                 position_of_slot: Sequence[int] | np.ndarray | None = None,
                 kinds: Sequence[str] = ALARM_KINDS,
                 clock: Callable[[], float] = time.time) -> None:
        self.params, self.kinds, self.clock = params, tuple(kinds), clock
        on, off, crit = channel_arrays(n_slots, params, self.kinds)
        self.delay = new_delay_state(on, off)
        self.chatter = new_chatter_state(on.shape[0], params.chatter, crit)
        pos = (np.zeros(n_slots, np.int64) if position_of_slot is None
               else np.asarray(position_of_slot, dtype=np.int64))
        self.position_of_channel = np.repeat(pos, len(self.kinds))
        self.flood = new_flood_state(int(pos.max(initial=0)) + 1, params.flood)

    def channel(self, slots, kinds) -> np.ndarray:
        return channel_of(slots, kinds, len(self.kinds))

    def split(self, channels) -> tuple[np.ndarray, np.ndarray]:
        """Channels → (slots, kind indices)."""
        return np.divmod(np.asarray(channels, dtype=np.int64), len(self.kinds))

    def resume(self, channels) -> None:
        """After a restart: these channels' alarms are open and active (no new edge)."""
        ch = np.asarray(channels, dtype=np.int64)
        self.delay.raw[ch] = self.delay.out[ch] = True
        self.chatter.cond[ch] = self.chatter.shown[ch] = True

    def count(self, positions, at) -> FloodEvents:
        """Count annunciated alarms that do not pass the delay/chatter stages (e.g. trend,
        interlock, sensor-integrity alarms) towards their position's flood detector."""
        return flood_step(self.flood, np.asarray(positions, dtype=np.int64),
                          np.asarray(at, dtype=np.float64))

    def _flood(self, shown: Edges) -> FloodEvents:
        r = shown.raised
        return flood_step(self.flood, self.position_of_channel[shown.channels[r]], shown.at[r])

    def step(self, slots, kinds, raised, at=None) -> NoiseOutput:
        """Engine edges in (slot, kind index, raised, time; time defaults to the clock).

        Inputs are taken in time order, one distinct time at a time, and everything due
        before each time (delays, chatter ends, flood ends) is resolved first, so every stage
        sees events in time order whatever the batch holds.
        """
        ch = self.channel(slots, kinds)
        raised = np.broadcast_to(np.asarray(raised, dtype=bool), ch.shape)
        when = np.broadcast_to(np.asarray(self.clock() if at is None else at,
                                          dtype=np.float64), ch.shape)
        outs = []
        for t in np.unique(when):
            sel = np.flatnonzero(when == t)
            outs.append(self.sweep(float(t)))
            shown, recs = chatter_step(self.chatter,
                                       delay_step(self.delay, ch[sel], raised[sel], t))
            shown = _sorted(shown)
            outs.append(NoiseOutput(shown, recs, self._flood(shown)))
        return NoiseOutput(_cat([o.edges for o in outs]),
                           _cat_chatter([o.chatter for o in outs]),
                           _cat_flood([o.flood for o in outs]))

    def sweep(self, now: float | None = None) -> NoiseOutput:
        """Resolve what time alone decides: expired delays, stable chatter, flood ends."""
        now = self.clock() if now is None else now
        s1, r1 = chatter_step(self.chatter, delay_sweep(self.delay, now))
        s2, r2 = chatter_sweep(self.chatter, now)
        shown = _sorted(_cat([s1, s2]))
        flood = _cat_flood([self._flood(shown), flood_sweep(self.flood, now)])
        return NoiseOutput(shown, _cat_chatter([r1, r2]), flood)


def positions_from_mine(mine, position_of_area: Mapping[str, int] | None = None,
                        default: int = 0) -> np.ndarray:
    """Operator position per point slot: by area (e.g. dispatch desks), default one position."""
    mapping = position_of_area or {}
    return np.array([mapping.get(p.area, default) for p in mine.points], dtype=np.int64)
