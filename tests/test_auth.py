"""Authentication, roles × endpoints, jurisdiction, and the HTTP guards, on a real service."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from minewatch.procs import login
from tests.conftest import RunningService

PASSWORD = "correct-horse-9"
ROLES = ("viewer", "dispatcher", "mine_leader", "organiser", "regulator", "city", "admin")

# (method, path, body) → the roles allowed; everyone else gets 403 (never 401 or 5xx).
DAY = "from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z"
MATRIX: list[tuple[str, str, dict | None, set[str]]] = [
    ("GET", "/api/v1/points", None, set(ROLES)),
    ("GET", "/api/v1/alarms", None, set(ROLES)),
    ("GET", "/api/v1/incidents", None, set(ROLES)),
    ("GET", "/api/v1/lockouts", None, set(ROLES)),
    ("POST", "/api/v1/alarms/nope/ack", {"user": "x"}, {"dispatcher", "mine_leader", "admin"}),
    ("POST", "/api/v1/alarms/nope/shelve", {"user": "x", "reason": "r", "minutes": 5},
     {"dispatcher", "mine_leader", "admin"}),
    ("POST", "/api/v1/incidents/nope/steps/report:city/ack", {"user": "x"},
     {"dispatcher", "mine_leader", "admin"}),
    ("POST", "/api/v1/relays/001C01/restore", {"user": "x", "reason": "r"},
     {"mine_leader", "admin"}),
    ("POST", "/api/v1/incidents/nope/close", {"user": "x"}, {"mine_leader", "admin"}),
    ("GET", f"/api/v1/history?points=001A01&{DAY}", None,
     {"regulator", "city", "mine_leader", "admin"}),
    ("GET", "/api/v1/journal", None, {"regulator", "city", "mine_leader", "admin"}),
    ("GET", "/api/v1/drills", None, {"organiser", "admin"}),
    ("POST", "/api/v1/sim/scenarios", {"scenario": "nope", "point": "001A01"},
     {"organiser", "admin"}),
    ("GET", "/api/v1/users", None, {"admin"}),
]


@pytest.fixture(scope="module")
def tokens(shared_service: RunningService) -> dict[str, str]:
    s = shared_service
    for role in ROLES:
        r = s.post("/api/v1/users", json={"name": f"u_{role}", "role": role,
                                          "password": PASSWORD, "mines": ["demo"]})
        assert r.status_code == 200, r.text
    return {role: login(s.url, f"u_{role}", PASSWORD) for role in ROLES}


def _call(s: RunningService, method: str, path: str, body, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, s.url + path, json=body, headers=headers, timeout=10)


@pytest.mark.parametrize(("method", "path", "body", "allowed"), MATRIX,
                         ids=[f"{m} {p.split('?')[0]}" for m, p, _, _ in MATRIX])
def test_each_role_on_each_endpoint(shared_service, tokens, method, path, body, allowed):
    anonymous = _call(shared_service, method, path, body, None)
    assert anonymous.status_code == 401
    for role in ROLES:
        r = _call(shared_service, method, path, body, tokens[role])
        if role in allowed:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)
            assert r.status_code < 500, (role, r.text)
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)


def test_health_is_open_and_tokens_are_checked(shared_service, tokens):
    s = shared_service
    assert httpx.get(s.url + "/api/v1/health", timeout=10).status_code == 200
    for bad in ("garbage", tokens["admin"][:-4] + "AAAA"):
        assert _call(s, "GET", "/api/v1/points", None, bad).status_code == 401
    me = _call(s, "GET", "/api/v1/auth/me", None, tokens["dispatcher"]).json()
    assert me == {"user": "u_dispatcher", "role": "dispatcher", "mines": ["demo"]}


def test_jurisdiction(shared_service, tokens):
    s = shared_service
    r = s.post("/api/v1/users", json={"name": "other_city", "role": "city",
                                      "password": PASSWORD, "mines": ["beishan"]})
    assert r.status_code == 200
    r = httpx.post(s.url + "/api/v1/auth/token", timeout=10,
                   data={"username": "other_city", "password": PASSWORD})
    assert r.status_code == 403 and "jurisdiction" in r.text
    # A viewer cannot create users; unknown roles are refused.
    r = _call(s, "POST", "/api/v1/users", {"name": "x", "role": "viewer", "password": PASSWORD},
              tokens["viewer"])
    assert r.status_code == 403
    r = s.post("/api/v1/users", json={"name": "y", "role": "god", "password": PASSWORD})
    assert r.status_code == 422


def test_websockets_need_a_token(shared_service, tokens):
    s = shared_service

    async def run() -> None:
        url = s.url.replace("http", "ws") + "/ws/alarms"
        async with connect(url) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 4401
        async with connect(f"{url}?token={tokens['viewer']}") as ws:
            first = await asyncio.wait_for(ws.recv(), 5)
        assert '"snapshot"' in first

    asyncio.run(run())


def test_security_headers_and_size_limit(shared_service):
    s = shared_service
    r = s.get("/api/v1/points")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "access-control-allow-origin" not in r.headers  # same origin only
    big = s.post("/api/v1/alarms/x/comments", content=b"{" + b" " * (2 << 20) + b"}",
                 headers={"Content-Type": "application/json"})
    assert big.status_code == 413


def test_failed_logins_are_rate_limited(shared_service):
    s = shared_service
    codes = [httpx.post(s.url + "/api/v1/auth/token", timeout=10,
                        data={"username": "admin", "password": f"wrong-{i}"}).status_code
             for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[-1] == 429
