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

    @property
    def active(self) -> bool:
        return self.state in ("unack_active", "ack_active")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlarmRecord:
        """From a stored record: unknown keys ignored, a null value (NaN stored) back to NaN."""
        known = {f.name for f in fields(cls)}
        rec = {k: v for k, v in d.items() if k in known}
        if rec.get("value") is None:
            rec["value"] = math.nan
        return cls(**rec)


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
class DeadLetter:
    """Input that was refused at the border, kept with the reason (never silently dropped)."""

    key: str  # unique: a replayed spool op is stored once
    at: float
    source: str  # e.g. the MQTT topic
    reason: str  # short code: oversized, json, shape, topic, unknown_point, unit, …
    detail: str
    payload: str  # the raw input (truncated), for the gateway's owner to see what they sent
