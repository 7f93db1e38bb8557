"""Alarm and command records: what the engine's workflows produce and the store keeps."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

AlarmState = Literal["unack_active", "ack_active", "unack_rtn", "cleared", "shelved"]
CommandResult = Literal["pending", "sent", "verified", "unverified", "failed", "refused"]


@dataclass
class AlarmRecord:
    id: str
    point_id: str
    kind: str
    severity: int  # 1 critical, 2 high, 3 medium
    state: AlarmState
    raised_at: float
    value: float
    message: str
    cleared_at: float | None = None  # returned to normal
    acked_at: float | None = None
    acked_by: str | None = None
    drill: bool = False
    updated_at: float = 0.0
    # ISA-18.2 annunciation controls, orthogonal to ``state`` (which keeps tracking the
    # condition and the acknowledgement while the alarm is hidden). Defaults keep records stored
    # before these fields existed loadable.
    shelved: bool = False
    shelved_by: str | None = None
    shelved_at: float | None = None
    shelved_until: float | None = None  # shelving is always time-limited
    shelve_reason: str | None = None
    out_of_service: bool = False  # its point is out of service (maintenance): recorded only
    suppressed: bool = False  # suppressed by design while a root alarm is active
    suppressed_by: str | None = None  # the root alarm's id
    comments: list[dict] = field(default_factory=list)  # {"at", "user", "text"}, append-only

    @property
    def active(self) -> bool:
        return self.state in ("unack_active", "ack_active")

    @property
    def annunciated(self) -> bool:
        """Shown and sounded to the operator: not shelved, out of service or suppressed."""
        return not (self.shelved or self.out_of_service or self.suppressed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlarmRecord:
        """From a stored record: unknown keys ignored, a null value (NaN stored) back to NaN."""
        known = {f.name for f in fields(cls)}
        rec = {k: v for k, v in d.items() if k in known}
        if rec.get("value") is None:
            rec["value"] = math.nan
        for flag in ("shelved", "out_of_service", "suppressed"):
            if rec.get(flag) is None:
                rec.pop(flag, None)
        rec["comments"] = [dict(c) for c in rec.get("comments") or []]
        return cls(**rec)


@dataclass
class Shelf:
    """An operator's shelving of one alarm (point + kind): by whom, why, until when.

    It outlives the record it was made on, so a chattering alarm that clears and raises again
    stays shelved until the shelf expires or is taken off.
    """

    point_id: str
    kind: str
    by: str
    reason: str
    at: float
    until: float
    alarm_id: str | None = None  # the alarm it was made on

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shelf:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class OutOfService:
    """A point taken out of service (e.g. maintenance): its alarms are recorded, not annunciated."""

    point_id: str
    by: str
    reason: str
    at: float
    until: float | None = None  # planned end; None = until returned to service by hand
    ended_at: float | None = None  # set on the entry returned by return_to_service
    ended_by: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutOfService:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class CommandRecord:
    id: str
    action: Literal["cut", "restore"]
    target: str  # relay id
    area: str
    reason: str
    issued_by: str  # "engine" or a user name
    issued_at: float
    alarm_id: str | None = None
    detected_perf: float | None = None  # perf_counter when the causing reading was received
    sent_at: float | None = None
    sent_latency_ms: float | None = None  # reading received → coil write sent
    verified_at: float | None = None
    result: CommandResult = "pending"
    detail: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("detected_perf")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CommandRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class IncidentRecord:
    """An incident (a workflow run: power cut → evacuation → report chain → restore → close)
    as stored: indexed columns plus the whole incident as JSON in ``data`` (alarms/incidents.py
    owns its shape). Upserted by id on every change; the steps are also journaled."""

    id: str
    kind: str  # workflow definition, e.g. "gas_overlimit"
    state: Literal["open", "closed"]
    opened_at: float
    updated_at: float
    drill: bool = False
    data: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IncidentRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class DeadLetter:
    """Input that was refused at the border, kept with the reason (never silently dropped)."""

    key: str  # unique: a replayed spool op is stored once
    at: float
    source: str  # e.g. the MQTT topic
    reason: str  # short code: oversized, json, shape, topic, unknown_point, unit, …
    detail: str
    payload: str  # the raw input (truncated), for the gateway's owner to see what they sent
