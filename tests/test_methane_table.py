"""The regulation's methane table, row by row: rise → alarm → power cut → fall → restore.

The expected numbers are copied from shared/DOMAIN.md (not read from thresholds.toml), so a
wrong value in the configuration fails here. Each location kind gets its own area and relay; the
walk runs the engine and the power-cut workflow and checks the commands issued. Relay writes
go to an in-process recorder (the Modbus path is tested end to end in test_e2e.py).
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from alarms.engine import evaluate, new_state
from alarms.workflows import PowerCutWorkflow, RestoreRefused
from minewatch.mine import Mine, Thresholds, resolve_limits
from minewatch.readings import Quality

# location kind → (alarm, cut, restore) in %CH4; None = alarm only (DOMAIN.md).
DOMAIN_TABLE: dict[str, tuple[float, float | None, float | None]] = {
    "return_corner": (1.0, 1.5, 1.0),
    "coal_face": (1.0, 1.5, 1.0),
    "face_return": (1.0, 1.0, 1.0),
    "face_intake_outburst": (0.5, 0.5, 0.5),
    "series_face_intake": (0.5, 0.5, 0.5),
    "return_midpoint": (1.0, 1.0, 1.0),
    "shearer": (1.0, 1.5, 1.0),
    "heading_face": (1.0, 1.5, 1.0),
    "heading_return": (1.0, 1.0, 1.0),
    "heading_intake_outburst": (0.5, 0.5, 0.5),
    "series_heading_fan": (0.5, 0.5, 0.5),
    "machine": (1.0, 1.5, 1.0),
    "district_return": (1.0, 1.0, 1.0),
    "main_return": (0.70, None, None),
    "drainage_roadway": (2.5, 2.5, 2.5),
    "belt_return_shaft": (0.5, 0.7, 0.7),
    "bunker": (1.5, 1.5, 1.5),
    "trolley": (0.5, 0.5, 0.5),
    "vehicle": (0.5, 0.5, 0.5),
}
KINDS = list(DOMAIN_TABLE)


def _mine() -> Mine:
    areas, relays, points = [], [], []
    for i, kind in enumerate(KINDS):
        areas.append({"id": f"a{i}", "name": kind})
        relays.append({"id": f"001C{i:02d}", "name": f"断电器{i}", "substation": "S01",
                       "coil": i, "area": f"a{i}"})
        points.append({"id": f"001A{i:02d}", "name": f"甲烷{i}", "substation": "S01",
                       "channel": i, "kind": "ch4", "location": kind, "area": f"a{i}"})
    return Mine.model_validate({
        "mine": {"id": "table", "name": "规程表"}, "areas": areas,
        "substations": [{"id": "S01", "name": "分站"}], "relays": relays, "points": points})


def test_configuration_matches_the_domain_table():
    limits = Thresholds.load()
    assert set(limits.methane) == set(DOMAIN_TABLE)
    for kind, (alarm, cut, restore) in DOMAIN_TABLE.items():
        row = limits.methane[kind]
        assert (row.alarm, row.cut, row.restore) == (alarm, cut, restore), kind


@pytest.mark.parametrize("kind", KINDS)
def test_location_kind_walks_rise_alarm_cut_fall_restore(kind: str):
    mine, limits = _mine(), Thresholds.load()
    i = KINDS.index(kind)
    alarm, cut, restore = DOMAIN_TABLE[kind]
    r = [resolve_limits(p, limits) for p in mine.points]
    engine = new_state([x.alarm_hi for x in r], [x.alarm_lo for x in r], [x.cut for x in r],
                       [x.restore for x in r], [x.deadband for x in r], [60.0] * len(r))
    written: list[tuple[list[str], bool]] = []
    commands = []

    async def write(relays, is_cut):
        written.append(([x.id for x in relays], is_cut))

    flow = PowerCutWorkflow(mine, write, commands.append, lambda _p: (0.0, 0, 0.0),
                            lambda _r: 2.0)
    point = mine.points[i]
    t = [1000.0]

    def step(value: float) -> list[tuple[str, bool]]:
        t[0] += 1.0
        ev = evaluate(engine, np.array([i]), np.array([t[0]]), np.array([value]),
                      np.array([Quality.OK], dtype=np.int8), t[0])
        out = [(k, raised) for _s, k, raised, _v, _t in ev.rows()]
        for k, raised in out:
            if k == "power_cut_limit" and raised:
                asyncio.run(flow.cut(point, "A1", value, None))
        return out

    def blocker(pid: str) -> str | None:
        s = mine.point_by_id[pid]
        j = mine.points.index(s)
        v = float(engine.value[j])
        return None if math.isnan(r[j].restore) or v < r[j].restore else "甲烷未降至复电浓度以下"

    assert step(0.9 * alarm) == []  # below the alarm limit: nothing
    if cut is None or cut > alarm:
        assert step(alarm) == [("over_limit", True)]  # exactly at the limit alarms (≥)
        assert written == []
    if cut is None:
        assert not (step(alarm * 3) and written)
        assert step(alarm * 0.5) == [("over_limit", False)]
        assert commands == []
        return
    got = step(cut)  # at the power-cut limit: cut exactly this point's range
    assert ("power_cut_limit", True) in got
    assert written == [([f"001C{i:02d}"], True)]
    assert [c.action for c in commands if c.action == "cut"] == ["cut"]
    assert flow.relay_cut[f"001C{i:02d}"] is True
    # Falling, but not below the restore limit: the cut holds and restore is refused.
    assert ("power_cut_limit", False) not in step(restore)
    with pytest.raises(RestoreRefused):
        asyncio.run(flow.restore(f"001C{i:02d}", "带班领导", "复电", blocker))
    # Below restore: restore becomes permitted (a person still has to do it).
    got = step(restore - 0.05)
    assert ("power_cut_limit", False) in got
    # ... and the alarm clears too, unless the restore limit is above the alarm limit (a belt
    # shaft used as return: alarm 0.5, restore 0.7 — power may return while still alarming).
    assert (("over_limit", False) in got) == (restore - 0.05 < alarm)
    assert flow.relay_cut[f"001C{i:02d}"] is True  # nothing automatic
    asyncio.run(flow.restore(f"001C{i:02d}", "带班领导", "复电", blocker))
    assert written[-1] == ([f"001C{i:02d}"], False)
    assert [c.action for c in commands][-1] == "restore"
    # Other areas never lost power.
    assert all(ids == [f"001C{i:02d}"] for ids, _ in written)
