"""Double-blind drills (双盲演练): the scenario library, the random draw with a commitment, and
the signals a scenario drives through the simulated substations.

The draw: ``draw`` picks a scenario, a site (a point whose location kind the scenario allows)
and a start time at random from the candidates, with a secret nonce. Only ``commitment(plan)``
— the SHA-256 of the plan's canonical JSON, nonce included — is published before the drill;
after it the plan file itself is revealed and anyone recomputes the hash (``verify``), so the
draw cannot have been changed afterwards and could not be guessed before (the nonce).

Signals are functions of time fed to the simulator (``SimulatedSubstation.set_curve``), so the
real pipeline — Modbus/MQTT ingest, engine, workflows, screens — sees a physically plausible
event: rises at a rate with sensor noise, and downstream sensors on the same airflow following
with the air travel lag (the mine file's ``upstream`` / ``lag_s``), diluted.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCENARIO_DIR = Path(__file__).parent / "scenarios"


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    name: str
    description: str = ""
    kind: Literal["gas_rise", "outburst", "fan_stop", "co_rise", "comm_loss"]
    site_sensor: str = "ch4"
    site_kinds: list[str] = Field(default_factory=list, description="location kinds; [] = any")
    peak: float = Field(ge=0)
    rate_per_min: float = Field(0.0, ge=0)
    rise_s: float = Field(0.0, ge=0)
    hold_s: float = Field(0.0, ge=0)
    noise: float = Field(0.0, ge=0)
    fault_after_s: float | None = Field(None, gt=0)
    propagate: bool = False
    dilution: float = Field(0.8, gt=0, le=1)
    expect: list[str] = Field(min_length=1, description="alarm kinds the drill must produce")


def load_library(directory: Path = SCENARIO_DIR) -> dict[str, Scenario]:
    """Every ``*.toml`` in the folder, validated; a bad file names itself in the error."""
    out: dict[str, Scenario] = {}
    for path in sorted(directory.glob("*.toml")):
        with path.open("rb") as f:
            try:
                sc = Scenario.model_validate(tomllib.load(f))
            except ValueError as exc:
                raise ValueError(f"{path.name}: {exc}") from exc
        if sc.id in out:
            raise ValueError(f"{path.name}: scenario id {sc.id} used twice")
        out[sc.id] = sc
    return out


def sites(mine, scenario: Scenario) -> list[str]:
    """Points of the mine where the scenario can be staged."""
    return [p.id for p in mine.points if p.kind == scenario.site_sensor
            and (not scenario.site_kinds or p.location in scenario.site_kinds)]


class Plan(BaseModel):
    """What the organiser drew; secret until revealed."""

    model_config = ConfigDict(extra="forbid")

    mine: str
    scenario: str
    point: str
    start_at: float
    drawn_at: float
    window: tuple[float, float]
    candidates: int
    nonce: str = Field(min_length=32)


def draw(mines: list, library: dict[str, Scenario], earliest: float, window_s: float,
         rng: random.Random | None = None) -> Plan:
    """Draw mine, scenario, site and start time uniformly from the candidates."""
    rng = rng or secrets.SystemRandom()
    candidates = [(m.mine.id, sc.id, pid) for m in mines for sc in library.values()
                  for pid in sites(m, sc)]
    if not candidates:
        raise ValueError("no scenario fits any point of these mines")
    mine, scenario, point = rng.choice(candidates)
    start = earliest + rng.uniform(0, window_s)
    return Plan(mine=mine, scenario=scenario, point=point, start_at=round(start, 3),
                drawn_at=round(time.time(), 3), window=(earliest, earliest + window_s),
                candidates=len(candidates), nonce=secrets.token_hex(32))


def canonical(plan: Plan) -> bytes:
    return json.dumps(plan.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def commitment(plan: Plan) -> str:
    return hashlib.sha256(canonical(plan)).hexdigest()


def verify(plan_text: str, expected: str) -> bool:
    """Does the revealed plan (file contents) match the published commitment?"""
    try:
        plan = Plan.model_validate_json(plan_text)
    except ValueError:
        return False
    return secrets.compare_digest(commitment(plan), expected.strip().lower())


# --- signals --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drive:
    """One channel's drill signal: ``curve(t)`` for t seconds after the drill starts."""

    point: str
    curve: Callable[[float], float]
    fault_after_s: float | None = None


def _shape(sc: Scenario, base: float) -> Callable[[float], float]:
    """The site's noiseless signal."""
    if sc.kind == "outburst":
        rise = max(sc.rise_s, 0.1)

        def outburst(t: float) -> float:
            if t <= 0:
                return base
            if t < rise:
                return base + (sc.peak - base) * t / rise
            if t < rise + sc.hold_s:
                return sc.peak
            return max(base, sc.peak - (sc.peak - base) * (t - rise - sc.hold_s) / 30.0)
        return outburst
    if sc.rate_per_min <= 0:  # a fan stop or a communication loss without a rise
        return lambda t: base
    rate = sc.rate_per_min / 60.0
    return lambda t: base if t <= 0 else min(sc.peak, base + rate * t)


