"""Interlocks: vectorized lockouts ≡ per-relay reference, and scenarios on the sample mine."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alarms.engine import CUT, FAULT, new_state, sweep_stale
from alarms.engine import evaluate as engine_evaluate
from alarms.lockouts import (
    BLOCK_FAN,
    BLOCK_METHANE,
    BLOCK_UNTRUSTED,
    LOCK_FAN,
    LOCK_FAULT,
    LOCK_METHANE,
    block_text,
    build_topology,
    evaluate_lockouts,
    explain,
    lock_text,
    new_lockout_state,
    release,
    topology_from_pairs,
)
from minewatch.mine import Mine, Thresholds, resolve_limits
from minewatch.readings import Quality
from tests.reference_lockouts import ReferenceLockouts, RefZone

NAMES = {"fan": int(LOCK_FAN), "methane": int(LOCK_METHANE), "fault": int(LOCK_FAULT)}
BLOCKS = {"fan": int(BLOCK_FAN), "methane": int(BLOCK_METHANE),
          "untrusted": int(BLOCK_UNTRUSTED)}


def _bits(names: set[str], table: dict[str, int]) -> int:
    return sum(table[n] for n in names)


# --- property: vectorized ≡ reference ---------------------------------------------------------

@st.composite
def topologies(draw):
    n_slots = draw(st.integers(1, 8))
    n_relays = draw(st.integers(1, 5))
    n_zones = draw(st.integers(0, 3))
    slot = st.integers(0, n_slots - 1)
    relay = st.integers(0, n_relays - 1)
    zones = [RefZone(fans=draw(st.lists(slot, max_size=3, unique=True)),
                     winds=draw(st.lists(slot, max_size=2, unique=True)),
                     relays=draw(st.lists(relay, max_size=3, unique=True)))
             for _ in range(n_zones)]
    guards: dict[int, list[int]] = {}
    for s in draw(st.lists(slot, max_size=6, unique=True)):
        for r in draw(st.lists(relay, min_size=1, max_size=3, unique=True)):
            guards.setdefault(r, []).append(s)
    restore = [draw(st.sampled_from([0.5, 1.0, 1.0])) for _ in range(n_slots)]
    return n_slots, n_relays, zones, guards, restore


value_st = st.sampled_from([0.0, 0.0, 1.0, 1.0, 0.4, 0.5, 0.6, 0.99, 1.0, 1.2, 1.6, -0.1,
                            math.nan])
quality_st = st.sampled_from([int(q) for q in Quality] + [0, 0, 0, 0])
bits_st = st.sampled_from([0, 0, 0, 1, 2, 3, 4, 8, 16, 6, 10, 24, 31])


@settings(max_examples=300, deadline=None)
@given(topologies(), st.data())
def test_vectorized_lockouts_match_reference(topo_desc, data):
    n_slots, n_relays, zones, guards, restore = topo_desc
    topo = topology_from_pairs(
        [f"R{i}" for i in range(n_relays)], [f"Z{i}" for i in range(len(zones))],
        fans=[(s, z) for z, zone in enumerate(zones) for s in zone.fans],
        winds=[(s, z) for z, zone in enumerate(zones) for s in zone.winds],
        zone_relays=[(z, r) for z, zone in enumerate(zones) for r in zone.relays],
        guards=[(s, r) for r, slots in guards.items() for s in slots])
    state = new_lockout_state(topo)
    ref = ReferenceLockouts(n_relays, zones, guards)
    restore_arr = np.array(restore)
    for _ in range(data.draw(st.integers(1, 10))):
        value = np.array(data.draw(st.lists(value_st, min_size=n_slots, max_size=n_slots)))
        quality = np.array(data.draw(st.lists(quality_st, min_size=n_slots, max_size=n_slots)),
                           dtype=np.int8)
        bits = np.array(data.draw(st.lists(bits_st, min_size=n_slots, max_size=n_slots)),
                        dtype=np.uint8)
        got = evaluate_lockouts(topo, state, value, quality, bits, restore_arr)
        want = ref.evaluate(value.tolist(), quality.tolist(), bits.tolist(), restore)
        assert got.condition.tolist() == [_bits(c, NAMES) for c in want["condition"]]
        assert got.latched.tolist() == [_bits(c, NAMES) for c in want["latched"]]
        assert got.must_cut.tolist() == [bool(c) for c in want["latched"]]
        assert got.restore_block.tolist() == [_bits(b, BLOCKS) for b in want["block"]]
        assert got.restore_allowed.tolist() == [not b for b in want["block"]]
        assert got.auto_unlock.tolist() == want["auto"]
        assert list(zip(got.edges.relays.tolist(), got.edges.old.tolist(),
                        got.edges.new.tolist(), strict=True)) == \
            [(r, _bits(o, NAMES), _bits(n, NAMES)) for r, o, n in want["edges"]]
        if data.draw(st.booleans()):
            req = data.draw(st.lists(st.integers(0, n_relays - 1), max_size=3, unique=True))
            done, edges = release(state, got, req)
            assert done.tolist() == ref.release(req)
            assert state.latched.tolist() == [_bits(c, NAMES) for c in ref.latched]
            assert edges.unlocked.all()


# --- scenarios on the sample mine, driven through the real engine --------------------------------

class Mine2102:
    """The sample mine's engine state and lockouts, fed reading by reading."""

    def __init__(self) -> None:
        self.mine = Mine.load()
        limits = Thresholds.load()
        self.points = list(self.mine.points)
        self.slot = {p.id: i for i, p in enumerate(self.points)}
        r = [resolve_limits(p, limits) for p in self.points]
        self.engine = new_state([x.alarm_hi for x in r], [x.alarm_lo for x in r],
                                [x.cut for x in r], [x.restore for x in r],
                                [x.deadband for x in r], [1.0] * len(r))
        self.topo = build_topology(self.mine, self.slot, cut_limits=self.engine.cut)
        self.relay = self.topo.relay_index
        self.lock = new_lockout_state(self.topo)
        self.t = 1000.0
        # Everything normal: baselines with quality ok.
        self.feed({p.id: p.baseline if p.baseline is not None else 0.0 for p in self.points})

    def feed(self, values: dict[str, float], quality: int = Quality.OK):
        self.t += 0.5
        ids = list(values)
        engine_evaluate(self.engine, [self.slot[i] for i in ids], [self.t] * len(ids),
                        [values[i] for i in ids], [quality] * len(ids), self.t)
        return self.evaluate()

    def evaluate(self):
        e = self.engine
        self.result = evaluate_lockouts(self.topo, self.lock, e.value, e.quality, e.bits,
                                        e.restore)
        return self.result

    def cut(self, relay: str) -> bool:
        return bool(self.result.must_cut[self.relay[relay]])

    def reason(self, relay: str) -> int:
        return int(self.result.latched[self.relay[relay]])

    def edges(self) -> list[tuple[str, int, int]]:
        return self.result.edges.rows(self.topo)

    def restore(self, relay: str) -> bool:
        done, _ = release(self.lock, self.result, [self.relay[relay]])
        return bool(done[0])


