"""The mine configuration: substations, points, relays, areas and the roadway network.

One TOML file describes a mine; it is validated once at start so a mistake is reported with
its place in the file instead of surfacing as a wrong alarm later. Regulation thresholds come
from ``thresholds.toml`` (seeded from DOMAIN.md); a point may override them, never the code.
"""

from __future__ import annotations

import math
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alarms.integrity import DEFAULT_INTEGRITY, IntegrityParams
from alarms.noise import NoiseParams
from alarms.trend import DEFAULT_TREND, TrendParams, WindowParams

PACKAGE_DIR = Path(__file__).parent
SAMPLE_MINE = PACKAGE_DIR / "sample_mine.toml"
DEFAULT_THRESHOLDS = PACKAGE_DIR / "thresholds.toml"

SensorKind = Literal["ch4", "co", "o2", "co2", "wind", "temp", "smoke", "fan", "feed"]
SWITCH_KINDS = frozenset({"smoke", "fan", "feed"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- regulation table ---------------------------------------------------------------------


class MethaneLimits(_Strict):
    """One row of the methane table: alarm / power-cut / restore concentration (%CH4)."""

    name: str
    alarm: float
    cut: float | None = None
    restore: float | None = None
    cut_range: str = ""


class SensorLimits(_Strict):
    """Limits and wire encoding for one sensor kind; lo/hi are alarm limits, None = no limit."""

    name: str
    unit: str
    scale: float = Field(gt=0, description="register value = round(value * scale)")
    range_lo: float
    range_hi: float
    alarm_hi: float | None = None
    alarm_lo: float | None = None
    deadband: float = 0.0


class WindLimits(_Strict):
    name: str
    lo: float
    hi: float


class Timing(_Strict):
    """Timing limits from AQ 6201-2019; values in seconds unless named otherwise."""

    max_poll_s: float = 30.0
    cut_deadline_s: float = 2.0
    stale_polls: int = Field(2, ge=1)
    cut_verify_s: float = 2.0


class Thresholds(_Strict):
    """Everything the alarm rules read, from one TOML file (``thresholds.toml``).

    The trend, integrity and noise sections are engineering choices rather than regulation
    values (marked (?) in the file); a kind missing from them keeps the rule off.
    """

    methane: dict[str, MethaneLimits]
    sensors: dict[str, SensorLimits]
    wind: dict[str, WindLimits]
    timing: Timing = Timing()
    window: WindowParams = WindowParams()
    trend: dict[str, TrendParams] = Field(default_factory=lambda: dict(DEFAULT_TREND))
    integrity: dict[str, IntegrityParams] = Field(
        default_factory=lambda: dict(DEFAULT_INTEGRITY))
    noise: NoiseParams = NoiseParams()

    @classmethod
    def load(cls, path: Path = DEFAULT_THRESHOLDS) -> Thresholds:
        return cls.model_validate(_read_toml(path))


# --- the mine --------------------------------------------------------------------------------


class MineInfo(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    name: str
    outburst: bool = False


class Area(_Strict):
    id: str
    name: str
    downwind: list[str] = Field(default_factory=list, description="areas on the same return air")


class Roadway(_Strict):
    """A roadway drawn as a polyline; air flows from the first vertex to the last."""

    id: str
    name: str
    kind: Literal["intake", "return", "face", "heading", "main_intake", "main_return", "other"]
    area: str | None = None
    path: list[tuple[float, float]] = Field(min_length=2)


class Substation(_Strict):
    id: str
    name: str
    protocol: Literal["modbus", "mqtt"] = "modbus"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 = simulated, port chosen at start")
    device_id: int = Field(1, ge=1, le=247)
    poll_ms: int = Field(500, ge=50)
    location: str = ""


class Relay(_Strict):
    id: str
    name: str
    substation: str
    coil: int = Field(ge=0)
    area: str
    feed: str | None = Field(None, description="feed (馈电) point that confirms power is off")


class Point(_Strict):
    id: str = Field(pattern=r"^[0-9]{3}[A-Z][0-9]{2}$")
    name: str
    substation: str
    channel: int = Field(ge=0, le=255)
    kind: SensorKind
    location: str = Field("", description="location kind code from DOMAIN.md (methane, wind)")
    area: str
    roadway: str | None = None
    at: float = Field(0.5, ge=0.0, le=1.0, description="position along the roadway path")
    cut_areas: list[str] | None = Field(None, description="power-cut range; default: own area")
    alarm_hi: float | None = None
    alarm_lo: float | None = None
    cut: float | None = None
    restore: float | None = None
    deadband: float | None = None
    baseline: float | None = Field(None, description="simulator's normal value")
    upstream: str | None = Field(None, description="point of the same kind upstream on the "
                                 "same airflow (sensor-integrity cross-checks)")
    lag_s: float = Field(0.0, ge=0.0, description="air travel time from the upstream point")
    expects_noise: bool | None = Field(None, description="a sensor that normally varies, so a "
                                       "long flat line is suspect; default: methane points")

    @property
    def varies(self) -> bool:
        return self.kind == "ch4" if self.expects_noise is None else self.expects_noise


class ResolvedLimits(_Strict):
    """Effective limits for one point after applying the regulation table and overrides."""

    alarm_hi: float = math.nan
    alarm_lo: float = math.nan
    cut: float = math.nan
    restore: float = math.nan
    deadband: float = 0.0
    range_lo: float = -math.inf
    range_hi: float = math.inf


class Mine(_Strict):
    mine: MineInfo
    areas: list[Area]
    roadways: list[Roadway] = Field(default_factory=list)
    substations: list[Substation] = Field(min_length=1)
    relays: list[Relay] = Field(default_factory=list)
    points: list[Point] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid", frozen=True, ignored_types=(cached_property,))

    @model_validator(mode="after")
    def _references(self) -> Mine:
        errors: list[str] = []
        area_ids = _unique("area", [a.id for a in self.areas], errors)
        road_ids = _unique("roadway", [r.id for r in self.roadways], errors)
        sub_ids = _unique("substation", [s.id for s in self.substations], errors)
        point_ids = _unique("point", [p.id for p in self.points], errors)
        _unique("relay", [r.id for r in self.relays], errors)
        for a in self.areas:
            errors += [f"area {a.id}: unknown downwind area {d}" for d in a.downwind
                       if d not in area_ids]
        for r in self.roadways:
            if r.area and r.area not in area_ids:
                errors.append(f"roadway {r.id}: unknown area {r.area}")
        channels: set[tuple[str, int]] = set()
        for p in self.points:
            where = f"point {p.id}"
            if p.substation not in sub_ids:
                errors.append(f"{where}: unknown substation {p.substation}")
            if (p.substation, p.channel) in channels:
                errors.append(f"{where}: channel {p.channel} of {p.substation} used twice")
            channels.add((p.substation, p.channel))
            if p.area not in area_ids:
                errors.append(f"{where}: unknown area {p.area}")
            if p.roadway and p.roadway not in road_ids:
                errors.append(f"{where}: unknown roadway {p.roadway}")
            errors += [f"{where}: unknown cut area {a}" for a in p.cut_areas or []
                       if a not in area_ids]
        kind_of = {p.id: p.kind for p in self.points}
        for p in self.points:
            if p.upstream is None:
                continue
            if p.upstream not in kind_of:
                errors.append(f"point {p.id}: unknown upstream point {p.upstream}")
            elif kind_of[p.upstream] != p.kind or p.upstream == p.id:
                errors.append(f"point {p.id}: upstream {p.upstream} must be another "
                              f"{p.kind} point")
        coils: set[tuple[str, int]] = set()
        for r in self.relays:
            where = f"relay {r.id}"
            if r.substation not in sub_ids:
                errors.append(f"{where}: unknown substation {r.substation}")
            if (r.substation, r.coil) in coils:
                errors.append(f"{where}: coil {r.coil} of {r.substation} used twice")
            coils.add((r.substation, r.coil))
            if r.area not in area_ids:
                errors.append(f"{where}: unknown area {r.area}")
            if r.feed is not None and r.feed not in point_ids:
                errors.append(f"{where}: unknown feed point {r.feed}")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    @classmethod
    def load(cls, path: Path = SAMPLE_MINE) -> Mine:
        try:
            return cls.model_validate(_read_toml(path))
        except ValidationError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    # Lookups used on every event: computed once, the model is frozen.
    @cached_property
    def point_by_id(self) -> dict[str, Point]:
        return {p.id: p for p in self.points}

    @cached_property
    def relay_by_id(self) -> dict[str, Relay]:
        return {r.id: r for r in self.relays}

    @cached_property
    def substation_by_id(self) -> dict[str, Substation]:
        return {s.id: s for s in self.substations}

    @cached_property
    def area_by_id(self) -> dict[str, Area]:
        return {a.id: a for a in self.areas}

    def points_of(self, substation_id: str) -> list[Point]:
        return sorted((p for p in self.points if p.substation == substation_id),
                      key=lambda p: p.channel)

    def relays_of(self, substation_id: str) -> list[Relay]:
        return sorted((r for r in self.relays if r.substation == substation_id),
                      key=lambda r: r.coil)

    def cut_relays(self, point: Point) -> list[Relay]:
        """Relays opened when ``point`` reaches its power-cut limit (its 断电范围)."""
        areas = set(point.cut_areas or [point.area])
        return [r for r in self.relays if r.area in areas]

    def validate_against(self, limits: Thresholds) -> None:
        """Every point must resolve to known limits; raise ConfigError naming the bad ones."""
        errors = []
        for p in self.points:
            try:
                resolve_limits(p, limits)
            except ConfigError as exc:
                errors.append(str(exc))
        if errors:
            raise ConfigError("; ".join(errors))


class ConfigError(ValueError):
    """The mine or threshold configuration is invalid; the message names what and where."""


def resolve_limits(point: Point, limits: Thresholds) -> ResolvedLimits:
    """Effective limits: point override, else the regulation table for its location, else kind."""
    sensor = limits.sensors.get(point.kind)
    if sensor is None:
        raise ConfigError(f"point {point.id}: no sensor limits for kind {point.kind}")
    alarm_hi, alarm_lo = sensor.alarm_hi, sensor.alarm_lo
    cut = restore = None
    if point.kind == "ch4":
        row = limits.methane.get(point.location)
        if row is None:
            raise ConfigError(f"point {point.id}: unknown methane location '{point.location}'")
        alarm_hi, cut, restore = row.alarm, row.cut, row.restore
    elif point.kind == "wind" and point.location:
        wind = limits.wind.get(point.location)
        if wind is None:
            raise ConfigError(f"point {point.id}: unknown wind location '{point.location}'")
        alarm_lo, alarm_hi = wind.lo, wind.hi

    def pick(override: float | None, default: float | None) -> float:
        value = override if override is not None else default
        return math.nan if value is None else float(value)

    resolved_cut = pick(point.cut, cut)
    resolved_restore = pick(point.restore, restore)
    if not math.isnan(resolved_cut) and math.isnan(resolved_restore):
        resolved_restore = resolved_cut
    return ResolvedLimits(
        alarm_hi=pick(point.alarm_hi, alarm_hi),
        alarm_lo=pick(point.alarm_lo, alarm_lo),
        cut=resolved_cut,
        restore=resolved_restore,
        deadband=point.deadband if point.deadband is not None else sensor.deadband,
        range_lo=sensor.range_lo,
        range_hi=sensor.range_hi,
    )


def _unique(what: str, ids: list[str], errors: list[str]) -> set[str]:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            errors.append(f"duplicate {what} id {i}")
        seen.add(i)
    return seen


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
