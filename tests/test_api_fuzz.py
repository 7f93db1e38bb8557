"""Hostile input: the REST API fuzzed from its own OpenAPI schema (schemathesis), on real
services over loopback HTTP.

Every operation of ``/openapi.json`` gets generated requests — valid and invalid by the schema
(schemathesis' coverage phase: boundary values, missing and wrongly typed fields; then its
fuzzing phase) — with real identifiers mixed in (points, relays, alarms, incidents, areas …
of the running mine, and edge-case times) so requests get past "unknown point" to the logic
behind. Checks on every answer:

- no 5xx (``not_a_server_error``), and the service process still alive and healthy after;
- the status code, content type and body are the ones the schema documents
  (``status_code_conformance``, ``content_type_conformance``, ``response_schema_conformance``);
- a body that violates the schema is refused with a 4xx (``negative_data_rejection``);
- the security headers are on every answer, error or not;
- without a token every route but health and login answers 401, and a viewer gets 403 on what
  a viewer may not do (never a 2xx, never a 5xx);
- nothing was logged as an unhandled exception, and no simulated substation failed to serve
  its registers (a traceback or a Modbus exception response in the service log fails).

What fuzzing found is kept below as plain regression examples.

Two throwaway services: one takes only reads (GET), the other every operation that changes
state — restores, drills, the simulator, users, alarm lifecycle — so the reads see a mine
that only the setup touched. Bounded and reproducible: ``derandomize=True``, a few examples
per operation (``MINEWATCH_FUZZ_EXAMPLES``, default 12), no deadline.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from minewatch.procs import ServiceProcess, login, start_service
from minewatch.readings import iso
from simulators.drill import Plan, commitment

EXAMPLES = int(os.environ.get("MINEWATCH_FUZZ_EXAMPLES", "12"))
VIEWER, VIEWER_PASSWORD = "fuzz_viewer", "fuzz-viewer-pw-1"
WHO = ("anonymous", "viewer")  # the refused callers; admin runs the whole schema

# Open to everyone: no token needed.
OPEN = {"/api/v1/health", "/api/v1/auth/token"}
# What a viewer may not do besides changing anything: the regulators' API, drills, users.
VIEWER_DENIED_READS = ("/api/v1/history", "/api/v1/records/", "/api/v1/statistics",
                       "/api/v1/journal", "/api/v1/drills", "/api/v1/users")
SECURITY_HEADERS = ("x-content-type-options", "x-frame-options", "content-security-policy")


def negative_body_rejection(ctx: Any, response: Any, case: Any) -> bool | None:
    """``negative_data_rejection`` for request bodies. Query and path values travel as text,
    and schemathesis misjudges some of their "type mutations": ``?event=false`` is a fine event
    name, yet it counts as a boolean where strings are due and wants it refused."""
    meta = case.meta
    if meta is not None and any(loc != "body" and info.mode.is_negative
                                for loc, info in meta.components.items()):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
ADMIN_CHECKS = [*CHECKS, negative_body_rejection]

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@dataclass
class Target:
    """A running service, its tokens and the identifiers of its mine (for the generator)."""

    svc: ServiceProcess
    tokens: dict[str, str | None]
    ids: dict[str, list[Any]] = field(default_factory=dict)


def _get(svc: ServiceProcess, path: str, **kw: Any) -> Any:
    r = svc.get(path, **kw)
    r.raise_for_status()
    return r.json()


def _prepare(workdir: Path) -> Target:
    """Start a service, add a viewer, raise a real over-limit (alarm, cut, incident) and clear
    it, then collect the ids the generator mixes in."""
    svc = start_service(workdir)
    try:
        r = svc.post("/api/v1/users", json={"name": VIEWER, "role": "viewer",
                                            "password": VIEWER_PASSWORD, "mines": ["demo"]})
        assert r.status_code == 200, r.text
        tokens = {"admin": svc.token, "viewer": login(svc.url, VIEWER, VIEWER_PASSWORD),
                  "anonymous": None}
        mine = _get(svc, "/api/v1/mine")
        points = _get(svc, "/api/v1/points")
        gas = next(p["id"] for p in points if p["kind"] == "ch4")
        svc.inject("gas-overlimit", gas)
        svc.wait_for(lambda: _get(svc, "/api/v1/incidents"), timeout=20)
        svc.inject("clear", gas)
        alarms = _get(svc, "/api/v1/alarms")
        incidents = _get(svc, "/api/v1/incidents")
        now = time.time()
        ids = {
            "point": [p["id"] for p in points],
            "points": [",".join(p["id"] for p in points[:3]), gas],
            "relay": [r["id"] for r in mine["relays"]],
            "area": [a["id"] for a in mine["areas"]],
            "roadway": [r["id"] for r in mine["roadways"]],
            "kind": sorted({p["kind"] for p in points}),
            "alarm": [a["id"] for a in alarms],
            "incident": [i["id"] for i in incidents],
            "step": sorted({s["name"] for i in incidents for s in i["steps"]}),
            "scenario": list(_get(svc, "/api/v1/sim")["scenarios"]),
            "drill_scenario": [d["id"] for d in _get(svc, "/api/v1/drills/scenarios")],
            "mine": [mine["mine"]["id"]],
            # Numbers at the edges of a float, of a register, of a day, of a year.
            "number": [1e308, -1e308, 5e-324, 0, -1, 32768, 2**53 + 1, 86400, 366 * 86400],
            # Times: recent (where the data is), the bounds of the accepted range and beyond.
            "time": [iso(now - 3600), iso(now - 60), iso(now), f"{now - 600:.3f}",
                     "1970-01-01T00:00:00Z", "0", "-1", "9999-12-31T23:59:59Z",
                     "253402300799", "253402300800", "1e308", "nan", "inf",
                     "2026-02-30T00:00:00", "2026-01-01T00:00:00+14:00",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"],
        }
        assert ids["alarm"] and ids["incident"], (alarms, incidents)
        return Target(svc, tokens, ids)
    except BaseException:
        svc.stop()
        raise


def _config(t: Target, *, coverage: bool = True) -> schemathesis.Config:
    """Schemathesis settings: the id dictionaries bound to the parameters that take them;
    ``coverage`` off leaves only the (bounded) fuzzing phase."""
    d = t.ids
    bind = {
        "path.point_id": "point", "path.relay_id": "relay", "path.alarm_id": "alarm",
        "path.incident_id": "incident", "path.step": "step", "path.roadway": "roadway",
        "query.points": "points", "query.point": "point", "query.relay": "relay",
        "query.area": "area", "query.kind": "kind", "query.mine": "mine",
        "query.incident": "incident", "query.from": "time", "query.to": "time",
        "body.point": "point", "body.scenario": "scenario", "body.value": "number",
        "body.ramp_s": "number", "body.minutes": "number", "body.hours": "number",
        "body.plan.start_at": "number",
        "body.plan.mine": "mine", "body.plan.point": "point", "body.plan.scenario":
            "drill_scenario",
    }
    return schemathesis.Config.from_dict({
        "phases": {"coverage": {"enabled": coverage}},
        "dictionaries": {name: {"values": values} for name, values in d.items() if values},
        "parameters": {key: {"dictionary": name, "probability": 0.5}
                       for key, name in bind.items() if d.get(name)},
    })


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> Iterator[Target]:
    t = _prepare(tmp_path_factory.mktemp("fuzz-reads"))
    try:
        yield t
    finally:
        t.svc.stop()


@pytest.fixture(scope="module")
def writes(tmp_path_factory) -> Iterator[Target]:
    t = _prepare(tmp_path_factory.mktemp("fuzz-writes"))
    try:
        yield t
    finally:
        t.svc.stop()


def _load(t: Target, **kw: Any) -> Any:
    return schemathesis.openapi.from_url(t.svc.url + "/openapi.json", config=_config(t, **kw),
                                         timeout=10)


@pytest.fixture(scope="module")
def read_schema(reads: Target):
    return _load(reads)


@pytest.fixture(scope="module")
def write_schema(writes: Target):
    return _load(writes)


@pytest.fixture(scope="module")
def refused_schema(writes: Target):
    """For callers without the rights: generated requests only (refusal comes before the
    input is looked at, so the coverage phase's boundary cases add nothing)."""
    return _load(writes, coverage=False)


@pytest.fixture(params=WHO)
def who(request) -> str:
    return request.param


read_api = schemathesis.pytest.from_fixture("read_schema")
write_api = schemathesis.pytest.from_fixture("write_schema")
refused_api = schemathesis.pytest.from_fixture("refused_schema")


def _tweak(case: Any, t: Target) -> None:
    """Help the generator past checks it cannot guess: a drill plan gets its commitment (so
    arming reaches the drill logic), and the test's own users are not overwritten."""
    body = case.body
    if case.path == "/api/v1/drills" and isinstance(body, dict) \
            and isinstance(body.get("plan"), dict):
        with contextlib.suppress(ValueError):
            body["commitment"] = commitment(Plan.model_validate(body["plan"]))
    if case.path == "/api/v1/users" and isinstance(body, dict) \
            and body.get("name") in ("admin", VIEWER):
        body["name"] = "fuzz_" + body["name"]


def _unparsable(response: Any) -> bool:
    """FastAPI parses a JSON body before it checks the token: a body that is not JSON is
    refused first (422 json_invalid, or 400 when it is not even UTF-8)."""
    if response.status_code == 400:
        return True
    try:
        detail = response.json()["detail"]
        return response.status_code == 422 and detail[0]["type"] == "json_invalid"
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def _exercise(case: Any, t: Target, who: str) -> None:
    """Send one generated request as ``who`` and check the answer."""
    _tweak(case, t)
    token = t.tokens[who]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = case.call(base_url=t.svc.url, headers=headers, timeout=15)
    code, what = response.status_code, f"{case.method} {case.formatted_path} as {who}"
    assert code < 500, f"server error: {what} → {code} {response.text[:300]}"
    for h in SECURITY_HEADERS:  # (a 500 would have none: it bypasses the middleware)
        assert h in response.headers, (h, what, code)
    method = case.operation.method.upper()
    if case.method.upper() != method:  # the coverage phase tries e.g. TRACE on a GET route
        assert code == 405, (what, code, response.text[:300])
    elif who == "anonymous" and case.path not in OPEN:
        assert code in (401, 413) or _unparsable(response), (what, code, response.text[:300])
    elif who == "viewer" and case.path not in OPEN:  # (logging in with a wrong password: 401)
        assert code != 401, (what, response.text[:300])
        if (method != "GET" and case.path not in OPEN) or \
                case.path.startswith(VIEWER_DENIED_READS):
            assert code in (403, 413) or _unparsable(response), (what, code,
                                                                 response.text[:300])
    case.validate_response(response, checks=ADMIN_CHECKS if who == "admin" else CHECKS,
                           headers=headers)


@read_api.include(method="GET").parametrize()
@FUZZ
def test_reads_as_admin(case, reads):
    _exercise(case, reads, "admin")


@write_api.exclude(method="GET").parametrize()
@FUZZ
def test_writes_as_admin(case, writes):
    _exercise(case, writes, "admin")


@pytest.mark.usefixtures("who")
@refused_api.parametrize()
@settings(FUZZ, max_examples=max(3, EXAMPLES // 3))
def test_refused_without_rights(case, writes, who):
    _exercise(case, writes, who)


# Found while fuzzing (the generator's edge values, replayed by hand against a service), kept
# as plain examples: (method, path, params, body, expected status, text in the answer).
REGRESSIONS = [
    # value × scale overflowed in the simulated substation's register encoder: the whole
    # substation failed every poll while the scenario held.
    ("POST", "/api/v1/sim/scenarios", None,
     {"scenario": "gas-alarm", "point": "001A01", "value": 1e308}, 422, "value"),
    # the last 1 h bucket of 9999-12-31 ended in year 10000: "year 10000 is out of range".
    ("GET", "/api/v1/history", {"points": "001A01", "resolution": "1h",
                                "from": "9999-12-31T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
     None, 200, '"rows":[]'),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "status", "text"), REGRESSIONS,
                         ids=[f"{m} {p}" for m, p, *_ in REGRESSIONS])
def test_regressions(writes: Target, method, path, params, body, status, text):
    r = httpx.request(method, writes.svc.url + path, params=params, json=body, timeout=15,
                      headers={"Authorization": f"Bearer {writes.tokens['admin']}"})
    assert r.status_code == status and text in r.text, r.text


def test_drill_plan_must_fit_its_site(writes: Target):
    """A plan whose scenario cannot be staged at its point (CO rise at an air-speed sensor)
    was armed and ran as a drill driving nothing; now refused with the reason."""
    points = _get(writes.svc, "/api/v1/points")
    wind = next(p["id"] for p in points if p["kind"] == "wind")
    now = time.time()
    plan = Plan(mine="demo", scenario="co_rise", point=wind, start_at=now + 3600,
                drawn_at=now, window=(now, now + 7200), candidates=1, nonce="5a" * 32)
    r = writes.svc.post("/api/v1/drills", json={"plan": plan.model_dump(mode="json"),
                                                "commitment": commitment(plan), "user": "x"})
    assert r.status_code == 409 and "cannot be staged" in r.text, r.text


@pytest.mark.parametrize("name", ["reads", "writes"])
def test_services_survived(request, name):
    """After the fuzzing: the process runs, answers health, logged no unhandled exception and
    no simulated substation failed to serve its registers (a Modbus exception response)."""
    t: Target = request.getfixturevalue(name)
    time.sleep(2.0)  # a few substation polls after the last request
    assert t.svc.proc.poll() is None, t.svc.log.read_text()[-3000:]
    assert httpx.get(t.svc.url + "/api/v1/health", timeout=10).status_code == 200
    log = t.svc.log.read_text()
    for crash in ("Traceback", "modbus error response"):
        assert crash not in log, log[-5000:]