HEADING = ("002C01", "002C02")
OTHERS = ("001C01", "001C02", "001C03", "003C01", "003C02", "004C01")


def test_sample_mine_topology():
    m = Mine2102()
    assert m.topo.zone_ids == ("heading_2102",)
    assert m.topo.fan_ids == ("002D01", "002D02")
    assert m.topo.wind_ids == ("002A05",)
    assert sorted(m.topo.relay_ids[r] for r in m.topo.zone_relay_relay) == list(HEADING)
    guards = {}
    for g, r in zip(m.topo.guard_ids, m.topo.guard_relay, strict=True):
        guards.setdefault(m.topo.relay_ids[r], []).append(g)
    assert guards["002C01"] == ["002A01", "002A02"]
    assert guards["002C02"] == ["002A01", "002A02", "002A03"]
    assert "003A02" not in m.topo.guard_ids  # main return methane: alarm only, no range
    assert not m.result.must_cut.any()
    assert m.result.restore_allowed.all()


def test_main_fan_stops_with_standby_stopped_cuts_heading():
    m = Mine2102()
    m.feed({"002D01": 0.0})  # main local fan stops; standby 002D02 is at its baseline 0
    assert all(m.cut(r) for r in HEADING)
    assert not any(m.cut(r) for r in OTHERS)
    assert m.reason("002C01") == LOCK_FAN and lock_text(m.reason("002C01")) == "风电闭锁"
    assert m.edges() == [("002C01", 0, 1), ("002C02", 0, 1)]
    assert not m.result.ventilated[0]
    assert m.result.restore_block[m.relay["002C01"]] == BLOCK_FAN
    # Persisting: no further edges.
    m.feed({"002D01": 0.0})
    assert m.edges() == [] and m.cut("002C01")
    # Restore refused while no fan runs.
    assert not m.restore("002C01") and m.cut("002C01")
    assert "局部通风机未正常运行" in block_text(m.result.restore_block[m.relay["002C01"]])


