"""Hostile and malformed MQTT payloads: every rejection has a reason, good readings survive."""

from __future__ import annotations

import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.mqtt_payload import MAX_MESSAGE_BYTES, PointInfo, parse_data
from minewatch.readings import Quality

NOW = 1_790_000_000.0
POINTS = {
    "004A01": PointInfo(0, "S04", "%", 0.0, 4.0),
    "004A02": PointInfo(1, "S04", "ppm", 0.0, 1000.0),
    "001A01": PointInfo(2, "S01", "%", 0.0, 4.0),
}
TOPIC = "mw/demo/S04/data"


def msg(readings, **kw) -> bytes:
    body = {"mine": "demo", "substation": "S04", "seq": 1, "sent_at": NOW, "readings": readings}
    body.update(kw)
    return json.dumps(body).encode()


def r(point="004A01", ts=NOW, value=0.3, **kw):
    return {"point": point, "ts": ts, "value": value, **kw}


def parse(payload: bytes, topic: str = TOPIC):
    return parse_data(topic, payload, POINTS, "demo", NOW)


def test_good_message_becomes_arrays():
    p = parse(msg([r(), r("004A02", value=30, unit="ppm"), r(value=5.0), r(value=None),
                   r(quality="calibrating", value=1.0)]))
    assert p.rejects == []
    slots, ts, values, quality = p.arrays()
    assert ts.tolist() == [NOW] * 5
    assert slots.tolist() == [0, 1, 0, 0, 0]
    assert values[1] == 30 and math.isnan(values[3])
    assert quality.tolist() == [Quality.OK, Quality.OK, Quality.OUT_OF_RANGE, Quality.FAULT,
                                Quality.CALIBRATING]


def test_per_reading_problems_reject_only_that_reading():
    p = parse(msg([r(), r("999A99"), r("001A01"), r(unit="ppm"), r(ts=NOW + 3600),
                   r(ts=NOW - 30 * 86400), r(value="high"), r(extra=1), r("004A02")]))
    assert [x.reason for x in p.rejects] == ["unknown_point", "foreign_point", "unit",
                                             "timestamp", "timestamp", "reading", "reading"]
    assert p.slots == [0, 1]
    assert "belongs to substation S01" in p.rejects[1].detail


def test_whole_message_problems_reject_the_message():
    cases = {
        "oversized": (b"x" * (MAX_MESSAGE_BYTES + 1), TOPIC),
        "json": (b"{not json", TOPIC),
        "shape": (json.dumps({"mine": "demo"}).encode(), TOPIC),
        "topic": (msg([r()]), "mw/demo/S05/data"),
    }
    for reason, (payload, topic) in cases.items():
        p = parse(payload, topic)
        assert [x.reason for x in p.rejects] == [reason], reason
        assert p.slots == []
    nan = msg([r()]).replace(b"0.3", b"NaN")
    assert [x.reason for x in parse(nan).rejects] == ["json"]
    other_mine = parse(msg([r()], mine="other"), "mw/other/S04/data")
    assert other_mine.rejects[0].reason == "topic"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(payload):
    p = parse(payload)
    assert p.slots == [] and len(p.rejects) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"point": st.sampled_from(["004A01", "004A02", "001A01", "x"]),
     "ts": st.floats(NOW - 1e6, NOW + 1e4), "value": st.one_of(st.none(), st.floats(-10, 10))},
    optional={"quality": st.sampled_from(["ok", "fault", "bad"]),
              "unit": st.sampled_from(["%", "ppm", "mg"])})), max_size=20))
def test_fuzzed_readings_are_kept_or_rejected_never_lost(readings):
    p = parse(msg(readings))
    assert len(p.slots) + len(p.rejects) == len(readings)
    assert all(x.reason and x.detail for x in p.rejects)
