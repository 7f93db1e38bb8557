"""MQTT data messages: validation at the border, one bad reading never costs the others.

A gateway publishes one JSON message per poll on ``mw/{mine}/{substation}/data``::

    {"mine": "demo", "substation": "S04", "seq": 17, "sent_at": 1790000000.25,
     "readings": [{"point": "004A01", "ts": 1790000000.2, "value": 0.31, "quality": "ok",
                   "unit": "%"}, ...]}

``quality`` is one of ok | fault | calibrating (default ok); ``unit`` is optional but, when
given, must be the point's configured unit (a ppm/% mix-up is rejected, never rescaled);
``value`` null means no value (stored as a fault). Whole-message problems (oversized, not
strict JSON, NaN/Infinity literals, wrong shape, topic/body mismatch) reject the message;
per-reading problems (unknown point, another substation's point, unit mismatch, timestamp
outside the accepted window, bad field) reject only that reading. Every rejection carries a
reason for the dead-letter table.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from minewatch.readings import Quality

MAX_MESSAGE_BYTES = 256 * 1024
MAX_READINGS = 5000
FUTURE_SKEW_S = 300.0  # a source clock this far ahead of the server is rejected
PAST_WINDOW_S = 7 * 86400.0  # older readings (a very stale spool) are rejected


class ReadingIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    point: str = Field(min_length=1, max_length=32)
    ts: float
    value: float | None
    quality: Literal["ok", "fault", "calibrating"] = "ok"
    unit: str | None = Field(None, max_length=16)


class DataMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mine: str = Field(min_length=1, max_length=32)
    substation: str = Field(min_length=1, max_length=32)
    seq: int = Field(ge=0)
    sent_at: float
    readings: list[Any] = Field(max_length=MAX_READINGS)


_READING = TypeAdapter(ReadingIn)
_QUALITY = {"ok": Quality.OK, "fault": Quality.FAULT, "calibrating": Quality.CALIBRATING}


@dataclass(frozen=True)
class PointInfo:
    slot: int
    substation: str
    unit: str
    range_lo: float
    range_hi: float


@dataclass
class Reject:
    reason: str  # short code: oversized, json, shape, topic, unknown_point, foreign_point, …
    detail: str
    item: Any = None  # the offending reading (or None for the whole message)


@dataclass
class Parsed:
    mine: str | None = None
    substation: str | None = None
    seq: int | None = None
    slots: list[int] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return (np.asarray(self.slots, dtype=np.int64), np.asarray(self.ts, dtype=np.float64),
                np.asarray(self.values, dtype=np.float64),
                np.asarray(self.quality, dtype=np.int8))


def _no_constants(name: str) -> float:
    raise ValueError(f"non-finite number {name} is not allowed")


def parse_data(topic: str, payload: bytes, points: dict[str, PointInfo], mine_id: str,
               now: float) -> Parsed:
    """Validate one data message against the mine's points; never raises on bad input."""
    out = Parsed()
    if len(payload) > MAX_MESSAGE_BYTES:
        out.rejects.append(Reject("oversized", f"{len(payload)} bytes > {MAX_MESSAGE_BYTES}"))
        return out
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "mw" or parts[3] != "data":
        out.rejects.append(Reject("topic", f"not a data topic: {topic!r}"))
        return out
    try:
        body = json.loads(payload, parse_constant=_no_constants)
        msg = DataMessage.model_validate(body)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, ValidationError
        reason = "shape" if isinstance(exc, ValidationError) else "json"
        out.rejects.append(Reject(reason, _short(exc)))
        return out
    if (msg.mine, msg.substation) != (parts[1], parts[2]) or msg.mine != mine_id:
        out.rejects.append(Reject(
            "topic", f"body says {msg.mine}/{msg.substation}, topic {parts[1]}/{parts[2]}, "
                     f"this engine serves mine {mine_id}"))
        return out
    out.mine, out.substation, out.seq = msg.mine, msg.substation, msg.seq
    for raw in msg.readings:
        try:
            r = _READING.validate_python(raw)
        except ValidationError as exc:
            out.rejects.append(Reject("reading", _short(exc), raw))
            continue
        info = points.get(r.point)
        if info is None:
            out.rejects.append(Reject("unknown_point", f"no point {r.point!r} in mine "
                                                        f"{mine_id}", raw))
            continue
        if info.substation != msg.substation:
            out.rejects.append(Reject("foreign_point", f"point {r.point} belongs to substation "
                                                        f"{info.substation}, not "
                                                        f"{msg.substation}", raw))
            continue
        if r.unit is not None and r.unit != info.unit:
            out.rejects.append(Reject("unit", f"point {r.point} is in {info.unit!r}, "
                                               f"message says {r.unit!r}", raw))
            continue
        if r.ts > now + FUTURE_SKEW_S or r.ts < now - PAST_WINDOW_S:
            out.rejects.append(Reject("timestamp", f"ts {r.ts} outside [now-{PAST_WINDOW_S:g}s,"
                                                    f" now+{FUTURE_SKEW_S:g}s]", raw))
            continue
        q = _QUALITY[r.quality]
        value = math.nan if r.value is None else r.value
        if r.value is None and q == Quality.OK:
            q = Quality.FAULT
        elif q == Quality.OK and not (info.range_lo <= value <= info.range_hi):
            q = Quality.OUT_OF_RANGE
        out.slots.append(info.slot)
        out.ts.append(r.ts)
        out.values.append(value)
        out.quality.append(int(q))
    return out


def _short(exc: Exception) -> str:
    text = str(exc).replace("\n", "; ")
    return text[:300]