def test_standby_fan_running_means_no_cut():
    m = Mine2102()
    m.feed({"002D02": 1.0, "002D01": 0.0})  # switch-over: standby runs before the main stops
    assert not any(m.cut(r) for r in HEADING)
    assert m.result.ventilated[0]
    # Main fan fails over later: standby starts after a stop → the lock stays until restored.
    m2 = Mine2102()
    m2.feed({"002D01": 0.0})
    assert m2.cut("002C01")
    m2.feed({"002D02": 1.0})
    assert m2.result.ventilated[0] and m2.result.condition[m2.relay["002C01"]] == 0
    assert m2.cut("002C01")  # 风电闭锁: restore is manual
    assert m2.result.restore_allowed[m2.relay["002C01"]]
    assert m2.restore("002C01") and not m2.cut("002C01")
    assert m2.cut("002C02")  # each relay is restored by hand
    assert m2.restore("002C02") and not m2.result.must_cut.any()


def test_fan_restore_needs_methane_below_restore_limit():
    m = Mine2102()
    m.feed({"002D01": 0.0})
    m.feed({"002A01": 1.2})  # gas accumulated while the fan was off: below cut 1.5, ≥ restore 1.0
    assert m.reason("002C01") == LOCK_FAN  # not over the cut limit: no methane lock
    m.feed({"002D01": 1.0})  # fan runs again
    assert m.result.ventilated[0]
    assert m.result.restore_block[m.relay["002C01"]] == BLOCK_METHANE
    assert not m.restore("002C01") and m.cut("002C01")
    m.feed({"002A01": 0.99})
    assert m.result.restore_allowed[m.relay["002C01"]]
    assert m.restore("002C01") and not m.cut("002C01")


def test_fan_switch_sensor_fault_or_stale_counts_as_stopped():
    m = Mine2102()
    m.feed({"002D01": 1.0}, quality=Quality.FAULT)
    assert m.cut("002C01") and m.reason("002C01") == LOCK_FAN
    m = Mine2102()
    m.feed({"002D02": 1.0})  # standby runs: a faulty main sensor alone does not cut
    m.feed({"002D01": 1.0}, quality=Quality.FAULT)
    assert not m.cut("002C01")
    # Substation S02 goes silent: every point stale, the fans are unknown → cut (fail safe).
    m = Mine2102()
    sweep_stale(m.engine, m.t + 10)
    m.evaluate()
    assert all(m.cut(r) for r in HEADING)
    assert m.reason("002C01") == LOCK_FAN | LOCK_FAULT


def test_wind_lost_in_heading_is_fan_lockout():
    m = Mine2102()
    m.feed({"002A05": 0.1})  # heading wind below 0.25 m/s with the fan running
    assert m.cut("002C01") and m.reason("002C01") == LOCK_FAN
    m.feed({"002A05": 1.0})
    assert m.cut("002C01") and m.restore("002C01")


def test_methane_at_cut_limit_locks_its_range():
    m = Mine2102()
    m.feed({"002A03": 1.5})  # roadheader methane at its cut limit: only the roadheader
    assert m.cut("002C02") and not m.cut("002C01")
    assert m.reason("002C02") == LOCK_METHANE
    assert m.result.restore_block[m.relay["002C02"]] == BLOCK_METHANE
    m.feed({"002A03": 1.2})  # between restore and cut: the engine holds the cut bit
    assert not m.restore("002C02")
    m.feed({"002A03": 0.9})
    assert m.cut("002C02")  # manual restore
    assert m.restore("002C02") and not m.cut("002C02")
    m.feed({"002A01": 1.5})  # heading face: all equipment in the heading
    assert all(m.cut(r) for r in HEADING)
    assert not any(m.cut(r) for r in OTHERS)