def drives(mine, sc: Scenario, point: str, baseline: Callable[[str], float],
           rng: random.Random | None = None) -> list[Drive]:
    """The signals for a scenario staged at ``point``: the site, its downstream sensors on the
    same airflow (lagged, diluted), and for a fan stop the heading's fans."""
    rng = rng or random.Random()
    site_base = baseline(point)
    shape = _shape(sc, site_base)

    def noisy(f: Callable[[float], float]) -> Callable[[float], float]:
        return (lambda t: max(0.0, f(t) + rng.gauss(0.0, sc.noise))) if sc.noise else f

    out = [Drive(point, noisy(shape), sc.fault_after_s)]
    if sc.propagate:
        down: dict[str, list] = {}
        for p in mine.points:
            if p.upstream:
                down.setdefault(p.upstream, []).append(p)
        frontier = [(point, 0.0, 1.0)]
        seen = {point}
        while frontier:
            src, lag, factor = frontier.pop()
            for p in down.get(src, []):
                if p.id in seen:
                    continue
                seen.add(p.id)
                lag2, f2 = lag + p.lag_s, factor * sc.dilution
                b = baseline(p.id)
                out.append(Drive(p.id, noisy(
                    lambda t, lag2=lag2, f2=f2, b=b: b + f2 * (shape(t - lag2) - site_base))))
                frontier.append((p.id, lag2, f2))
    if sc.kind == "fan_stop":
        area = mine.point_by_id[point].area
        for p in mine.points:
            if p.kind == "fan" and p.area == area:
                out.append(Drive(p.id, lambda t: 0.0 if t >= 0 else 1.0))
    return out


def crossing_s(sc: Scenario, base: float, level: float) -> float | None:
    """Seconds after the start at which the site's noiseless signal reaches ``level``."""
    if level <= base:
        return 0.0
    if sc.kind == "outburst":
        return max(sc.rise_s, 0.1) * (level - base) / (sc.peak - base) if sc.peak >= level \
            else None
    if sc.rate_per_min <= 0 or sc.peak < level:
        return None
    return (level - base) / (sc.rate_per_min / 60.0)


@dataclass(frozen=True)
class Mark:
    """One scored step: measured seconds (None = did not happen) against its limit."""

    step: str
    title: str
    at: float | None
    seconds: float | None
    limit_s: float
    basis: str

    @property
    def passed(self) -> bool:
        return self.seconds is not None and self.seconds <= self.limit_s


def score(started_at: float, expected_detect_s: float, poll_s: float, cut_deadline_s: float,
          incident: dict | None, alarms: list[dict], expect: list[str]) -> list[Mark]:
    """Each step's time against DOMAIN.md and the mine's plan.

    ``incident`` is the drill's incident (alarms/incidents.py ``Incident.to_dict()``, epoch
    times) or None; ``alarms`` are the drill's alarm records (dicts with kind, raised_at).
    Detection counts from when the signal reached the limit at the sensor, with one poll
    period of allowance per AQ 6201-2019 polling (2 × poll)."""
    marks: list[Mark] = []
    for kind in expect:
        times = [a["raised_at"] for a in alarms if a["kind"] == kind]
        first = min(times) if times else None
        marks.append(Mark(f"alarm:{kind}", f"报警 {kind}", first,
                          None if first is None else first - started_at,
                          expected_detect_s + 2 * poll_s + cut_deadline_s,
                          "信号到达限值 + 2 个巡检周期 + 断电时限"))
    if incident is None:
        return marks
    t0 = incident["opened_at"]
    marks.append(Mark("detected", "检测到超限（事件开启）", t0, t0 - started_at,
                      expected_detect_s + 2 * poll_s, "信号到达断电浓度 + 2 个巡检周期"))
    steps = {s["name"]: s for s in incident["steps"]}

    def rel(name: str) -> tuple[float | None, float | None]:
        st = steps.get(name)
        done = st.get("done_at") if st else None
        return done, (None if done is None else done - t0)

    for name, title, limit, basis in (
            ("power_cut", "断电指令下发", cut_deadline_s, "AQ 6201-2019: 超限至断电 ≤ 2 s"),
            ("power_verified", "馈电确认断电", cut_deadline_s + 2 * poll_s,
             "断电时限 + 2 个巡检周期"),
            ("evacuation_order", "下达撤人指令", cut_deadline_s, "与断电同时下达")):
        at, sec = rel(name)
        marks.append(Mark(name, title, at, sec, limit, basis))
    for st in incident["steps"]:
        if st["name"].startswith(("evacuate:", "report:")) and st.get("deadline"):
            at, sec = rel(st["name"])
            marks.append(Mark(st["name"], st["title"], at, sec, st["deadline"] - t0,
                              "应急预案时限"))
    return marks
