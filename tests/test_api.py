"""REST contract and bad-parameter handling on a running service."""

from __future__ import annotations

import pytest

from tests.conftest import RunningService


def test_points_have_the_documented_keys(shared_service: RunningService):
    points = shared_service.get("/api/v1/points").json()
    assert len(points) >= 40
    for p in points:
        for key in ("id", "kind", "unit", "location", "value", "ts", "quality", "state"):
            assert key in p, (key, p)
    kinds = {p["kind"] for p in points}
    assert {"ch4", "co", "o2", "wind", "temp", "fan", "feed"} <= kinds
    assert all(p["quality"] == "ok" and p["state"] == "normal" for p in points)


def test_openapi_and_dashboard_are_served(shared_service: RunningService):
    spec = shared_service.get("/openapi.json").json()
    for path in ("/api/v1/points", "/api/v1/alarms", "/api/v1/commands",
                 "/api/v1/alarms/{alarm_id}/ack", "/api/v1/points/{point_id}/readings"):
        assert path in spec["paths"]
    page = shared_service.get("/", follow_redirects=True)
    assert page.status_code == 200 and "调度大屏" in page.text


@pytest.mark.parametrize(("path", "params", "status", "fragment"), [
    ("/api/v1/points/XXX/readings", {}, 404, "unknown point"),
    ("/api/v1/points/001A01/readings", {"from": "yesterday"}, 422, "from"),
    ("/api/v1/points/001A01/readings", {"from": "2026-01-02", "to": "2026-01-01"}, 422,
     "earlier"),
    ("/api/v1/points/001A01/readings", {"from": "2025-01-01", "to": "2026-01-01"}, 422,
     "too large"),
    ("/api/v1/points/001A01/readings", {"limit": "0"}, 422, "limit"),
    ("/api/v1/points/001A01/readings", {"limit": "100000000"}, 422, "limit"),
    ("/api/v1/alarms", {"state": "bogus"}, 422, "state"),
    ("/api/v1/alarms", {"from": "nan"}, 422, "finite"),
    ("/api/v1/commands", {"to": "not-a-time"}, 422, "to"),
])
def test_bad_parameters_get_a_clear_4xx(shared_service: RunningService, path, params, status,
                                        fragment):
    r = shared_service.get(path, params=params)
    assert r.status_code == status, r.text
    assert fragment in r.text


def test_bad_actions_are_refused(shared_service: RunningService):
    s = shared_service
    assert s.post("/api/v1/alarms/nope/ack", json={"user": "x"}).status_code == 404
    r = s.post("/api/v1/relays/001C01/restore", json={"user": "x", "reason": "r"})
    assert r.status_code == 409 and "not cut" in r.text
    r = s.post("/api/v1/relays/NOPE/restore", json={"user": "x", "reason": "r"})
    assert r.status_code == 404
    # A safety command without a reason is refused.
    assert s.post("/api/v1/relays/001C01/restore", json={"user": "x"}).status_code == 422
    r = s.post("/api/v1/sim/scenarios", json={"scenario": "meteor", "point": "001A01"})
    assert r.status_code == 422 and "unknown scenario" in r.text
    r = s.post("/api/v1/sim/scenarios", json={"scenario": "gas-overlimit", "point": "001A07"})
    assert r.status_code == 422 and "methane" in r.text
    r = s.post("/api/v1/sim/scenarios", json={"scenario": "clear", "point": "999A99"})
    assert r.status_code == 422 and "unknown point" in r.text