def test_methane_sensor_fault_locks_its_range_and_unlocks_when_normal():
    m = Mine2102()
    m.feed({"002A01": 0.3}, quality=Quality.FAULT)
    assert all(m.cut(r) for r in HEADING)
    assert m.reason("002C01") == LOCK_FAULT and lock_text(LOCK_FAULT) == "故障闭锁"
    assert m.result.restore_block[m.relay["002C01"]] == BLOCK_UNTRUSTED
    assert not m.restore("002C01")
    e = explain(m.topo, m.relay["002C01"], m.engine.value, m.engine.quality, m.engine.bits,
                m.engine.restore)
    assert e["sensor_untrusted"] == ["002A01"]
    m.feed({"002A01": 0.3})  # back to normal: unlocks by itself
    assert not any(m.cut(r) for r in HEADING)
    assert m.result.auto_unlock[m.relay["002C01"]]
    assert m.edges() == [("002C01", 4, 0), ("002C02", 4, 0)]
    assert m.result.edges.unlocked.all()


def test_fault_unlock_waits_for_methane_below_restore():
    m = Mine2102()
    m.feed({"002A02": 0.2}, quality=Quality.STALE)
    assert m.reason("002C01") == LOCK_FAULT
    m.feed({"002A02": 1.0})  # back, but at the restore limit (heading return: cut 1.0)
    assert m.reason("002C01") == LOCK_METHANE | LOCK_FAULT  # cut bit at 1.0
    m.feed({"002A02": 0.5})
    assert m.reason("002C01") == LOCK_METHANE  # fault cleared by itself, methane manual
    assert m.restore("002C01") and not m.cut("002C01")


def test_calibrating_sensor_blocks_restore_but_does_not_cut():
    m = Mine2102()
    m.feed({"002A01": 2.0}, quality=Quality.CALIBRATING)
    assert not m.cut("002C01")
    assert m.result.restore_block[m.relay["002C01"]] == BLOCK_UNTRUSTED


def test_fault_and_fan_together_need_manual_restore():
    m = Mine2102()
    m.feed({"002D01": 0.0})
    m.feed({"002A01": 0.3}, quality=Quality.FAULT)
    assert m.reason("002C01") == LOCK_FAN | LOCK_FAULT
    m.feed({"002A01": 0.3, "002D01": 1.0})
    assert m.reason("002C01") == LOCK_FAN
    assert not m.result.auto_unlock.any()
    assert m.restore("002C01")


def test_topology_rejects_bad_indices():
    with pytest.raises(ValueError, match="out of range"):
        topology_from_pairs(["R"], ["Z"], [(0, 1)], [], [], [])
    with pytest.raises(ValueError, match="not a fan"):
        build_topology(Mine.load(), zones={"z": ["002A01"]})


def test_engine_bits_used_by_lockouts():
    # The lockouts read the engine's CUT and FAULT bits: guard against a layout change.
    assert int(CUT) == 2 and int(FAULT) == 8


def test_journal_entries_and_latches_survive_a_restart():
    from alarms.lockouts import LOCKOUT_EVENT, journal_entries, latches_from_journal

    m = Mine2102()
    m.feed({"002D01": 0.0})
    rows = journal_entries(m.topo, m.result.edges)
    assert rows[0] == (LOCKOUT_EVENT, "002C01", {
        "relay": "002C01", "old": 0, "new": 1, "by": "engine", "locks": ["fan"],
        "text": "风电闭锁", "change": "locked"})
    m.feed({"002D01": 1.0})
    _, edges = release(m.lock, m.result, [m.relay["002C02"]])
    rows += journal_entries(m.topo, edges, by="王工")
    assert rows[-1][2]["change"] == "unlocked" and rows[-1][2]["by"] == "王工"
    # Restart: fresh state, the fan is running, yet 002C01 still awaits its manual restore.
    fresh = new_lockout_state(m.topo)
    latches_from_journal(m.topo, fresh, [{"event": e, "subject": s, "data": d}
                                         for e, s, d in rows])
    assert fresh.latched[m.relay["002C01"]] == LOCK_FAN
    assert fresh.latched[m.relay["002C02"]] == 0
