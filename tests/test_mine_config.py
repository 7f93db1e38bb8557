"""The sample mine validates; broken configurations are refused with a message naming the fault."""

from __future__ import annotations

import math

import pytest

from minewatch.mine import SAMPLE_MINE, ConfigError, Mine, Thresholds, resolve_limits


def test_sample_mine_covers_the_required_point_kinds():
    mine, limits = Mine.load(), Thresholds.load()
    mine.validate_against(limits)
    assert len(mine.substations) >= 3 and len(mine.points) >= 40
    ch4_locations = {p.location for p in mine.points if p.kind == "ch4"}
    assert {"coal_face", "return_corner", "face_return", "heading_face", "heading_return",
            "district_return", "main_return"} <= ch4_locations
    assert {"co", "o2", "wind", "temp", "fan", "feed"} <= {p.kind for p in mine.points}
    for p in mine.points:
        lim = resolve_limits(p, limits)
        if not math.isnan(lim.cut):
            assert mine.cut_relays(p), f"{p.id} has a cut limit but no relay"
    for r in mine.relays:
        assert r.feed and mine.point_by_id[r.feed].kind == "feed"


def test_thresholds_follow_the_regulation_table():
    limits = Thresholds.load()
    rc = limits.methane["return_corner"]
    assert (rc.alarm, rc.cut, rc.restore) == (1.0, 1.5, 1.0)
    assert limits.methane["main_return"].cut is None
    assert limits.sensors["co"].alarm_hi == 24


def _broken(tmp_path, old: str, new: str):
    text = SAMPLE_MINE.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "mine.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("old", "new", "fragment"), [
    ('id = "001A01"', 'id = "1A1"', "id"),
    ('substation = "S01"', 'substation = "S99"', "unknown substation S99"),
    ('feed = "001D02"', 'feed = "009D09"', "unknown feed point"),
    ("poll_ms = 500", "poll_ms = 5", "poll_ms"),
])
def test_broken_config_names_the_problem(tmp_path, old, new, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Mine.load(_broken(tmp_path, old, new))


def test_unknown_methane_location_is_refused(tmp_path):
    mine = Mine.load(_broken(tmp_path, 'location = "return_corner"', 'location = "roof"'))
    with pytest.raises(ConfigError, match="unknown methane location 'roof'"):
        mine.validate_against(Thresholds.load())
