"""Emergency configuration: workflow definitions, duty roster, notification endpoints and the
personnel feed, from one TOML file (``emergency.toml``), validated at start."""

from __future__ import annotations

import tomllib
from datetime import datetime
from datetime import time as dtime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from minewatch.mine import PACKAGE_DIR

DEFAULT_EMERGENCY = PACKAGE_DIR / "emergency.toml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportLevel(_Strict):
    level: str = Field(pattern=r"^[a-z_]{1,32}$")
    title: str
    deadline_s: float = Field(gt=0, description="from the incident's opening")


class WorkflowDef(_Strict):
    name: str
    trigger_sensor: str
    trigger_alarms: list[str] = Field(min_length=1)
    group_alarms: bool = True
    cut_verify_s: float = Field(2.0, gt=0)
    cut_retries: int = Field(1, ge=0, le=3)
    evacuate_downwind: bool = True
    evacuation_confirm_s: float = Field(900.0, gt=0)
    discharge: bool = True
    report: list[ReportLevel] = Field(min_length=1)


class Shift(_Strict):
    shift: str
    start: dtime
    end: dtime
    shift_leader: str
    dispatch: str
    mine_leader: str

    def covers(self, t: dtime) -> bool:
        if self.start <= self.end and self.end != dtime(0):
            return self.start <= t < self.end
        return t >= self.start or t < self.end  # over midnight (or ending at 00:00)


class Endpoint(_Strict):
    target: str = "*"
    kind: Literal["log", "webhook"] = "log"
    url: str | None = None

    @model_validator(mode="after")
    def _url(self) -> Endpoint:
        if self.kind == "webhook" and not self.url:
            raise ValueError("a webhook endpoint needs a url")
        return self


class Personnel(_Strict):
    simulated: bool = False
    exit_per_s: float = Field(0.5, gt=0)
    people: dict[str, int] = Field(default_factory=dict)


class Emergency(_Strict):
    workflows: dict[str, WorkflowDef]
    roster: list[Shift] = Field(default_factory=list)
    contacts: dict[str, str] = Field(default_factory=dict)
    notify: list[Endpoint] = Field(default_factory=lambda: [Endpoint()])
    personnel: Personnel = Personnel()

    @classmethod
    def load(cls, path: Path = DEFAULT_EMERGENCY) -> Emergency:
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))

    def on_duty(self, level: str, at: float) -> str:
        """Who receives a report level at ``at`` (local time): roster, else fixed contacts."""
        t = datetime.fromtimestamp(at).time()
        for shift in self.roster:
            if shift.covers(t) and level in Shift.model_fields:
                return str(getattr(shift, level))
        return self.contacts.get(level, "")

    def shift_at(self, at: float) -> Shift | None:
        t = datetime.fromtimestamp(at).time()
        return next((s for s in self.roster if s.covers(t)), None)

    def endpoints(self, target: str) -> list[Endpoint]:
        """Endpoints for ``area:<id>`` / ``level:<level>``; the ``*`` ones when none match."""
        exact = [e for e in self.notify if e.target == target]
        return exact or [e for e in self.notify if e.target == "*"]
